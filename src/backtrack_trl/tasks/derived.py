"""What every task gets from its contract: answers, dataset rows, backtrack examples, shards, card text.

:class:`DerivedBehaviour` implements the shared behaviour on top of :class:`~backtrack_trl.tasks.contract.TaskContract`;
its methods with a default (``problem_key``, ``seed_text``, ``generate_shard``, ``count_problems``, ``widen_hint``,
``describe_splits``, ``tokenizer_phrases``, ``card_text``) are the optional overrides of a task. The functions are
shared by the tasks' own modules: :func:`shard_seed`, :func:`backtrack_example`, :func:`dispatch_error`.

Usage:

```python
import random

from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.derived import shard_seed

countdown = get_task("countdown")
problem = countdown.parse_prompt("###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n")
row = countdown.optimal_row(problem, countdown.solve(problem))
assert row["completion"].endswith("Goal Reached!") and row["kind"] == "optimal"
problems = countdown.generate_shard(countdown.config_class(), "train", 4, shard_seed(42, "train", 0))
```
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

from backtrack_trl.tasks.contract import TaskContract
from backtrack_trl.tasks.frame import BACKTRACK_TOKEN, GOAL_MARKER


def shard_seed(seed: int, split: str, shard: int) -> int:
    """A stable 63-bit seed for shard ``shard`` of split ``split`` (same on every machine and Python version)."""
    digest = hashlib.sha256(f"{seed}/{split}/{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def backtrack_example(make_error: Callable, problem, solution: Sequence, error_type: str, rng: random.Random):
    """``(prefix, wrong_step)``: the first k steps of ``solution`` (k uniform) and ``make_error(error_type, problem,
    prefix, rng)`` at step k; the other positions are tried in a random order when it is None there; None if it is
    None everywhere."""
    first = rng.randrange(len(solution))
    rest = [k for k in range(len(solution)) if k != first]
    rng.shuffle(rest)
    for k in [first, *rest]:
        wrong = make_error(error_type, problem, list(solution[:k]), rng)
        if wrong is not None:
            return list(solution[:k]), wrong
    return None


def dispatch_error(makers: Mapping[str, Callable], error_type: str, problem, prefix: Sequence, rng: random.Random):
    """Call the maker of ``error_type`` in ``makers`` (a ValueError lists the error types when it has none)."""
    if error_type not in makers:
        raise ValueError(f"Unknown error_type {error_type!r}; expected one of {tuple(makers)}.")
    return makers[error_type](problem, prefix, rng)


class DerivedBehaviour(TaskContract):
    """The behaviour every task shares, written once on top of its contract."""

    #: What each of ``problem_columns`` holds, for the dataset card.
    column_descriptions: ClassVar[Mapping[str, str]] = {}

    # -- answers ----------------------------------------------------------------------------------------------------
    def format_response(self, steps: Sequence) -> str:
        """A solved answer: the steps, one per line, then ``Goal Reached!``."""
        return "".join(self.format_step(step) + "\n" for step in steps) + GOAL_MARKER

    def format_backtrack_response(self, prefix: Sequence, wrong_step) -> str:
        """A correct prefix, one wrong step, and ``<backtrack>`` on its own line."""
        return "".join(self.format_step(step) + "\n" for step in [*prefix, wrong_step]) + BACKTRACK_TOKEN

    def parse_steps(self, response: str) -> list:
        """The well-formed steps of a response, up to its first marker (lines that are not steps are skipped)."""
        steps = []
        for line in response.split("\n"):
            if line.strip() in (GOAL_MARKER, BACKTRACK_TOKEN):
                break
            step = self.parse_step(line)
            if step is not None:
                steps.append(step)
        return steps

    # -- dataset rows (the row contract of every dataset and of the collator) ----------------------------------------
    def optimal_row(self, problem, steps: Sequence) -> dict[str, Any]:
        """A solved row: ``prompt``, ``completion`` (the steps and ``Goal Reached!``), ``kind: optimal``."""
        completion = self.format_response(list(steps))
        return {
            **self.problem_to_row(problem),
            "prompt": self.format_prompt(problem),
            "completion": completion,
            "kind": "optimal",
            "error_type": "",
            "prefix": completion,
            "wrong_step": "",
        }

    def backtrack_row(self, problem, prefix: Sequence, wrong_step, error_type: str) -> dict[str, Any]:
        """A backtrack row: correct ``prefix`` lines, the ``wrong_step`` line, then ``<backtrack>``."""
        return {
            **self.problem_to_row(problem),
            "prompt": self.format_prompt(problem),
            "completion": self.format_backtrack_response(list(prefix), wrong_step),
            "kind": "backtrack",
            "error_type": error_type,
            "prefix": "".join(self.format_step(step) + "\n" for step in prefix),
            "wrong_step": self.format_step(wrong_step) + "\n",
        }

    # -- data -------------------------------------------------------------------------------------------------------
    def problem_key(self, problem) -> Hashable:
        """What makes two problems the same one (held-out problems are compared by it)."""
        return problem

    def seed_text(self, problem) -> str:
        """A stable text of a problem, from which the data builder derives the problem's own seeds."""
        return json.dumps(self.problem_to_row(problem), sort_keys=True)

    def sample_error_type(self, rng: random.Random, mix: Sequence[float]) -> str:
        """Draw one of ``error_types`` with weights ``mix``."""
        return rng.choices(self.error_types, weights=mix, k=1)[0]

    def make_backtrack_example(self, problem, solution: Sequence, error_type: str, rng: random.Random):
        """``(prefix, wrong_step)`` of :func:`backtrack_example` with this task's ``make_error``."""
        return backtrack_example(self.make_error, problem, solution, error_type, rng)

    def generate_shard(self, config: Any, split: str, n: int, seed: int) -> list:
        """``n`` problems of ``split``, a function of the arguments only (worker processes call it per shard).

        Problems may repeat across shards: the data builder keeps the first of each :meth:`problem_key`."""
        stream = self.iter_problems(config, split, random.Random(seed))
        return [next(stream) for _ in range(n)]

    def count_problems(self, config: Any, split: str) -> int | None:
        """How many distinct problems ``split`` has, when cheap to count (None: many), so small settings fail fast."""
        return None

    def widen_hint(self, config: Any) -> str:
        """What to change in ``config`` for more distinct problems (ends the data builder's "too few" errors)."""
        return "widen the generator's ranges"

    def describe_splits(self, config: Any) -> list[str]:
        """Markdown lines for the dataset card: what is held out for ``test_new`` (e.g. the held-out targets)."""
        return []

    # -- text of tokenizers and cards -------------------------------------------------------------------------------
    def tokenizer_phrases(self) -> tuple[str, ...]:
        """Phrases a task tokenizer keeps as single tokens (the frame's markers; a task may add its own)."""
        return ("###Question:", "###Response:", GOAL_MARKER, BACKTRACK_TOKEN)

    def card_text(self) -> str:
        """A paragraph for dataset and model cards: what the task is and how its answers are written."""
        return f"Task `{self.name}`."
