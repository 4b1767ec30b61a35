"""BacktrackMaskingCollator: labels against hand-written expectations for a character tokenizer and a BPE one."""

import logging

import pytest
import torch
from _training_utils import (
    PROBLEM,
    backtrack_row,
    bpe_tokenizer,
    char_tokenizer,
    optimal_row,
    sample_rows,
    tiny_llama,
)

from backtrack_trl.tasks.countdown.format import Problem, Step
from backtrack_trl.training.collator import (
    BacktrackMaskingCollator,
    build_example,
    build_examples,
    check_columns,
    special_token_layout,
)


M = "MASKED"  # marker in the expected sequences below: this position has label -100
PROMPT = "###Question: numbers [3, 5, 7]->target 22\n###Response:\n"

# Rows for PROBLEM (3, 5, 7) -> 22: one optimal answer and one backtrack row per error type.
OPTIMAL = optimal_row(PROBLEM, [Step(7, "*", 3, 21), Step(21, "+", 5, 26)])
EXPLORATION = backtrack_row(PROBLEM, [Step(7, "*", 3, 21)], Step(21, "-", 5, 16), "exploration")
COMPUTATIONAL = backtrack_row(PROBLEM, [Step(7, "*", 3, 21)], Step(21, "+", 5, 27), "computational")
RULE_VIOLATION = backtrack_row(PROBLEM, [], Step(7, "+", 9, 16), "rule_violation")


@pytest.fixture(scope="module")
def char():
    return char_tokenizer()


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer()


def as_pairs(tokenizer, example):
    """[(token string, trained?)] for an example, for readable comparisons."""
    return [
        (tokenizer.convert_ids_to_tokens(i), label != -100)
        for i, label in zip(example["input_ids"], example["labels"])
    ]


def expected(tokens_and_flags):
    """Hand-written expectation: list of (token, trained?) with M marking masked chunks of characters."""
    out = []
    for chunk, trained in tokens_and_flags:
        pieces = chunk if isinstance(chunk, list) else list(chunk)
        out += [(piece, trained) for piece in pieces]
    return out


def test_char_optimal_row(char):
    example = build_example(OPTIMAL, char)
    assert as_pairs(char, example) == expected(
        [(PROMPT, False), ("7*3=21\n21+5=26\nGoal Reached!", True), (["</s>"], True)]
    )
    # labels equal the ids wherever they are trained
    for i, label in zip(example["input_ids"], example["labels"]):
        assert label in (-100, i)


@pytest.mark.parametrize(
    "row, prefix, wrong",
    [
        (EXPLORATION, "7*3=21\n", "21-5=16\n"),
        (COMPUTATIONAL, "7*3=21\n", "21+5=27\n"),
        (RULE_VIOLATION, "", "7+9=16\n"),
    ],
    ids=["exploration", "computational", "rule_violation"],
)
def test_char_backtrack_rows(char, row, prefix, wrong):
    example = build_example(row, char)
    assert as_pairs(char, example) == expected(
        [(PROMPT, False), (prefix, True), (wrong, False), (["<backtrack>", "</s>"], True)]
    )


def test_char_no_mask_option_trains_wrong_step(char):
    example = build_example(EXPLORATION, char, mask_wrong_step=False)
    assert as_pairs(char, example) == expected(
        [(PROMPT, False), ("7*3=21\n21-5=16\n", True), (["<backtrack>", "</s>"], True)]
    )


def test_per_type_masking_trains_only_the_listed_error_types(char):
    examples = build_examples(
        [OPTIMAL, EXPLORATION, COMPUTATIONAL, RULE_VIOLATION], char, trained_error_types=["exploration"]
    )
    assert as_pairs(char, examples[0]) == as_pairs(char, build_example(OPTIMAL, char))
    # exploration: a legal step with right arithmetic (21-5=16 misses 22): trained, then <backtrack>
    assert as_pairs(char, examples[1]) == expected(
        [(PROMPT, False), ("7*3=21\n21-5=16\n", True), (["<backtrack>", "</s>"], True)]
    )
    # computational and rule violation stay masked: the model must not learn wrong arithmetic or ghost operands
    assert as_pairs(char, examples[2]) == expected(
        [(PROMPT, False), ("7*3=21\n", True), ("21+5=27\n", False), (["<backtrack>", "</s>"], True)]
    )
    assert as_pairs(char, examples[3]) == expected(
        [(PROMPT, False), ("7+9=16\n", False), (["<backtrack>", "</s>"], True)]
    )
    # mask_wrong_step=False still trains every wrong step
    unmasked = build_examples([COMPUTATIONAL], char, mask_wrong_step=False, trained_error_types=["exploration"])
    assert all(label != -100 for label in unmasked[0]["labels"][len(PROMPT) :])


