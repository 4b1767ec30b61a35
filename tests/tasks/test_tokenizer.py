"""The task tokenizer: lossless, one token per template phrase, one-token <backtrack>, BOS; the token lookups."""

import pytest
from transformers import AutoTokenizer

from backtrack_trl.tasks.countdown.format import (
    BACKTRACK_TOKEN,
    GOAL_MARKER,
    Problem,
    Step,
    format_backtrack_response,
    format_prompt,
    format_response,
)
from backtrack_trl.tasks.tokenizer import (
    build_countdown_tokenizer,
    build_task_tokenizer,
    require_backtrack_token,
    single_token_id,
    task_vocab,
    template_phrases,
)


PROBLEM = Problem((2, 39, 45, 10), 62)
SOLUTION = [Step(45, "-", 39, 6), Step(10, "*", 6, 60), Step(60, "+", 2, 62)]
TEXTS = [
    format_prompt(PROBLEM),
    format_response(SOLUTION),
    format_backtrack_response(SOLUTION[:1], Step(39, "+", 6, 45)),
    format_prompt(Problem((1, 99, 7), 100)) + format_response([Step(99, "+", 1, 100)]),
    "".join(chr(i) for i in range(32, 127)) + "\n\t",  # every printable ASCII character
    "Goal Reached!Goal Reached! numbers ->target###Response:###Question:",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_countdown_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_lossless_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids


@pytest.mark.parametrize("text", TEXTS)
def test_number_tokenizer_round_trips_and_chunks_numbers_like_llama3(text):
    numbers = build_countdown_tokenizer(numbers=True)
    ids = numbers(text, add_special_tokens=False)["input_ids"]
    assert numbers.decode(ids) == text and numbers.unk_token_id not in ids
    # Runs of digits become chunks of at most 3 digits from the left, as Llama-3's \p{N}{1,3} splits them.
    tokens = numbers.convert_ids_to_tokens(
        numbers("45-39=6\n1234+5=1239<backtrack>", add_special_tokens=False)["input_ids"]
    )
    assert tokens == ["45", "-", "39", "=", "6", "\n", "123", "4", "+", "5", "=", "123", "9", "<backtrack>"]
    assert len(numbers) == len(build_countdown_tokenizer()) + 1100  # "00".."99" and "000".."999"


def test_prompt_tokens_bos_and_template_phrases(tokenizer):
    prompt = format_prompt(PROBLEM)
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:4] == ["<s>", "###Question:", " numbers", " "]
    assert tokens[-3:] == ["\n", "###Response:", "\n"]
    # Digits are single characters, so "39" is two tokens.
    assert tokens[5:9] == ["2", ",", " ", "3"]
    for phrase in template_phrases("countdown"):
        assert len(tokenizer(phrase, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.convert_ids_to_tokens(tokenizer(GOAL_MARKER, add_special_tokens=False)["input_ids"]) == [
        GOAL_MARKER
    ]


def test_special_tokens_contract(tokenizer):
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert BACKTRACK_TOKEN in tokenizer.all_special_tokens
    backtrack_id = require_backtrack_token(tokenizer)
    ids = tokenizer(format_backtrack_response(SOLUTION[:1], Step(39, "+", 6, 45)), add_special_tokens=False)[
        "input_ids"
    ]
    assert ids[-1] == backtrack_id and ids.count(backtrack_id) == 1
    # The documented pitfall: skip_special_tokens drops <backtrack>, so decoders must not use it.
    assert BACKTRACK_TOKEN not in tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer.decode(ids + [tokenizer.eos_token_id]).endswith("<backtrack></s>")


def test_offsets_cover_the_text(tokenizer):
    text = format_prompt(PROBLEM) + format_response(SOLUTION)
    encoding = tokenizer(text, return_offsets_mapping=True)
    pieces = [text[start:end] for start, end in encoding["offset_mapping"][1:]]
    assert "".join(pieces) == text


def test_save_and_reload(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = format_prompt(PROBLEM) + format_backtrack_response(SOLUTION[:2], Step(60, "*", 2, 120))
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"][1:]) == text
    assert require_backtrack_token(reloaded) == require_backtrack_token(tokenizer)
    assert reloaded.pad_token_id == tokenizer.pad_token_id


def test_sudoku_tokenizer_keeps_its_own_phrase_and_the_vocab_order():
    sudoku = build_task_tokenizer("sudoku")
    assert template_phrases("sudoku") == ("###Question:", "###Response:", GOAL_MARKER, " sudoku")
    assert single_token_id(sudoku, " sudoku") == task_vocab("sudoku")[" sudoku"]
    assert single_token_id(sudoku, " numbers") is None  # a Countdown phrase: several characters here
    vocab = task_vocab("countdown")
    assert vocab["<pad>"] == 0 and vocab[BACKTRACK_TOKEN] == 4 and vocab["###Question:"] == 5
