"""The Countdown dataset builder: splits, row contract, error types, determinism, options and bad input."""

import dataclasses
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset

from backtrack_trl.data.build_config import BuildDatasetArguments
from backtrack_trl.data.builder import build_and_save, build_dataset, build_rows
from backtrack_trl.tasks.countdown.checkers import check
from backtrack_trl.tasks.countdown.error_steps import state_after
from backtrack_trl.tasks.countdown.format import BACKTRACK_TOKEN, Problem, format_prompt, parse_step
from backtrack_trl.tasks.countdown.generator import CountdownConfig, problem_key, split_targets
from backtrack_trl.tasks.countdown.solver import is_solvable, solve


REPO = Path(__file__).resolve().parents[2]
# Small but not trivial: 3 numbers in 1..20 (the CPU default problem space), a few shards' worth of work.
TINY = {
    "num_train_questions": 300,
    "num_test": 60,
    "num_numbers": 3,
    "max_number": 20,
    "min_target": 1,
    "max_target": 100,
    "seed": 7,
}
COLUMNS = ["numbers", "target", "prompt", "completion", "kind", "error_type", "prefix", "wrong_step"]


CONFIG_FIELDS = {f.name for f in dataclasses.fields(CountdownConfig)}


def _args(**overrides):
    """``(builder options, Countdown generator options)`` of TINY with ``overrides``."""
    values = {**TINY, "num_proc": 1, **overrides}
    config = CountdownConfig(**{k: v for k, v in values.items() if k in CONFIG_FIELDS})
    return BuildDatasetArguments(**{k: v for k, v in values.items() if k not in CONFIG_FIELDS}), config


def build_countdown_dataset(args_and_config):
    return build_dataset(*args_and_config)


@pytest.fixture(scope="module")
def backtrack():
    return build_countdown_dataset(_args())


@pytest.fixture(scope="module")
def optimal():
    return build_countdown_dataset(_args(mode="optimal"))


def _problem(row):
    return Problem(tuple(row["numbers"]), row["target"])


def _classify(problem, prefix_text, wrong_line):
    """Which error a wrong step is, judged independently with the solver."""
    prefix = [parse_step(line) for line in prefix_text.splitlines()]
    state = list(state_after(problem.numbers, prefix))
    step = parse_step(wrong_line.rstrip("\n"))
    available = Counter(state)
    if any(available[v] < c for v, c in Counter((step.a, step.b)).items()):
        assert step.is_correct_arithmetic  # a rule violation only breaks the operand rule
        return "rule_violation"
    if not step.is_correct_arithmetic:
        return "computational"
    for value in (step.a, step.b):
        state.remove(value)
    assert not is_solvable(state + [step.result], problem.target)  # a legal step that leaves every solution
    return "exploration"


def test_splits_columns_and_counts(backtrack):
    assert list(backtrack) == ["train", "test_seen", "test_new"]
    for split in backtrack.values():
        assert split.column_names == COLUMNS
    assert len(backtrack["test_seen"]) == len(backtrack["test_new"]) == 60
    kinds = Counter(backtrack["train"]["kind"])
    assert kinds["optimal"] == 300 and 290 <= kinds["backtrack"] <= 300  # a row is rarely impossible
    for split in ("test_seen", "test_new"):
        assert set(backtrack[split]["kind"]) == {"optimal"}


def test_test_problems_never_in_train_and_targets_held_out(backtrack):
    seen_targets, new_targets = split_targets(_args()[1])
    train_keys = {problem_key(_problem(row)) for row in backtrack["train"]}
    for split, targets in (("test_seen", seen_targets), ("test_new", new_targets)):
        keys = [problem_key(_problem(row)) for row in backtrack[split]]
        assert len(set(keys)) == len(keys)  # distinct problems
        assert not set(keys) & train_keys
        assert set(backtrack[split]["target"]) <= set(targets)
    assert set(backtrack["train"]["target"]) <= set(seen_targets)
    assert not set(backtrack["train"]["target"]) & set(new_targets)
    optimal_keys = [problem_key(_problem(r)) for r in backtrack["train"] if r["kind"] == "optimal"]
    assert len(set(optimal_keys)) == len(optimal_keys) == 300


def test_row_invariants_and_error_types(backtrack):
    optimal_completion = {}
    for row in backtrack["train"]:
        problem = _problem(row)
        assert row["prompt"] == format_prompt(problem)
        if row["kind"] == "optimal":
            assert row["completion"] == row["prefix"] and row["wrong_step"] == "" and row["error_type"] == ""
            assert check(problem, row["completion"], mode="strict").correct
            optimal_completion[problem] = row["completion"]
        else:
            assert row["completion"] == row["prefix"] + row["wrong_step"] + BACKTRACK_TOKEN
            assert row["wrong_step"].endswith("\n") and row["wrong_step"].count("\n") == 1
            assert optimal_completion[problem].startswith(row["prefix"])  # correct prefix of this question's path
            assert len(row["prefix"].splitlines()) < len(problem.numbers) - 1
            assert _classify(problem, row["prefix"], row["wrong_step"]) == row["error_type"]
    counts = Counter(backtrack["train"]["error_type"])
    # 1:2:2 over ~300 rows: exploration is the rarest, the other two are near 120 each.
    assert counts["exploration"] < counts["computational"] and counts["exploration"] < counts["rule_violation"]
    assert all(60 <= counts[kind] <= 180 for kind in ("computational", "rule_violation"))