def test_per_type_masking_errors(char):
    with pytest.raises(ValueError, match=r"unknown error type\(s\) \['typo'\]"):
        BacktrackMaskingCollator(char, trained_error_types=["typo"])
    row = {key: value for key, value in EXPLORATION.items() if key != "error_type"}
    with pytest.raises(ValueError, match="needs the `error_type` column"):
        BacktrackMaskingCollator(char, trained_error_types=["exploration"])([row])
    assert BacktrackMaskingCollator(char)([row])["labels"].ne(-100).any()  # not needed without the option


def test_bos_added_when_the_tokenizer_adds_it_and_post_processor_eos_dropped():
    tokenizer = char_tokenizer(bos=True, eos_suffix=True)
    assert special_token_layout(tokenizer) == ([tokenizer.bos_token_id], [tokenizer.eos_token_id])
    example = build_example(EXPLORATION, tokenizer)
    assert as_pairs(tokenizer, example) == expected(
        [(["<s>"], False), (PROMPT, False), ("7*3=21\n", True), ("21-5=16\n", False), (["<backtrack>", "</s>"], True)]
    )
    # The prompt ids are exactly what the decoder gets from tokenizer(prompt), minus the appended EOS.
    assert example["input_ids"][: len(PROMPT) + 1] == tokenizer(PROMPT)["input_ids"][:-1]


# --- BPE tokenizer whose merges cross line and segment edges -------------------------------------------------------

BPE_PROBLEM = Problem((13, 14, 2), 54)
BPE_PROMPT_TOKENS = ["<s>", "###Question: numbers [1", "3", ", 14", ", 2", "]->target 5", "4", "\n###Response:\n"]


def test_bpe_fixture_really_merges_across_edges(bpe):
    # Joint tokenization glues the prompt's last newline to the first digit of the answer and the prefix's last
    # newline to the first digit of the wrong step: a naive span computation would have to split those tokens.
    row = backtrack_row(BPE_PROBLEM, [Step(14, "+", 13, 27)], Step(27, "+", 2, 29), "exploration")
    joint = bpe.convert_ids_to_tokens(bpe(row["prompt"] + row["completion"])["input_ids"])
    assert "\n###Response:\n1" in joint
    assert joint[joint.index("7", 8) + 1] == "\n2"  # "...=27" then "\n2" straddles prefix | wrong step


def test_bpe_optimal_row(bpe):
    row = optimal_row(BPE_PROBLEM, [Step(14, "+", 13, 27), Step(27, "*", 2, 54)])
    assert as_pairs(bpe, build_example(row, bpe)) == expected(
        [
            (BPE_PROMPT_TOKENS, False),
            (["1", "4", "+1", "3", "=2", "7", "\n2", "7", "*2", "=5", "4\nGoal Reached!", "</s>"], True),
        ]
    )


@pytest.mark.parametrize(
    "wrong, error_type, wrong_tokens",
    [
        (Step(27, "+", 2, 29), "exploration", ["2", "7", "+2", "=2", "9", "\n"]),
        (Step(27, "*", 2, 55), "computational", ["2", "7", "*2", "=5", "5", "\n"]),
        (Step(27, "*", 3, 81), "rule_violation", ["2", "7", "*3", "=81", "\n"]),
    ],
)
def test_bpe_backtrack_rows(bpe, wrong, error_type, wrong_tokens):
    row = backtrack_row(BPE_PROBLEM, [Step(14, "+", 13, 27)], wrong, error_type)
    assert as_pairs(bpe, build_example(row, bpe)) == expected(
        [
            (BPE_PROMPT_TOKENS, False),
            (["1", "4", "+1", "3", "=2", "7", "\n"], True),
            (wrong_tokens, False),
            (["<backtrack>", "</s>"], True),
        ]
    )
    unmasked = build_example(row, bpe, mask_wrong_step=False)
    assert as_pairs(bpe, unmasked) == expected(
        [
            (BPE_PROMPT_TOKENS, False),
            (["1", "4", "+1", "3", "=2", "7", "\n"] + wrong_tokens, True),
            (["<backtrack>", "</s>"], True),
        ]
    )


