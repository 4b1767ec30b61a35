"""The options of ``recipes/build_dataset.py`` (``BuildDatasetArguments``), their parser and their checks.

A data recipe's command line holds the builder's own options (this module) and the task's generator options (the
task's ``config_class``, e.g. Countdown's ``num_numbers``): ``parse_data_args`` reads ``--task`` first, then parses
both and validates them. ``parse_error_mix`` reads ``"1:2:2"`` into the weights of the task's error types.

Usage:

```python
from backtrack_trl.data.build_config import parse_data_args, parse_error_mix

args, config = parse_data_args(["--config", "recipes/countdown-tiny/data/config_backtrack.yaml"])
print(args.mode, args.num_train_questions, config.num_numbers)
assert parse_error_mix("1:2:2", "countdown") == (1.0, 2.0, 2.0)
```
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backtrack_trl.errors import recipe_option
from backtrack_trl.tasks import Task, get_task


MODES = ("backtrack", "optimal")
SOLUTION_ORDERS = ("random", "canonical")


@dataclass
class BuildDatasetArguments:
    """Options of ``recipes/build_dataset.py`` (YAML keys of ``recipes/<scale>/data/config_*.yaml``) besides the
    task's generator options (:attr:`backtrack_trl.tasks.Task.config_class`, e.g. Countdown's ``num_numbers``)."""

    output_dir: str = field(
        default="data/countdown-tiny/backtrack",
        metadata={"help": "Dataset folder to write (Hub layout: README.md + data/<split>-*.parquet)."},
    )
    task: str = field(
        default="countdown",
        metadata={
            "help": "Registered task (backtrack_trl.tasks): its generator options are YAML keys / flags too "
            "(`--task sudoku --help` lists Sudoku's)."
        },
    )
    num_train_questions: int = field(
        default=20_000,
        metadata={
            "help": "Distinct training questions. Rows = questions x (1 + backtrack_ratio) in backtrack mode, "
            "= questions in optimal mode (the paper: 250,000 questions -> 500,000 rows at ratio 1)."
        },
    )
    num_test: int = field(default=500, metadata={"help": "Problems in each test split (test_seen and test_new)."})
    mode: str = field(
        default="backtrack",
        metadata={"help": "'backtrack': optimal + backtrack rows; 'optimal': optimal rows only (the SFT baseline)."},
    )
    backtrack_ratio: float = field(
        default=1.0,
        metadata={
            "help": "Backtrack rows per question in backtrack mode (optimal:backtrack = 1:ratio; the paper uses 1, "
            "ablates 0.5..4). Fractions give a backtrack row to that share of the questions."
        },
    )
    error_mix: str | None = field(
        default=None,
        metadata={
            "help": "Weights of the task's error types, in the task's order (Countdown: exploration:computational:"
            "rule_violation, the paper's 1:2:2; Sudoku: exploration:rule_violation:filled_cell, 1:1:1); default the "
            'task\'s. Quote it in YAML ("1:2:2"): unquoted, YAML reads 1:2:2 as a base-60 number.'
        },
    )
    solution_order: str = field(
        default="random",
        metadata={
            "help": "'random': each question's optimal path is a solution drawn with a per-question seed (varied "
            "step orders); 'canonical': the solver's deterministic first solution."
        },
    )
    num_proc: int = field(default=2, metadata={"help": "Worker processes (the result does not depend on it)."})
    max_shard_size: str = field(default="500MB", metadata={"help": "Largest parquet shard, as push_to_hub."})
    overwrite: bool = field(default=False, metadata={"help": "Replace output_dir if it exists."})
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload the written folder to hub_dataset_id (needs network and a token)."}
    )
    hub_dataset_id: str | None = field(
        default=None, metadata={"help": "Dataset repo for --push_to_hub, e.g. your-name/countdown-backtrack."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub dataset repo as private."})

    def validate(self, config: Any = None) -> BuildDatasetArguments:
        """Raise ValueError naming the bad option and the fix (also for the task's ``config``); return self."""
        task = get_task(self.task)
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not one of {MODES}.")
        if self.solution_order not in SOLUTION_ORDERS:
            raise ValueError(f"solution_order={self.solution_order!r} is not one of {SOLUTION_ORDERS}.")
        if self.num_train_questions < 0 or self.num_test < 0:
            raise ValueError(
                f"num_train_questions={self.num_train_questions} and num_test={self.num_test} must be >= 0."
            )
        if not (self.backtrack_ratio >= 0 and math.isfinite(self.backtrack_ratio)):
            raise ValueError(f"backtrack_ratio={self.backtrack_ratio} must be a finite number >= 0 (e.g. 1 or 0.5).")
        if self.num_proc < 1:
            raise ValueError(f"num_proc={self.num_proc} must be >= 1.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("--push_to_hub needs --hub_dataset_id (e.g. your-name/countdown-backtrack).")
        parse_error_mix(self.error_mix, task)
        if config is not None:
            check_task_config(task, config)
        return self


def check_task_config(task: Task, config: Any) -> Any:
    """``config`` must be the task's generator options (and valid); return it."""
    if task.config_class is None or not isinstance(config, task.config_class):
        raise ValueError(
            f"Task {task.name!r} takes its generator options as {getattr(task.config_class, '__name__', None)}, "
            f"got {type(config).__name__}."
        )
    if hasattr(config, "validate"):
        config.validate()
    return config


def task_of_recipe(argv: Sequence[str]) -> str:
    """The task a data recipe's command line names: ``--task``, else the ``task:`` of its ``--config``, else
    countdown (the parser needs it first: the task's generator options are part of the command line)."""
    return recipe_option(argv, "task") or "countdown"


def parse_data_args(argv: Sequence[str] | None = None) -> tuple[BuildDatasetArguments, Any]:
    """``(args, task config)`` of a data recipe command line (``--config file.yaml`` and flags), validated."""
    from backtrack_trl.errors import recipe_parser  # one-line command-line errors

    argv = list(sys.argv[1:] if argv is None else argv)
    task = get_task(task_of_recipe(argv))
    args, config = recipe_parser((BuildDatasetArguments, task.config_class)).parse_args_and_config(argv)
    return args.validate(config), config


def parse_error_mix(error_mix: str | Sequence[float] | None, task: Task | str = "countdown") -> tuple[float, ...]:
    """``"1:2:2"`` (or a sequence of numbers, or None for the task's default) -> weights of the task's error types."""
    task = get_task(task)
    if error_mix is None:
        return tuple(float(w) for w in task.default_error_mix)
    example = ":".join(str(int(w)) if float(w).is_integer() else str(w) for w in task.default_error_mix)
    fix = (
        f"use {len(task.error_types)} non-negative weights for {'/'.join(task.error_types)} with a positive sum, "
        f'e.g. "{example}"'
    )
    if isinstance(error_mix, (list, tuple)):
        parts = list(error_mix)
    elif isinstance(error_mix, str):
        parts = error_mix.split(":")
    else:
        raise ValueError(
            f"error_mix={error_mix!r} is not a string like '{example}'; {fix} (in YAML write it quoted: an unquoted "
            f"1:2:2 is read as the base-60 number 3722)."
        )
    try:
        weights = tuple(float(part) for part in parts)
    except (TypeError, ValueError):
        raise ValueError(f"error_mix={error_mix!r} is malformed; {fix}.") from None
    if (
        len(weights) != len(task.error_types)
        or any(not w >= 0 or not math.isfinite(w) for w in weights)
        or sum(weights) <= 0
    ):
        raise ValueError(f"error_mix={error_mix!r} is malformed; {fix}.")
    return weights


def check_problem_space(args: BuildDatasetArguments, config: Any) -> None:
    """Fail fast, with the counts, when small settings cannot give that many distinct problems."""
    task = get_task(args.task)
    for needed, split, what in (
        (args.num_train_questions + args.num_test, "train", "num_train_questions + num_test (seen problems)"),
        (args.num_test, "test_new", "num_test (held-out problems)"),
    ):
        available = task.count_problems(config, split) if needed else None
        if available is not None and needed > available:
            raise ValueError(
                f"Only {available} distinct solvable problems exist for {what} with the {task.name} settings "
                f"{config}, but {needed} are needed. Lower num_train_questions/num_test or {task.widen_hint(config)}."
            )
