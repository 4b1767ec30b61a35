"""The task tokenizer (lossless, one-token <backtrack>, BOS) and add_backtrack_token on a foreign BPE tokenizer."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from backtrack_trl.tasks.countdown.format import (
    BACKTRACK_TOKEN,
    GOAL_MARKER,
    Problem,
    Step,
    format_backtrack_response,
    format_prompt,
    format_response,
)
from backtrack_trl.training.tokenizers import (
    add_backtrack_token,
    build_countdown_tokenizer,
    require_backtrack_token,
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


def _bpe_tokenizer(special_tokens=("<|begin_of_text|>", "<|end_of_text|>")):
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([format_prompt(PROBLEM) + format_response(SOLUTION)] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )


def _tiny_llama(vocab_size, tie):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config)


def test_require_backtrack_token_names_the_fix():
    bpe = _bpe_tokenizer()
    with pytest.raises(ValueError, match="no <backtrack> token.*add_backtrack_token"):
        require_backtrack_token(bpe)


@pytest.mark.parametrize("tie", [False, True])
def test_add_backtrack_token_resizes_with_mean_rows(tie):
    tokenizer = _bpe_tokenizer()
    old_size = len(tokenizer)
    assert len(tokenizer("a<backtrack>b", add_special_tokens=False)["input_ids"]) > 3  # split before adding
    model = _tiny_llama(old_size, tie)
    old_input = model.get_input_embeddings().weight.detach().clone()
    old_output = model.get_output_embeddings().weight.detach().clone()

    backtrack_id = add_backtrack_token(tokenizer, model)

    # <backtrack> and a new <pad> (no reserved pad token in this vocabulary, and EOS is not reused).
    assert len(tokenizer) == old_size + 2
    assert tokenizer.convert_ids_to_tokens(backtrack_id) == BACKTRACK_TOKEN
    assert BACKTRACK_TOKEN in tokenizer.all_special_tokens
    assert tokenizer("a<backtrack>b", add_special_tokens=False)["input_ids"][1] == backtrack_id
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id

    new_input = model.get_input_embeddings().weight
    new_output = model.get_output_embeddings().weight
    assert new_input.shape[0] == new_output.shape[0] == len(tokenizer)
    assert torch.equal(new_input[:old_size], old_input)
    assert torch.allclose(new_input[old_size:], old_input.mean(0).expand(2, -1))
    if tie:
        assert new_output.data_ptr() == new_input.data_ptr()
    else:
        assert torch.equal(new_output[:old_size], old_output)
        assert torch.allclose(new_output[old_size:], old_output.mean(0).expand(2, -1))
    # The model still runs on the new ids.
    logits = model(torch.tensor([[backtrack_id, tokenizer.pad_token_id]])).logits
    assert logits.shape == (1, 2, len(tokenizer))

    # Idempotent: nothing changes on a second call.
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert add_backtrack_token(tokenizer, model) == backtrack_id
    assert len(tokenizer) == old_size + 2
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())


def test_add_backtrack_token_prefers_reserved_llama3_pad(tmp_path):
    tokenizer = _bpe_tokenizer(("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"))
    old_size = len(tokenizer)
    backtrack_id = add_backtrack_token(tokenizer)
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"
    assert len(tokenizer) == old_size + 1 and backtrack_id == old_size
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert require_backtrack_token(reloaded) == backtrack_id
    assert reloaded.pad_token == "<|finetune_right_pad_id|>"


def test_add_backtrack_token_on_task_tokenizer_is_a_no_op(tokenizer):
    size = len(tokenizer)
    assert add_backtrack_token(tokenizer) == require_backtrack_token(tokenizer)
    assert len(tokenizer) == size and tokenizer.pad_token == "<pad>"