def test_bpe_wrong_first_step(bpe):
    row = backtrack_row(BPE_PROBLEM, [], Step(14, "-", 2, 12), "exploration")
    assert as_pairs(bpe, build_example(row, bpe)) == expected(
        [(BPE_PROMPT_TOKENS, False), (["1", "4", "-2", "=1", "2", "\n"], False), (["<backtrack>", "</s>"], True)]
    )


def test_bpe_decodes_back_to_the_row(bpe):
    for row in sample_rows(6):
        ids = build_example(row, bpe)["input_ids"]
        assert bpe.decode(ids, skip_special_tokens=False) == "<s>" + row["prompt"] + row["completion"] + "</s>"


def test_batch_equals_one_by_one(bpe):
    rows = sample_rows(5)
    assert build_examples(rows, bpe) == [build_example(row, bpe) for row in rows]


# --- truncation ------------------------------------------------------------------------------------------------------


def test_truncation_inside_wrong_step_keeps_ids_and_labels_aligned(char):
    cut = len(PROMPT) + len("7*3=21\n") + 3  # prompt, prefix, "21-"
    example = build_example(EXPLORATION, char, max_length=cut)
    assert as_pairs(char, example) == expected([(PROMPT, False), ("7*3=21\n", True), ("21-", False)])
    collator = BacktrackMaskingCollator(char, max_length=cut)
    batch = collator([EXPLORATION, OPTIMAL])
    assert batch["input_ids"].shape == (2, cut)
    assert batch["labels"][0].tolist() == example["labels"]
    assert collator.num_truncated == 2 and collator.num_untrained == 0


def test_example_without_trained_token_is_counted_and_warned(char, caplog):
    collator = BacktrackMaskingCollator(char, max_length=10)
    with caplog.at_level(logging.WARNING, logger="backtrack_trl.training.collator"):
        batch = collator([OPTIMAL, EXPLORATION, COMPUTATIONAL])
    assert (batch["labels"] == -100).all()
    assert collator.num_untrained == 3 and collator.num_examples == 3
    assert "3 of 3 examples in this batch have no trained token" in caplog.text
    with pytest.raises(ValueError, match="no trained token"):
        BacktrackMaskingCollator(char, max_length=10, on_untrained="raise")([OPTIMAL])


# --- padding ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_sides(bpe, side):
    rows = [OPTIMAL, RULE_VIOLATION, EXPLORATION]
    examples = build_examples(rows, bpe)
    collator = BacktrackMaskingCollator(bpe, padding_side=side, pad_to_multiple_of=8)
    batch = collator(rows)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= max(len(ex["input_ids"]) for ex in examples)
    for i, example in enumerate(examples):
        n, pad = len(example["input_ids"]), width - len(example["input_ids"])
        real = slice(pad, width) if side == "left" else slice(0, n)
        padding = slice(0, pad) if side == "left" else slice(n, width)
        assert batch["input_ids"][i, real].tolist() == example["input_ids"]
        assert batch["labels"][i, real].tolist() == example["labels"]
        assert batch["attention_mask"][i, real].eq(1).all() and batch["attention_mask"][i, padding].eq(0).all()
        assert batch["input_ids"][i, padding].eq(bpe.pad_token_id).all()
        assert batch["labels"][i, padding].eq(-100).all()
        if side == "left":
            assert batch["position_ids"][i, real].tolist() == list(range(n))
    assert ("position_ids" in batch) == (side == "left")


