"""The task registry, the contract every registered task passes, and the "Adding a task" example of docs/tasks.md."""

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backtrack_trl.decoding.base import to_prompt
from backtrack_trl.tasks import BACKTRACK_TOKEN, GOAL_MARKER, RESPONSE_HEADER, TASKS, Task, get_task, register_task
from backtrack_trl.tasks.countdown.generator import CountdownConfig
from backtrack_trl.tasks.countdown.generator import split_targets as countdown_split_targets
from backtrack_trl.tasks.sudoku.generator import SudokuConfig


TASKS_DOC = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"


def _documented_example() -> str:
    text = TASKS_DOC.read_text()
    block = re.search(r"<!-- example:add-task -->\n```python\n(.*?)```\n<!-- /example:add-task -->", text, re.S)
    assert block, "docs/tasks.md lost its 'Adding a task' example"
    return block.group(1)


@pytest.mark.parametrize(
    "first", ["backtrack_trl.tasks", "backtrack_trl.tasks.base", "backtrack_trl.tasks.sudoku.format"]
)
def test_importing_any_task_module_registers_the_built_in_tasks(first):
    # A fresh interpreter: the registry is filled by the import itself, before any get_task call.
    code = f"import importlib, sys; importlib.import_module({first!r}); print(sorted(sys.modules['backtrack_trl.tasks'].TASKS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['countdown', 'sudoku']"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown task 'sokoban'; known tasks: \[.*'countdown'.*'sudoku'.*\]"):
        get_task("sokoban")
    countdown = get_task("countdown")
    assert get_task(countdown) is countdown


def test_register_refuses_a_nameless_or_clashing_task():
    with pytest.raises(ValueError, match="needs a non-empty `name`"):
        register_task(type("Nameless", (Task,), {}))
    get_task("countdown")
    with pytest.raises(ValueError, match="'countdown' is already registered"):
        register_task(type("Other", (TASKS["countdown"],), {}))


def test_documented_example_runs_and_plugs_into_the_generic_parts():
    namespace = {}
    exec(compile(_documented_example(), "docs/tasks.md:add-task", "exec"), namespace)  # noqa: S102  (our own docs)
    climb = get_task("climb")
    prompt = to_prompt({"target": 7}, task=climb)
    assert prompt == "###Question: climb to 7\n###Response:\n"
    with pytest.raises(ValueError, match="Not a climb prompt"):
        to_prompt("###Question: numbers [1, 2]->target 3\n###Response:\n", task=climb)
    _contract(climb, [climb.problem_from_row({"target": t}) for t in (2, 5, 9)])


def _contract(task: Task, problems):
    """What every task must satisfy (see "Adding a task" in docs/tasks.md)."""
    rng = random.Random(0)
    for problem in problems:
        prompt = task.format_prompt(problem)
        assert prompt.endswith(RESPONSE_HEADER) and task.parse_prompt(prompt) == problem
        assert task.problem_from_row(task.problem_to_row(problem)) == problem
        path = task.solve(problem, random.Random(1))
        assert path, f"{problem}: no path"
        response = task.format_response(path)
        assert response.endswith(GOAL_MARKER) and task.check(problem, response).correct
        assert task.parse_steps(response) == list(path)
        for step in path:
            assert task.parse_step(task.format_step(step)) == step
        assert task.check(problem, task.format_response(path[:-1])).reason != "correct" or not path[:-1]
        assert all(task.is_solvable_after(problem, path[:i]) for i in range(len(path) + 1))
        row = task.optimal_row(problem, path)
        assert row["completion"] == response and row["kind"] == "optimal" and row["prompt"] == prompt
        made = 0
        for error_type in task.error_types:
            for cut in range(len(path)):
                wrong = task.make_error(error_type, problem, path[:cut], rng)
                if wrong is None:
                    continue
                made += 1
                row = task.backtrack_row(problem, path[:cut], wrong, error_type)
                assert row["completion"] == row["prefix"] + row["wrong_step"] + BACKTRACK_TOKEN
                # a wrong step: the answer through it is not correct, or the problem is no longer solvable
                broken = (
                    not task.is_solvable_after(problem, [*path[:cut], wrong])
                    if task.parse_step(task.format_step(wrong)) == wrong
                    else True
                )
                through = task.format_response([*path[:cut], wrong])
                assert broken or not task.check(problem, through).correct, (problem, error_type, wrong)
        assert task.reasons[0] == "correct" and task.modes[0] == "strict"
    return made


def test_countdown_passes_the_task_contract():
    countdown = get_task("countdown")
    config = CountdownConfig(num_numbers=4, min_number=1, max_number=9, min_target=1, max_target=100)
    stream = countdown.iter_problems(config, "train", random.Random(0))
    problems = [next(stream) for _ in range(25)]
    assert _contract(countdown, problems) > 0
    seen_targets, new_targets = countdown_split_targets(config)
    assert {p.target for p in problems} <= set(seen_targets)
    held_out = countdown.iter_problems(config, "test_new", random.Random(0))
    assert {next(held_out).target for _ in range(20)} <= set(new_targets)
    assert not set(seen_targets) & set(new_targets)


def test_sudoku_passes_the_task_contract():
    sudoku = get_task("sudoku")
    problems = []
    for size, n in ((4, 12), (6, 2), (9, 1)):
        stream = sudoku.iter_problems(SudokuConfig(size=size), "train", random.Random(0))
        problems += [next(stream) for _ in range(n)]
    assert _contract(sudoku, problems) > 0
    prompt = sudoku.format_prompt(problems[0])
    assert to_prompt(prompt, task=sudoku) == prompt


BUILT_IN_CONFIGS = {
    "countdown": CountdownConfig(num_numbers=3, max_number=20, min_target=1, max_target=100, seed=3),
    "sudoku": SudokuConfig(size=4, seed=3),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN_CONFIGS))
def test_every_task_builds_a_dataset_without_test_problems_in_train(name):
    from backtrack_trl.data.build_config import BuildDatasetArguments
    from backtrack_trl.data.builder import build_dataset

    task = get_task(name)
    args = BuildDatasetArguments(task=name, num_train_questions=150, num_test=40, num_proc=1)
    dataset = build_dataset(args, BUILT_IN_CONFIGS[name])
    keys = {
        split: [task.problem_key(task.problem_from_row(row)) for row in dataset[split]]
        for split in ("train", "test_seen", "test_new")
    }
    assert len(set(keys["test_seen"])) == len(set(keys["test_new"])) == 40
    assert not set(keys["train"]) & (set(keys["test_seen"]) | set(keys["test_new"]))
    assert set(dataset["train"]["error_type"]) - {""} <= set(task.error_types)
    for row in dataset["train"]:
        problem = task.problem_from_row(row)
        assert task.parse_prompt(row["prompt"]) == problem
        if row["kind"] == "optimal":
            assert task.check(problem, row["completion"]).correct
        else:  # the wrong step breaks the answer: no correct answer goes on through it
            assert row["completion"] == row["prefix"] + row["wrong_step"] + BACKTRACK_TOKEN
            prefix = task.parse_steps(row["prefix"])
            assert task.is_solvable_after(problem, prefix)
            assert not task.is_solvable_after(problem, [*prefix, task.parse_step(row["wrong_step"].strip())])
    assert set(task.problem_columns) <= set(dataset["train"].column_names)
