"""backtrack_trl.data.build_config: the data recipe's options, the error mix, and the checks that fail before building."""

import pytest

from backtrack_trl.data.build_config import (
    BuildDatasetArguments,
    check_problem_space,
    parse_data_args,
    parse_error_mix,
    task_of_recipe,
)
from backtrack_trl.tasks.countdown import CountdownConfig
from backtrack_trl.tasks.sudoku import SudokuConfig


@pytest.mark.parametrize(
    "value, message",
    [("1:2", "malformed"), ("a:b:c", "malformed"), ("1:-2:2", "malformed"), ("0:0:0", "malformed"), (3722, "quoted")],
)
def test_malformed_error_mix(value, message):
    with pytest.raises(ValueError, match=message):
        parse_error_mix(value)


def test_parse_error_mix_values():
    assert parse_error_mix("1:2:2") == (1.0, 2.0, 2.0)
    assert parse_error_mix([0, 1, 0.5]) == (0.0, 1.0, 0.5)
    assert parse_error_mix(None, "sudoku") == (1.0, 1.0, 1.0)  # the task's default
    with pytest.raises(ValueError, match=r"use 3 non-negative weights for exploration/rule_violation/filled_cell"):
        parse_error_mix("1:2", "sudoku")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "sometimes"}, "mode='sometimes' is not one of"),
        ({"solution_order": "sorted"}, "solution_order='sorted'"),
        ({"num_test": -1}, "must be >= 0"),
        ({"backtrack_ratio": float("inf")}, "backtrack_ratio=inf must be a finite number"),
        ({"num_proc": 0}, "num_proc=0 must be >= 1"),
        ({"push_to_hub": True}, "--push_to_hub needs --hub_dataset_id"),
    ],
)
def test_validate_names_the_bad_option(overrides, message):
    with pytest.raises(ValueError, match=message):
        BuildDatasetArguments(**overrides).validate()


def test_validate_refuses_another_tasks_generator_options():
    with pytest.raises(
        ValueError, match="Task 'countdown' takes its generator options as CountdownConfig, got Sudoku"
    ):
        BuildDatasetArguments().validate(SudokuConfig())


def test_check_problem_space_counts_before_building():
    small = CountdownConfig(num_numbers=2, max_number=3, min_target=1, max_target=100)
    check_problem_space(BuildDatasetArguments(num_train_questions=10, num_test=0), small)
    with pytest.raises(ValueError, match="Only 16 distinct solvable problems exist for num_train_questions"):
        check_problem_space(BuildDatasetArguments(num_train_questions=50, num_test=0), small)


def test_check_problem_space_counts_4x4_sudoku_puzzles():
    # Issue 24: 1,000 test_new puzzles of 840 spun through 100,000 failed draws (46 s) before this check existed.
    config = SudokuConfig(size=4, min_givens=4, max_givens=4, new_grid_fraction=0.05)
    check_problem_space(BuildDatasetArguments(task="sudoku", num_train_questions=10, num_test=840), config)
    with pytest.raises(
        ValueError,
        match=r"Only 840 distinct solvable problems exist for num_test \(held-out problems\) .* but 1000 are needed\. "
        r"Lower num_train_questions/num_test or widen min_givens\.\.max_givens",
    ):
        check_problem_space(BuildDatasetArguments(task="sudoku", num_train_questions=10, num_test=1000), config)


def test_the_task_is_read_before_the_parser_is_built(tmp_path):
    recipe = tmp_path / "data.yaml"
    recipe.write_text("task: sudoku\nnum_train_questions: 3\n")
    assert task_of_recipe(["--config", str(recipe)]) == "sudoku"
    assert task_of_recipe(["--config", str(recipe), "--task", "countdown"]) == "countdown"
    assert task_of_recipe([]) == "countdown"
    args, config = parse_data_args(["--config", str(recipe), "--num_test", "2"])
    assert (args.task, args.num_train_questions, args.num_test) == ("sudoku", 3, 2)
    assert isinstance(config, SudokuConfig)