def test_padding_side_defaults_to_the_tokenizer():
    tokenizer = char_tokenizer()
    tokenizer.padding_side = "left"
    batch = BacktrackMaskingCollator(tokenizer)([OPTIMAL, RULE_VIOLATION])
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1


def test_left_and_right_padding_give_the_same_loss(char):
    model = tiny_llama(char).eval()
    rows = [OPTIMAL, RULE_VIOLATION, EXPLORATION]
    losses = []
    for side in ("right", "left"):
        batch = BacktrackMaskingCollator(char, padding_side=side)(rows)
        with torch.no_grad():
            losses.append(model(**batch).loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_mask_option_changes_only_the_labels(char):
    batch = BacktrackMaskingCollator(char)([EXPLORATION])
    n_trained = int((batch["labels"] != -100).sum())
    assert n_trained == len("7*3=21\n") + 2  # prefix + <backtrack> + </s>; the shift drops nothing trained here
    unmasked = BacktrackMaskingCollator(char, mask_wrong_step=False)([EXPLORATION])
    assert int((unmasked["labels"] != -100).sum()) == n_trained + len("21-5=16\n")
    assert torch.equal(batch["input_ids"], unmasked["input_ids"])


# --- errors ----------------------------------------------------------------------------------------------------------


def test_missing_columns_are_named(char):
    with pytest.raises(ValueError, match=r"\['kind', 'prefix', 'wrong_step'\]"):
        check_columns(["prompt", "completion"])
    row = {k: v for k, v in OPTIMAL.items() if k != "wrong_step"}
    with pytest.raises(ValueError, match=r"\['wrong_step'\].*remove_unused_columns=False"):
        BacktrackMaskingCollator(char)([row])


def test_backtrack_row_with_empty_wrong_step(char):
    row = dict(EXPLORATION, wrong_step="", completion=EXPLORATION["prefix"] + "<backtrack>")
    with pytest.raises(ValueError, match="empty wrong_step"):
        build_example(row, char)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "sft"}, "kind='sft'"),
        ({"wrong_step": "21-5=16"}, "must be a whole line"),
        ({"completion": "7*3=21\n<backtrack>"}, "breaks the invariant"),
    ],
)
def test_malformed_backtrack_rows(char, change, message):
    with pytest.raises(ValueError, match=message):
        build_example(dict(EXPLORATION, **change), char)


def test_malformed_optimal_rows(char):
    with pytest.raises(ValueError, match="optimal rows need wrong_step=''"):
        build_example(dict(OPTIMAL, wrong_step="1+1=2\n"), char)
    with pytest.raises(ValueError, match="completion == prefix"):
        build_example(dict(OPTIMAL, prefix="7*3=21\n"), char)


def test_tokenizer_without_eos_or_pad():
    tokenizer = char_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="no EOS token"):
        BacktrackMaskingCollator(tokenizer)
    tokenizer = char_tokenizer()
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        BacktrackMaskingCollator(tokenizer)


def test_tokenizer_without_backtrack_token():
    tokenizer = char_tokenizer(backtrack=False)
    collator = BacktrackMaskingCollator(tokenizer)
    assert collator([OPTIMAL])["labels"].ne(-100).any()  # optimal-only data needs no <backtrack>
    with pytest.raises(ValueError, match="add_backtrack_token"):
        collator([OPTIMAL, EXPLORATION])


def test_bad_options(char):
    with pytest.raises(ValueError, match="padding_side"):
        BacktrackMaskingCollator(char, padding_side="middle")
    with pytest.raises(ValueError, match="on_untrained"):
        BacktrackMaskingCollator(char, on_untrained="ignore")


def test_segment_memo_is_exact_and_bounded(bpe):
    rows = sample_rows(12)
    plain = BacktrackMaskingCollator(bpe, cache_size=0)
    memo = BacktrackMaskingCollator(bpe, cache_size=10)
    for _ in range(2):  # second pass: lookups hit the memo
        for batch in (rows[:8], rows[8:]):
            expected_batch, got = plain(batch), memo(batch)
            assert all(torch.equal(expected_batch[key], got[key]) for key in expected_batch)
    assert len(memo._encoder.cache) == 10 and not plain._encoder.cache
