"""The split of Task: the contract a task writes (abstract), what it derives, and the optional evaluation hooks."""

import random

import pytest

from backtrack_trl.tasks import GOAL_MARKER, Task, Verdict
from backtrack_trl.tasks.contract import TaskContract
from backtrack_trl.tasks.derived import backtrack_example, dispatch_error, shard_seed
from backtrack_trl.tasks.hooks import EvaluationHooks


CONTRACT = {
    "format_prompt",
    "parse_prompt",
    "problem_from_row",
    "problem_to_row",
    "format_step",
    "parse_step",
    "solve",
    "is_solvable_after",
    "check",
    "iter_problems",
    "make_error",
}


def test_the_contract_is_exactly_the_abstract_methods_of_task():
    assert TaskContract.__abstractmethods__ == Task.__abstractmethods__ == CONTRACT
    assert issubclass(Task, TaskContract) and issubclass(Task, EvaluationHooks)
    with pytest.raises(TypeError, match="abstract"):
        type("Half", (Task,), {"name": "half", "format_prompt": lambda self, problem: ""})()


class Count(Task):
    """Count up from 0 to a target by +1 steps (only the contract is written)."""

    name = "count_up"
    error_types = ("skip",)

    def format_prompt(self, problem):
        return f"###Question: {problem}\n###Response:\n"

    def parse_prompt(self, text):
        return int(text.split()[1])

    def problem_from_row(self, row):
        return row["target"]

    def problem_to_row(self, problem):
        return {"target": problem}

    def format_step(self, step):
        return f"+1={step}"

    def parse_step(self, line):
        return int(line[3:]) if line.startswith("+1=") and line[3:].isdigit() else None

    def solve(self, problem, rng=None):
        return list(range(1, problem + 1))

    def is_solvable_after(self, problem, steps):
        return not steps or steps[-1] <= problem

    def check(self, problem, response, mode="strict"):
        return Verdict(response.endswith(GOAL_MARKER), "correct")

    def iter_problems(self, config, split, rng):
        while True:
            yield rng.randint(1, 9)

    def make_error(self, error_type, problem, prefix, rng):
        return len(prefix) + 2 if len(prefix) == 1 else None  # a skip is possible after the first step only


def test_a_task_that_writes_only_the_contract_gets_the_derived_behaviour_and_hook_defaults():
    task = Count()
    assert task.format_response([1, 2]) == "+1=1\n+1=2\nGoal Reached!"
    assert task.parse_steps("+1=1\nnoise\n+1=2\n<backtrack>\n+1=3") == [1, 2]
    row = task.backtrack_row(3, [1], 3, "skip")
    assert row["completion"] == "+1=1\n+1=3\n<backtrack>" and row["prefix"] == "+1=1\n" and row["target"] == 3
    assert task.make_backtrack_example(3, [1, 2, 3], "skip", random.Random(0)) == ([1], 3)
    assert task.seed_text(3) == '{"target": 3}' and task.card_text() == "Task `count_up`."
    assert len(task.generate_shard(None, "train", 5, seed=1)) == 5
    assert task.diagnose([3], ["+1=1"]) == {} and task.metric_name is None
    assert task.limiting_factor({}, 0.5, 0.9).startswith("selection limits")


def test_backtrack_example_tries_every_position_and_dispatch_error_names_the_types():
    calls = []

    def only_last(error_type, problem, prefix, rng):
        calls.append(len(prefix))
        return "wrong" if len(prefix) == 2 else None

    assert backtrack_example(only_last, None, [1, 2, 3], "x", random.Random(0)) == ([1, 2], "wrong")
    assert sorted(set(calls)) == sorted(calls) and 2 in calls
    assert backtrack_example(lambda *args: None, None, [1, 2], "x", random.Random(0)) is None
    makers = {"a": lambda problem, prefix, rng: (problem, len(prefix)), "b": lambda problem, prefix, rng: None}
    assert dispatch_error(makers, "a", 7, [1], random.Random(0)) == (7, 1)
    with pytest.raises(ValueError, match=r"Unknown error_type 'c'; expected one of \('a', 'b'\)"):
        dispatch_error(makers, "c", 7, [], random.Random(0))


def test_shard_seed_is_stable_and_63_bit():
    assert shard_seed(42, "train", 0) == shard_seed(42, "train", 0) != shard_seed(42, "train", 1)
    assert 0 <= shard_seed(1, "test_new", 3) < 2**63