def test_optimal_mode_has_same_questions_and_tests(backtrack, optimal):
    assert set(optimal["train"]["kind"]) == {"optimal"}
    assert optimal["train"].to_list() == backtrack["train"].filter(lambda r: r["kind"] == "optimal").to_list()
    for split in ("test_seen", "test_new"):
        assert optimal[split].to_list() == backtrack[split].to_list()


def test_deterministic_and_independent_of_num_proc(backtrack):
    again = build_countdown_dataset(_args())
    assert again["train"].to_list() == backtrack["train"].to_list()
    parallel = build_countdown_dataset(_args(num_proc=2))
    for split in backtrack:
        assert parallel[split].to_list() == backtrack[split].to_list()
    other_seed = build_countdown_dataset(_args(seed=8, num_train_questions=20, num_test=5))
    assert other_seed["train"]["prompt"][:2] != backtrack["train"]["prompt"][:2]


def test_ratio_options():
    half = build_countdown_dataset(_args(backtrack_ratio=0.5, num_train_questions=200, num_test=0))
    kinds = Counter(half["train"]["kind"])
    assert kinds["optimal"] == 200 and 70 <= kinds["backtrack"] <= 130
    four = build_countdown_dataset(_args(backtrack_ratio=4, num_train_questions=40, num_test=0))
    per_question = Counter(tuple(r["numbers"] + [r["target"]]) for r in four["train"] if r["kind"] == "backtrack")
    assert len(per_question) == 40 and Counter(per_question.values()).most_common(1)[0][0] == 4
    completions = [r["completion"] for r in four["train"] if r["kind"] == "backtrack"]
    assert len(set(completions)) == len(completions)  # different error draws, never the same row twice
    only_exploration = build_countdown_dataset(
        _args(error_mix="1:0:0", num_train_questions=30, num_test=0, num_numbers=4, max_number=30)
    )
    assert set(only_exploration["train"]["error_type"]) == {"", "exploration"}


def test_build_rows_directly():
    problem = Problem((2, 39, 45, 10), 62)
    solution = solve(problem.numbers, problem.target)
    rows = build_rows(problem, solution, mode="backtrack", ratio=2, error_mix=(0, 1, 0), rng=random.Random(0))
    assert [r["kind"] for r in rows] == ["optimal", "backtrack", "backtrack"]
    assert {r["error_type"] for r in rows[1:]} == {"computational"}
    assert build_rows(problem, solution, mode="optimal", ratio=2) == rows[:1]


@pytest.mark.parametrize(
    "value, message",
    [("1:2", "malformed"), ("a:b:c", "malformed"), ("1:-2:2", "malformed"), ("0:0:0", "malformed"), (3722, "quoted")],
)
def test_malformed_error_mix_is_refused_by_the_build(value, message):
    with pytest.raises(ValueError, match=message):
        build_countdown_dataset(_args(error_mix=value))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"num_numbers": 2, "max_number": 3, "num_train_questions": 50, "num_test": 0},
            "Only 16 distinct solvable problems",
        ),
        (
            {"num_train_questions": 15_300, "num_test": 100},
            "Only 15317 distinct solvable problems exist for num_train",
        ),
        ({"num_test": 1_000}, "Only 975 distinct solvable problems exist for num_test \\(held-out problems\\)"),
        ({"min_number": 10, "max_number": 5}, "max_number"),
        ({"mode": "sometimes"}, "mode"),
        ({"backtrack_ratio": -1}, "backtrack_ratio"),
        ({"new_target_fraction": 0.0}, "new_target_fraction"),
        ({"push_to_hub": True}, "hub_dataset_id"),
    ],
)
def test_impossible_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_countdown_dataset(_args(**overrides)) if "push_to_hub" not in overrides else _args(**overrides)[
            0
        ].validate()


def test_build_and_save_card_and_existing_folder(tmp_path):
    args, config = _args(output_dir=str(tmp_path / "bt"), num_train_questions=20, num_test=5)
    build_and_save(args, config)
    loaded = load_dataset(str(tmp_path / "bt"))
    assert {name: len(split) for name, split in loaded.items()} == {"train": 40, "test_seen": 5, "test_new": 5}
    text = (tmp_path / "bt" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default"]
    assert "| `seed` | `7` |" in text and "| train | 40 | 20 | 20 | 20 |" in text
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        build_and_save(args, config)
    build_and_save(dataclasses.replace(args, overwrite=True, num_train_questions=10), config)
    assert len(load_dataset(str(tmp_path / "bt"))["train"]) == 20


def test_recipe_with_config_and_cli_override(tmp_path):
    config = yaml.safe_load((REPO / "recipes/countdown-tiny/data/config_optimal.yaml").read_text())
    assert config["mode"] == "optimal" and isinstance(config["error_mix"], str)
    config.update(output_dir=str(tmp_path / "opt"), num_train_questions=30, num_test=5, num_proc=1)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "recipes/build_dataset.py", "--config", str(path), "--num_test", "4"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = load_dataset(str(tmp_path / "opt"))
    assert {name: len(split) for name, split in loaded.items()} == {"train": 30, "test_seen": 4, "test_new": 4}
    bad = subprocess.run(
        command + ["--error_mix", "1:2", "--overwrite"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "error_mix='1:2' is malformed" in bad.stderr
