"""What every task shares: the text frame of a question and its step-per-line answer, and the :class:`Task` interface.

A task's prompt ends with ``###Response:\\n``; its answer is one step per line, then ``Goal Reached!`` (solved) or a
line ``<backtrack>`` (the last step was wrong). The decoders, the collator and the engines only rely on this frame
(a step is a line), so they work for any task; everything else about a problem lives behind :class:`Task`.

Usage (the smallest complete task is in the README, section "Adding a task"):

```python
from backtrack_trl.tasks import get_task

task = get_task("countdown")
problem = task.parse_prompt("###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n")
assert task.check(problem, "3+5=8\\n8*2=16\\nGoal Reached!").correct
```
"""

from __future__ import annotations

import abc
import hashlib
import json
import random
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


BACKTRACK_TOKEN = "<backtrack>"
GOAL_MARKER = "Goal Reached!"
RESPONSE_HEADER = "###Response:\n"
# Special-token texts a decode with skip_special_tokens=False may leave at the end of an answer.
_TRAILING_SPECIAL_TEXTS = ("</s>", "<pad>")


def clean_response(response: str) -> str:
    """Drop trailing whitespace and trailing ``</s>``/``<pad>`` texts (only at the very end), so every checker reads
    a decode with ``skip_special_tokens=False`` as is."""
    text = response.rstrip()
    while True:
        for special in _TRAILING_SPECIAL_TEXTS:
            if text.endswith(special):
                text = text[: -len(special)].rstrip()
                break
        else:
            return text


@dataclass(frozen=True)
class Verdict:
    """A checker's answer: ``correct``, a ``reason`` from the task's :attr:`Task.reasons`, and a human ``detail``."""

    correct: bool
    reason: str
    detail: str = ""


