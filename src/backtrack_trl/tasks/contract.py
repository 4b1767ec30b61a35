"""The contract a new task writes: :class:`TaskContract`, its class attributes and abstract methods (one screen).

:class:`backtrack_trl.tasks.base.Task` adds what every task gets from them (:mod:`backtrack_trl.tasks.derived`) and the
optional evaluation hooks (:mod:`backtrack_trl.tasks.hooks`); subclass ``Task``, not this class.

Usage:

```python
from backtrack_trl.tasks.base import Task
from backtrack_trl.tasks.contract import TaskContract

assert issubclass(Task, TaskContract) and "solve" in TaskContract.__abstractmethods__
```
"""

from __future__ import annotations

import abc
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from backtrack_trl.tasks.frame import Verdict


class TaskContract(abc.ABC):
    """What a task writes. Problems are the task's own frozen, hashable objects; a step is one line of text."""

    #: The registry name: ``task: <name>`` in every recipe.
    name: ClassVar[str] = ""
    #: Dataset columns that hold a problem (besides ``prompt``).
    problem_columns: ClassVar[tuple[str, ...]] = ()
    #: ``datasets`` feature of each of :attr:`problem_columns` (e.g. ``{"target": Value("int64")}``).
    problem_features: ClassVar[Mapping[str, Any]] = {}
    #: The generator's options: a dataclass (fields with ``help`` metadata, a ``seed`` field; optional ``validate()``).
    config_class: ClassVar[type | None] = None
    #: Kinds of wrong steps the backtrack data is made of (the paper's three for Countdown).
    error_types: ClassVar[tuple[str, ...]] = ()
    #: Default weights of :attr:`error_types` (the data recipe's ``error_mix`` overrides them).
    default_error_mix: ClassVar[tuple[float, ...]] = ()
    #: Checker modes; the first is the strict one every accuracy headline uses.
    modes: ClassVar[tuple[str, ...]] = ("strict",)
    #: Reason categories a checker returns; the first is "correct".
    reasons: ClassVar[tuple[str, ...]] = ("correct",)

    @abc.abstractmethod
    def format_prompt(self, problem) -> str:
        """The question text, ending with ``RESPONSE_HEADER``."""

    @abc.abstractmethod
    def parse_prompt(self, text: str):
        """The problem of a prompt; a ValueError naming the expected format if ``text`` is not one."""

    @abc.abstractmethod
    def problem_from_row(self, row: Mapping[str, Any]):
        """The problem of a dataset row (its :attr:`problem_columns`)."""

    @abc.abstractmethod
    def problem_to_row(self, problem) -> dict[str, Any]:
        """The :attr:`problem_columns` of a problem, as stored in a dataset row."""

    @abc.abstractmethod
    def format_step(self, step) -> str:
        """One step as its line (no newline)."""

    @abc.abstractmethod
    def parse_step(self, line: str):
        """The step a line spells, or None if the line is not a well-formed step."""

    @abc.abstractmethod
    def solve(self, problem, rng: random.Random | None = None) -> list | None:
        """An optimal step path (None if the problem has no solution); ``rng`` picks among equally short ones."""

    @abc.abstractmethod
    def is_solvable_after(self, problem, steps: Sequence) -> bool:
        """Whether the problem can still be solved after the (legal) ``steps``."""

    @abc.abstractmethod
    def check(self, problem, response: str, mode: str = "strict") -> Verdict:
        """Judge a response (the text after ``RESPONSE_HEADER``); ``mode`` is one of :attr:`modes`."""

    @abc.abstractmethod
    def iter_problems(self, config: Any, split: str, rng: random.Random) -> Iterator:
        """Problems of ``split`` (``train``, ``test_seen`` or ``test_new``) for the generator ``config``."""

    @abc.abstractmethod
    def make_error(self, error_type: str, problem, prefix: Sequence, rng: random.Random):
        """A wrong step of kind ``error_type`` after the correct ``prefix``, or None if there is none."""
