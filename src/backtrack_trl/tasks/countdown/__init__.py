"""Countdown (the paper's task) behind the :class:`~backtrack_trl.tasks.base.Task` interface.

Reach the target with every given number exactly once, one ``a<op>b=c`` step per line (``+ - * /``, exact division,
no negative results). The modules: ``format`` (problems, steps, text), ``solver`` (exact, memoised), ``checkers``
(strict and the released code's ``official`` mode), ``generator`` (seen / held-out targets), ``error_steps`` (the
paper's exploration, computational and rule-violation errors).

Usage:

```python
from backtrack_trl.tasks import get_task

countdown = get_task("countdown")
problem = countdown.parse_prompt("###Question: numbers [116, 32, 7]->target 10\\n###Response:\\n")
answer = "116/32=3\\n7+3=10\\nGoal Reached!"  # an inexact division
assert countdown.check(problem, answer).reason == "incorrect_result"  # strict, the headline mode
assert countdown.check(problem, answer, mode="official").correct  # the released code's checker lets it pass
```
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from datasets import List, Value

from backtrack_trl.tasks.base import Task, register_task
from backtrack_trl.tasks.countdown import checkers, error_steps, format, generator, paper, solver
from backtrack_trl.tasks.countdown.format import Problem, Step
from backtrack_trl.tasks.countdown.generator import CountdownConfig
from backtrack_trl.tasks.frame import Verdict


@register_task
class CountdownTask(Task):
    name = "countdown"
    problem_columns = ("numbers", "target")
    modes = checkers.MODES
    reasons = checkers.REASONS
    error_types = error_steps.ERROR_TYPES
    default_error_mix = error_steps.DEFAULT_ERROR_MIX
    config_class = CountdownConfig
    problem_features = {"numbers": List(Value("int64")), "target": Value("int64")}
    column_descriptions = {"numbers": "the problem's numbers, in prompt order", "target": "the number to reach"}
    metric_name = "countdown_accuracy"
    reference_results = {
        "label": "Paper 1B seen / new (official)",
        "note": "the paper's Llama-3.2-1B, official checker, 5,000 problems per split, a different scale",
        "table": paper.PAPER_1B,
        "rounds": paper.PAPER_ROUNDS_1B,
    }
    reason_labels = {
        "not_reached_target": "not reached",
        "incorrect_result": "wrong arithmetic",
        "unknown_numbers": "unknown numbers",
        "invalid_format": "bad format",
    }
    diagnosis_text = (
        "Arithmetic of the chosen answers: share of written steps whose result is the true result (all / first / last "
        "step), and share of answers whose last step copies the target with wrong arithmetic."
    )
    diagnosis_columns = (
        ("step_right", "Right steps %"),
        ("first_step_right", "Right first step %"),
        ("last_step_right", "Right last step %"),
        ("target_copy", "Last step copies the target %"),
    )

    def format_prompt(self, problem: Problem) -> str:
        return format.format_prompt(problem)

    def parse_prompt(self, text: str) -> Problem:
        return format.parse_prompt(text)

    def problem_from_row(self, row: Mapping[str, Any]) -> Problem:
        return Problem(tuple(row["numbers"]), row["target"])

    def problem_to_row(self, problem: Problem) -> dict[str, Any]:
        return {"numbers": list(problem.numbers), "target": problem.target}

    def problem_key(self, problem: Problem):
        return generator.problem_key(problem)

    def format_step(self, step: Step) -> str:
        return str(step)

    def parse_step(self, line: str) -> Step | None:
        return format.parse_step(line)

    def solve(self, problem: Problem, rng: random.Random | None = None) -> list[Step] | None:
        return solver.solve(problem.numbers, problem.target, rng)

    def is_solvable_after(self, problem: Problem, steps: Sequence[Step]) -> bool:
        try:
            state = error_steps.state_after(problem.numbers, steps)
        except ValueError:  # a step with wrong arithmetic or an unavailable number: no correct answer goes on
            return False
        return solver.is_solvable(state, problem.target)

    def check(self, problem: Problem, response: str, mode: str = "strict") -> Verdict:
        return checkers.check(problem, response, mode=mode)

    def iter_problems(self, config: CountdownConfig, split: str, rng: random.Random) -> Iterator[Problem]:
        seen, new = generator.split_targets(config)
        return generator.iter_problems(config, new if split == "test_new" else seen, rng)

    def generate_shard(self, config: CountdownConfig, split: str, n: int, seed: int) -> list[Problem]:
        seen, new = generator.split_targets(config)
        return generator.generate_problems_shard(config, new if split == "test_new" else seen, n, shard_seed=seed)

    def count_problems(self, config: CountdownConfig, split: str) -> int | None:
        seen, new = generator.split_targets(config)
        if split == "test_new" and not new:
            raise ValueError(
                f"The test_new split needs held-out targets but new_target_fraction={config.new_target_fraction} "
                f"leaves none; raise new_target_fraction (e.g. 0.1) or set num_test: 0."
            )
        return generator.count_distinct_problems(config, new if split == "test_new" else seen)

    def describe_splits(self, config: CountdownConfig) -> list[str]:
        seen, new = generator.split_targets(config)
        return [f"Seen targets ({len(seen)}): {seen}", "", f"Held-out targets ({len(new)}): {new}"]

    def seed_text(self, problem: Problem) -> str:
        return f"{list(problem.numbers)}/{problem.target}"

    def diagnose(self, problems: Sequence[Problem], completions: Sequence[str]) -> dict:
        from backtrack_trl.tasks.countdown.arithmetic import answer_arithmetic

        return answer_arithmetic(problems, completions)

    def limiting_factor(self, diagnosis: Mapping[str, Any], accuracy: float, oracle: float | None) -> str:
        from backtrack_trl.tasks.countdown.arithmetic import limiting_factor

        return limiting_factor(diagnosis.get("last_step_right"), accuracy, oracle)

    def tokenizer_phrases(self) -> tuple[str, ...]:
        return ("###Question:", " numbers", "->target", "###Response:", "Goal Reached!")

    def make_error(self, error_type: str, problem: Problem, prefix: Sequence[Step], rng: random.Random):
        return error_steps.make_error(error_type, problem, prefix, rng)

    def card_text(self) -> str:
        return (
            "Countdown: reach the target with every given number exactly once; one `a<op>b=c` step per line "
            "(`+ - * /`, exact division, no negative results), then `Goal Reached!`."
        )


__all__ = ["CountdownTask", "Problem", "Step"]