class Task(abc.ABC):
    """One reasoning task. Subclass it, set :attr:`name`, implement the abstract methods, and register it::

        @register_task
        class MyTask(Task):
            name = "my_task"
            ...

    Problems are the task's own (frozen, hashable) objects; steps are lines of text. Rows of a dataset carry the
    problem in :attr:`problem_columns` (Countdown: ``numbers`` and ``target``).
    """

    name: ClassVar[str] = ""
    #: Dataset columns that hold a problem (besides ``prompt``), read by :meth:`problem_from_row`.
    problem_columns: ClassVar[tuple[str, ...]] = ()
    #: Checker modes; the first is the strict one every accuracy headline uses.
    modes: ClassVar[tuple[str, ...]] = ("strict",)
    #: Reason categories a checker returns; the first is "correct".
    reasons: ClassVar[tuple[str, ...]] = ("correct",)
    #: Kinds of wrong steps the backtrack data is made of (the paper's three for Countdown).
    error_types: ClassVar[tuple[str, ...]] = ()
    #: Default weights of :attr:`error_types` in backtrack data (``error_mix`` of the data recipe overrides them).
    default_error_mix: ClassVar[tuple[float, ...]] = ()
    #: The generator's options: a dataclass whose fields (with ``help`` metadata) are YAML keys of the data recipe
    #: beside ``recipes/build_dataset.py``'s own. It must have a ``seed`` field (the held-out split and the problems
    #: derive from it) and may have a ``validate()`` that raises ValueError naming the field and the fix.
    config_class: ClassVar[type | None] = None
    #: ``datasets`` feature of each of :attr:`problem_columns` (e.g. ``{"target": Value("int64")}``).
    problem_features: ClassVar[Mapping[str, Any]] = {}
    #: What each of :attr:`problem_columns` holds, for the dataset card.
    column_descriptions: ClassVar[Mapping[str, str]] = {}
    #: Short table headers of :attr:`reasons` (default: the reason with spaces).
    reason_labels: ClassVar[Mapping[str, str]] = {}
    #: Columns of :meth:`diagnose` for the evaluation table: ``(key, header)`` pairs (values are shares, 0..1).
    diagnosis_columns: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: A sentence explaining :attr:`diagnosis_columns` under the evaluation table.
    diagnosis_text: ClassVar[str] = ""
    #: Published figures the study report prints beside its own: ``{"label": column header, "note": where they come
    #: from, "table": {(model, decoder key): (seen, new)}, "rounds": {"seen": (...), "new": (...)}}`` (Countdown:
    #: the paper's Table 1).
    reference_results: ClassVar[Mapping[str, Any]] = {}
    #: Folder name of the task's ``evaluate`` metric under ``metrics/`` (None: the checkers alone).
    metric_name: ClassVar[str | None] = None

    # -- problems and text ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def format_prompt(self, problem) -> str:
        """The question text, ending with :data:`RESPONSE_HEADER`."""

    @abc.abstractmethod
    def parse_prompt(self, text: str):
        """The problem of a prompt; a ValueError naming the expected format if ``text`` is not one."""

    @abc.abstractmethod
    def problem_from_row(self, row: Mapping[str, Any]):
        """The problem of a dataset row (its :attr:`problem_columns`)."""

    @abc.abstractmethod
    def problem_to_row(self, problem) -> dict[str, Any]:
        """The :attr:`problem_columns` of a problem, as stored in a dataset row."""

    def problem_key(self, problem) -> Hashable:
        """What makes two problems the same one (held-out problems are compared by it)."""
        return problem

    @abc.abstractmethod
    def format_step(self, step) -> str:
        """One step as its line (no newline)."""

    @abc.abstractmethod
    def parse_step(self, line: str):
        """The step a line spells, or None if the line is not a well-formed step."""

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

    # -- solving and checking ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def solve(self, problem, rng: random.Random | None = None) -> list | None:
        """An optimal step path (None if the problem has no solution); ``rng`` picks among equally short ones."""

    @abc.abstractmethod
    def is_solvable_after(self, problem, steps: Sequence) -> bool:
        """Whether the problem can still be solved after the (legal) ``steps``."""

    @abc.abstractmethod
    def check(self, problem, response: str, mode: str = "strict") -> Verdict:
        """Judge a response (text after :data:`RESPONSE_HEADER`); ``mode`` is one of :attr:`modes`."""

    # -- data -------------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def iter_problems(self, config: Any, split: str, rng: random.Random) -> Iterator:
        """Problems of ``split`` (``train``, ``test_seen`` or ``test_new``) for the task's generator ``config``."""

    @abc.abstractmethod
    def make_error(self, error_type: str, problem, prefix: Sequence, rng: random.Random):
        """A wrong step of kind ``error_type`` after the correct ``prefix``, or None if there is none."""

    def seed_text(self, problem) -> str:
        """A stable text of a problem, from which the data builder derives the problem's own seeds."""
        return json.dumps(self.problem_to_row(problem), sort_keys=True)

    def sample_error_type(self, rng: random.Random, mix: Sequence[float]) -> str:
        """Draw one of :attr:`error_types` with weights ``mix``."""
        return rng.choices(self.error_types, weights=mix, k=1)[0]

    def make_backtrack_example(self, problem, solution: Sequence, error_type: str, rng: random.Random):
        """``(prefix, wrong_step)``: the first k steps of ``solution`` (k uniform) and an error of ``error_type`` at
        step k; the other positions are tried in a random order when it is impossible there; None if it is
        impossible everywhere."""
        first = rng.randrange(len(solution))
        rest = [k for k in range(len(solution)) if k != first]
        rng.shuffle(rest)
        for k in [first, *rest]:
            wrong = self.make_error(error_type, problem, list(solution[:k]), rng)
            if wrong is not None:
                return list(solution[:k]), wrong
        return None

    def generate_shard(self, config: Any, split: str, n: int, seed: int) -> list:
        """``n`` problems of ``split``, a function of the arguments only (worker processes call it per shard).

        Problems may repeat across shards: the data builder keeps the first of each :meth:`problem_key`."""
        stream = self.iter_problems(config, split, random.Random(seed))
        return [next(stream) for _ in range(n)]

    def count_problems(self, config: Any, split: str) -> int | None:
        """How many distinct problems ``split`` has, when cheap to count (None: many), so small settings fail fast."""
        return None

    def describe_splits(self, config: Any) -> list[str]:
        """Markdown lines for the dataset card: what is held out for ``test_new`` (e.g. the held-out targets)."""
        return []

    def diagnose(self, problems: Sequence, completions: Sequence[str]) -> dict[str, float | None]:
        """Task-specific shares of the chosen answers for the evaluation table (e.g. Countdown's step arithmetic)."""
        return {}

    def limiting_factor(self, diagnosis: Mapping[str, Any], accuracy: float, oracle: float | None) -> str:
        """One line: what limits a decoder whose answers got ``diagnosis`` (see :meth:`diagnose`)?"""
        if oracle is not None and oracle - accuracy >= 0.05:
            return (
                f"selection limits the search: a right answer is among the candidates for {100 * oracle:.1f}% vs "
                f"{100 * accuracy:.1f}% chosen"
            )
        return "search limits the model: the right path is not among the candidates"

    def fact_probe(self, model, tokenizer, train_rows, options: Mapping[str, Any]) -> dict | None:
        """The task's single-step probe of a model (Countdown: facts ``a<op>b=`` inside vs held out from the training
        steps), or None when the task has none; ``options`` are the evaluation's ``probe_*`` arguments."""
        return None

    def tokenizer_phrases(self) -> tuple[str, ...]:
        """Phrases a task tokenizer keeps as single tokens (the frame's markers; a task may add its own)."""
        return ("###Question:", "###Response:", GOAL_MARKER, BACKTRACK_TOKEN)

    def card_text(self) -> str:
        """A paragraph for dataset and model cards: what the task is and how its answers are written."""
        return f"Task `{self.name}`."


def shard_seed(seed: int, split: str, shard: int) -> int:
    """A stable 63-bit seed for shard ``shard`` of split ``split`` (same on every machine and Python version)."""
    digest = hashlib.sha256(f"{seed}/{split}/{shard}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``task: <cls.name>`` in every recipe."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered.")
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"A task named {cls.name!r} is already registered ({TASKS[cls.name].__name__}).")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str | Task = "countdown") -> Task:
    """The registered task ``name`` (an instance is returned as is); a ValueError lists the known tasks."""
    if isinstance(name, Task):
        return name
    from backtrack_trl.tasks import countdown, sudoku  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known tasks: {sorted(TASKS)}. Register one with @register_task.")
    return TASKS[name]()
