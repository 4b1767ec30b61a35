"""Countdown (the paper's task) behind the :class:`~backtrack_trl.tasks.base.Task` interface.

Reach the target with every given number exactly once, one ``a<op>b=c`` step per line (``+ - * /``, exact division,
no negative results). The modules: ``format`` (problems, steps, text), ``solver`` (exact, memoised), ``checkers``
(strict and the released code's ``official`` mode), ``generator`` (seen / held-out targets), ``error_steps`` (the
paper's exploration, computational and rule-violation errors).

Usage:

```python
from backtrack_trl.tasks import get_task

countdown = get_task("countdown")
problem = countdown.parse_prompt("###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n")
path = countdown.solve(problem)
assert countdown.check(problem, countdown.format_response(path)).correct
```
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..base import Task, Verdict, register_task
from . import checkers, error_steps, format, generator, solver
from .format import Problem, Step


@register_task
class CountdownTask(Task):
    name = "countdown"
    problem_columns = ("numbers", "target")
    modes = checkers.MODES
    reasons = checkers.REASONS
    error_types = error_steps.ERROR_TYPES

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

    def iter_problems(self, config: generator.CountdownConfig, split: str, rng: random.Random) -> Iterator[Problem]:
        seen, new = generator.split_targets(config)
        return generator.iter_problems(config, new if split == "test_new" else seen, rng)

    def make_error(self, error_type: str, problem: Problem, prefix: Sequence[Step], rng: random.Random):
        return error_steps.make_error(error_type, problem, prefix, rng)

    def card_text(self) -> str:
        return (
            "Countdown: reach the target with every given number exactly once; one `a<op>b=c` step per line "
            "(`+ - * /`, exact division, no negative results), then `Goal Reached!`."
        )


__all__ = ["CountdownTask", "Problem", "Step"]
