"""Backtrack rows from a model's own wrong answers: the first wrong line found by the strict checker, the error type,
the masks the collator gives them, and the harvest that writes them with replayed rows."""

from pathlib import Path

import pytest
from _memorized_model import memorized_countdown_model
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.study.harvest import harvest
from backtrack_trl.study.mistakes import count_error_types, first_wrong_line, mistake_row, mistake_rows
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.format import Problem


COUNTDOWN = get_task("countdown")
PROBLEM = Problem((3, 5, 2), 16)


@pytest.mark.parametrize(
    ("text", "error_type", "prefix", "wrong_step"),
    [
        ("3+5=8\n8*2=17\nGoal Reached!", "own_forged_last", "3+5=8\n", "8*2=17\n"),  # made-up last step
        ("3+5=8\n8+2=16\nGoal Reached!", "own_forged_last", "3+5=8\n", "8+2=16\n"),  # copies the target
        ("3+5=9\n9*2=18\nGoal Reached!", "own_incorrect_result", "", "3+5=9\n"),  # an earlier slip
        ("3+7=10\n10+2=12\nGoal Reached!", "own_unknown_numbers", "", "3+7=10\n"),  # an operand it does not have
        ("3+5=8\n8+2=10\nGoal Reached!", "own_miss", "3+5=8\n", "8+2=10\n"),  # legal steps, false goal claim
        ("5-3=2\n2*2=4\nGoal Reached!", "own_miss", "5-3=2\n", "2*2=4\n"),
    ],
)
def test_the_row_backtracks_at_the_first_wrong_line(text, error_type, prefix, wrong_step):
    row = mistake_row(COUNTDOWN, PROBLEM, text)
    assert (row["error_type"], row["prefix"], row["wrong_step"]) == (error_type, prefix, wrong_step)
    assert row["completion"] == prefix + wrong_step + "<backtrack>" and row["kind"] == "backtrack"
    assert row["prompt"] == COUNTDOWN.format_prompt(PROBLEM) and row["numbers"] == [3, 5, 2]


@pytest.mark.parametrize(
    "text",
    [
        "3+5=8\n8*2=16\nGoal Reached!",  # correct
        "3+5=8\n8+2=10\n<backtrack>",  # the model already backtracked
        "3+5=8\n8+2=10",  # stopped without an answer
        "3 + 5 = 8\n8*2=16\nGoal Reached!",  # the first wrong line is not a step: nothing to mask
        "Goal Reached!",  # no step to back off from
    ],
)
def test_no_row_without_a_wrong_step(text):
    assert mistake_row(COUNTDOWN, PROBLEM, text) is None


def test_first_wrong_line_reports_the_checker_reason():
    lines = ["3+5=8", "8*2=17"]
    assert first_wrong_line(COUNTDOWN, PROBLEM, lines) == (1, "incorrect_result")
    assert first_wrong_line(COUNTDOWN, PROBLEM, ["3+5=8", "8*2=16"]) is None


def test_rows_are_distinct_capped_and_forgeries_weighted():
    texts = ["3+5=8\n8*2=17\nGoal Reached!", "3+5=8\n8*2=17\nGoal Reached!", "3+5=9\n9*2=18\nGoal Reached!",
             "3+5=8\n8+2=10\nGoal Reached!", "3+5=8\n8*2=16\nGoal Reached!"]  # fmt: skip
    rows = mistake_rows(COUNTDOWN, PROBLEM, texts, forged_weight=3)
    assert [r["error_type"] for r in rows] == ["own_forged_last"] * 3 + ["own_incorrect_result", "own_miss"]
    assert count_error_types(rows) == {"own_forged_last": 3, "own_incorrect_result": 1, "own_miss": 1}
    capped = mistake_rows(COUNTDOWN, PROBLEM, texts, max_rows=2)
    assert [r["error_type"] for r in capped] == ["own_forged_last", "own_incorrect_result"]


def test_sudoku_rows_use_its_own_checker():
    sudoku = get_task("sudoku")
    problem = sudoku.problem_from_row({"size": 4, "puzzle": "12../34../..../...."})
    row = mistake_row(sudoku, problem, "r1c3=3\nr1c4=3\nGoal Reached!")  # the second placement breaks its row
    assert (row["prefix"], row["wrong_step"], row["error_type"]) == ("r1c3=3\n", "r1c4=3\n", "own_forged_last")
    miss = mistake_row(sudoku, problem, "r1c3=3\nGoal Reached!")  # legal, but the grid is not full
    assert (miss["prefix"], miss["wrong_step"], miss["error_type"]) == ("", "r1c3=3\n", "own_miss")


def test_the_collator_trains_only_the_backtrack_after_the_own_wrong_line():
    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
    from backtrack_trl.training.collator import IGNORE_INDEX, build_example

    tokenizer = build_countdown_tokenizer()
    row = mistake_row(COUNTDOWN, PROBLEM, "3+5=8\n8*2=17\nGoal Reached!")
    example = build_example(row, tokenizer, trained_error_types=["exploration"])
    prompt, prefix, wrong = (len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in
                             (row["prompt"], row["prefix"], row["wrong_step"]))  # fmt: skip
    labels = example["labels"][len(example["labels"]) - (prefix + wrong + 2) :]
    assert labels[prefix : prefix + wrong] == [IGNORE_INDEX] * wrong  # the model's wrong line: not trained
    assert IGNORE_INDEX not in labels[:prefix] and IGNORE_INDEX not in labels[prefix + wrong :]  # prefix, <bt>, EOS
    assert prompt > 0


POOL = [Problem((3, 5, 2), 16), Problem((12, 7, 1), 84), Problem((9, 9, 2), 83), Problem((4, 6, 1), 25)]


def test_a_harvest_of_mistakes_writes_them_with_replayed_rows(tmp_path):
    rows = [COUNTDOWN.optimal_row(p, COUNTDOWN.solve(p)) for p in POOL]
    write_hub_dataset(DatasetDict({"train": Dataset.from_list(rows * 5)}), tmp_path / "data")
    memorized_countdown_model(tmp_path / "model", POOL, steps=40)  # partly trained: many samples are wrong
    problems = [COUNTDOWN.problem_to_row(p) for p in POOL]
    stats = harvest(tmp_path / "model", problems, tmp_path / "out", "self_correct", {"n": 8, "b": 0},
                    keep="none", seed=3, progress=False, mistakes_per_problem=4, replay_dataset=tmp_path / "data",
                    replay_ratio=1.5)  # fmt: skip
    written = load_dataset(str(tmp_path / "out"), "self_correct", split="train")
    sources = written["source"]
    assert stats["kept"] == 0 and stats["mistake_rows"] == sources.count("mistake") > 0
    assert stats["replay_rows"] == sources.count("replay") == round(1.5 * stats["mistake_rows"])
    assert sum(stats["mistake_types"].values()) == stats["mistake_rows"]
    for row in written:
        if row["source"] == "mistake":
            assert row["kind"] == "backtrack" and row["error_type"].startswith("own_")
            assert row["completion"] == row["prefix"] + row["wrong_step"] + "<backtrack>"
            problem = COUNTDOWN.problem_from_row(row)
            assert not COUNTDOWN.check(problem, row["prefix"] + row["wrong_step"] + "Goal Reached!").correct
        else:
            assert row in [{**r, "source": "replay"} for r in rows]
    assert Path(tmp_path / "out" / "README.md").read_text().count("replay") >= 1
