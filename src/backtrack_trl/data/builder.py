"""Build a task's SFT datasets: optimal rows and backtrack rows over the same questions, plus two test splits.

The task (``task: countdown`` by default, see :mod:`backtrack_trl.tasks`) owns its problems, their generator options
(the YAML keys beside this module's own, e.g. Countdown's ``num_numbers`` or Sudoku's ``size``), its solver and its
wrong-step makers; this module owns the splits, the row contract, determinism and the dataset card.

Splits (see the dataset row contract in the README):

- ``test_seen``: problems of the seen part of the problem space, generated first; ``test_new``: problems of the part
  the task holds out (Countdown: held-out targets; Sudoku: held-out solution grids).
- ``train``: seen problems, none of which is a test problem (two problems are the same when their
  :meth:`~backtrack_trl.tasks.Task.problem_key` is equal: for Countdown the numbers as a multiset and the target, so
  a reordering of a test problem's numbers never appears in train). Train problems are distinct from each other too.
- Every train question gets one ``optimal`` row and, in ``mode="backtrack"``, ``backtrack_ratio`` backtrack rows on
  average (``0.5``: half the questions get one; ``2``: every question gets two with different error draws).
  ``mode="optimal"`` keeps only the optimal rows. Test splits hold one optimal row per problem.

Determinism: problems are drawn in fixed shards of :data:`SHARD_SIZE` with seeds derived from the generator's
``seed`` (and the split), the solution path and the error draws of a question come from seeds derived from the seed and
the problem itself. So the dataset depends only on the settings, never on ``num_proc``, and the optimal and backtrack
datasets built with the same seed and problem settings contain the same questions, the same optimal solutions and the
same test splits (the comparison of a baseline and a backtrack model is paired). Asking for more train questions keeps
the first ones.

Usage:

```python
from backtrack_trl.data.builder import BuildDatasetArguments, build_dataset
from backtrack_trl.tasks.countdown import CountdownConfig

args = BuildDatasetArguments(task="countdown", num_train_questions=20, num_test=5, num_proc=1)
config = CountdownConfig(num_numbers=3, max_number=20, min_target=1, max_target=100)
dataset = build_dataset(args, config)  # DatasetDict(train=40 rows, test_seen=5, test_new=5)
row = dataset["train"][1]  # a backtrack row
assert row["completion"] == row["prefix"] + row["wrong_step"] + "<backtrack>"
```
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from backtrack_trl.errors import recipe_option
from backtrack_trl.tasks import BACKTRACK_TOKEN, Task, get_task
from backtrack_trl.tasks.base import shard_seed


MODES = ("backtrack", "optimal")
SOLUTION_ORDERS = ("random", "canonical")
SPLITS = ("test_seen", "test_new", "train")
# Problems per shard. Part of the dataset definition (shard seeds are derived per shard index), hence not an option.
SHARD_SIZE = 1000
# Draws of (error type, position) per backtrack row before the row is given up (counted in the card).
MAX_ERROR_DRAWS = 8

ROW_FEATURES = {
    "prompt": Value("string"),
    "completion": Value("string"),
    "kind": Value("string"),
    "error_type": Value("string"),
    "prefix": Value("string"),
    "wrong_step": Value("string"),
}
COLUMN_DESCRIPTIONS = {
    "prompt": "the question, ending with `###Response:\\n`",
    "completion": "optimal: the steps then `Goal Reached!`; backtrack: correct prefix, one wrong step, `<backtrack>` "
    "(no EOS text: the tokenizer side appends EOS)",
    "kind": "`optimal` or `backtrack`",
    "error_type": "the kind of wrong step (backtrack rows) or empty (optimal rows)",
    "prefix": "the correct steps before the wrong step, one per line (optimal rows: the whole completion)",
    "wrong_step": "the wrong line including its newline (empty for optimal rows); masked out of the loss",
}


def row_features(task: Task) -> Features:
    """The columns of a task's dataset: its problem columns, then the row contract's."""
    return Features({**task.problem_features, **ROW_FEATURES})


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
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    task = get_task(task_of_recipe(argv))
    args, config = TrlParser((BuildDatasetArguments, task.config_class)).parse_args_and_config(argv)
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
                f"{config}, but {needed} are needed. Lower num_train_questions/num_test or widen the generator's "
                f"ranges."
            )


def question_seed(seed: int, purpose: str, problem: Any, task: Task | str = "countdown") -> int:
    """A stable seed for one question (independent of its position, its shard and the worker that builds it)."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{get_task(task).seed_text(problem)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def optimal_row(problem: Any, solution: Sequence, task: Task | str = "countdown") -> dict:
    """A solved row (:meth:`backtrack_trl.tasks.Task.optimal_row`)."""
    return get_task(task).optimal_row(problem, solution)


def backtrack_row(problem: Any, prefix: Sequence, wrong_step: Any, error_type: str, task="countdown") -> dict:
    """A backtrack row (:meth:`backtrack_trl.tasks.Task.backtrack_row`)."""
    row = get_task(task).backtrack_row(problem, prefix, wrong_step, error_type)
    assert row["completion"] == row["prefix"] + row["wrong_step"] + BACKTRACK_TOKEN
    return row


def build_rows(
    problem: Any,
    solution: Sequence,
    mode: str = "backtrack",
    ratio: float = 1.0,
    error_mix: Sequence[float] | None = None,
    rng: random.Random | None = None,
    task: Task | str = "countdown",
) -> list[dict]:
    """The rows of one training question: the optimal row first, then its backtrack rows (``mode="backtrack"``).

    The number of backtrack rows is ``floor(ratio)`` plus one more with probability ``ratio - floor(ratio)``. Each
    draws an error type from ``error_mix`` (default: the task's) and a position
    (:meth:`~backtrack_trl.tasks.Task.make_backtrack_example`); a draw that is impossible for this question, or that
    repeats an earlier backtrack row of the question, is redrawn up to :data:`MAX_ERROR_DRAWS` times, then the row
    is skipped (rare; see the dataset card's counts).
    """
    task = get_task(task)
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    rows = [optimal_row(problem, solution, task)]
    if mode == "optimal" or ratio <= 0:
        return rows
    mix = parse_error_mix(error_mix, task)
    rng = rng if rng is not None else random.Random(question_seed(0, "errors", problem, task))
    whole = int(ratio)
    count = whole + (1 if rng.random() < ratio - whole else 0)
    completions = set()
    for _ in range(count):
        for _ in range(MAX_ERROR_DRAWS):
            error_type = task.sample_error_type(rng, mix)
            example = task.make_backtrack_example(problem, solution, error_type, rng)
            if example is None:
                continue
            row = backtrack_row(problem, example[0], example[1], error_type, task)
            if row["completion"] not in completions:
                completions.add(row["completion"])
                rows.append(row)
                break
    return rows


def _build_shard(work: tuple) -> tuple[list, list[int], pa.Table]:
    """Worker: the first ``limit`` problems of one shard and their rows, as an Arrow table (compact to send back).

    Returns ``(keys, question_of_row, table)``. Picklable, and a function of ``work`` only, so it gives the same
    result in any process.
    """
    task_name, config, shard_index, limit, split, settings = work
    task = get_task(task_name)
    problems = task.generate_shard(config, split, limit, shard_seed(config.seed, split, shard_index))
    keys, question_of_row, rows = [], [], []
    for index, problem in enumerate(problems):
        solution_rng = None
        if settings["solution_order"] == "random":
            solution_rng = random.Random(question_seed(config.seed, "solution", problem, task))
        solution = task.solve(problem, rng=solution_rng)
        if split == "train":
            question_rows = build_rows(
                problem,
                solution,
                mode=settings["mode"],
                ratio=settings["backtrack_ratio"],
                error_mix=settings["error_mix"],
                rng=random.Random(question_seed(config.seed, "errors", problem, task)),
                task=task,
            )
        else:
            question_rows = [optimal_row(problem, solution, task)]
        keys.append(task.problem_key(problem))
        question_of_row.extend([index] * len(question_rows))
        rows.extend(question_rows)
    return keys, question_of_row, pa.Table.from_pylist(rows, schema=row_features(task).arrow_schema)


# Give up on a split only after this many draws in a row brought under 1% new problems.
FRUITLESS_DRAWS = 2000


def _collect_split(
    task: Task, split: str, n: int, config: Any, settings: dict, exclude: set, pool
) -> tuple[Dataset, set]:
    """The first ``n`` distinct problems (not in ``exclude``) of the split's shard sequence, with their rows.

    Shards are requested in rounds: as many as the missing count needs (the last one cut to size). Duplicates
    (across shards, or test problems in train) are dropped and trigger another round. The rounds depend only on the
    data, never on the number of workers.
    """
    tables: list[pa.Table] = []
    keys: set = set()
    next_shard = 0
    fruitless = 0
    progress = tqdm(total=n, desc=f"Building {split}", unit="question", disable=n < 10 * SHARD_SIZE)
    while len(keys) < n:
        missing = n - len(keys)
        limits = [SHARD_SIZE] * (missing // SHARD_SIZE) + ([missing % SHARD_SIZE] if missing % SHARD_SIZE else [])
        work = [(task.name, config, next_shard + i, limit, split, settings) for i, limit in enumerate(limits)]
        next_shard += len(work)
        results = pool.imap(_build_shard, work) if pool is not None else map(_build_shard, work)
        added_in_round = 0
        for shard_keys, question_of_row, table in results:
            kept = set()
            for index, key in enumerate(shard_keys):
                if len(keys) < n and key not in keys and key not in exclude:
                    keys.add(key)
                    kept.add(index)
            rows = [row for row, question in enumerate(question_of_row) if question in kept]
            tables.append(table if len(rows) == len(question_of_row) else table.take(pa.array(rows, type=pa.int64())))
            added_in_round += len(kept)
            progress.update(len(kept))
        # Count draws that brought (almost) nothing new; small rounds near the end must not stop the build early.
        fruitless = fruitless + sum(limits) if added_in_round < 0.01 * sum(limits) else 0
        if len(keys) < n and fruitless >= FRUITLESS_DRAWS:
            # Near exhaustion the problems left are the rarely drawn ones (e.g. repeated numbers): stop, don't spin.
            raise ValueError(
                f"Found only {len(keys)} of the {n} distinct {split} problems asked for: the problem space of these "
                f"settings ({config}) is nearly exhausted (under 1% of the last {fruitless} draws were new). Lower "
                f"num_train_questions/num_test or widen the generator's ranges."
            )
    progress.close()
    features = row_features(task)
    table = pa.concat_tables(tables) if tables else features.arrow_schema.empty_table()
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features)), keys


def dataset_card(args: BuildDatasetArguments, dataset: DatasetDict, stats: dict, config: Any = None) -> str:
    """Markdown body of the dataset card: what the rows are, the settings, the counts."""
    task = get_task(args.task)
    not_settings = ("output_dir", "num_proc", "max_shard_size", "overwrite", "push_to_hub", "hub_dataset_id",
                    "hub_private")  # fmt: skip
    settings = {key: value for key, value in asdict(args).items() if key not in not_settings}
    settings["error_mix"] = ":".join(f"{w:g}" for w in parse_error_mix(args.error_mix, task))
    if config is not None:
        settings.update(asdict(config))
    descriptions = {**task.column_descriptions, **COLUMN_DESCRIPTIONS}
    descriptions["error_type"] = f"{', '.join(f'`{e}`' for e in task.error_types)} (backtrack rows) or empty"
    lines = [
        f"# {task.name.capitalize()} self-backtracking SFT data ({args.mode})",
        "",
        "Built with backtrack-trl `recipes/build_dataset.py`, following "
        "[Self-Backtracking](https://arxiv.org/abs/2502.04404) (Yang et al., 2025). Load it with "
        "`datasets.load_dataset(<this folder or repo>)`.",
        "",
        task.card_text(),
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
        *[f"| `{name}` | {text} |" for name, text in descriptions.items()],
        "",
        "Invariant: backtrack rows: `completion == prefix + wrong_step + '<backtrack>'`; optimal rows: "
        "`completion == prefix`. Test splits hold one optimal row per problem; no test problem is in train "
        "(compared by the task's problem key); `test_new` only holds problems of the held-out part.",
        "",
        "## Counts",
        "",
        "| split | rows | questions | optimal | backtrack | " + " | ".join(task.error_types) + " |",
        "|---|---|---|---|---|" + "---|" * len(task.error_types),
    ]
    for split, ds in dataset.items():
        kinds = Counter(ds["kind"])
        errors = Counter(ds["error_type"])
        cells = " | ".join(f"{errors[e]:,}" for e in task.error_types)
        lines.append(
            f"| {split} | {len(ds):,} | {stats['questions'][split]:,} | {kinds['optimal']:,} | {kinds['backtrack']:,}"
            f" | {cells} |"
        )
    if config is not None:
        lines += ["", *task.describe_splits(config)]
    lines += [
        "",
        "## Generator settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| `{key}` | `{value}` |" for key, value in settings.items()],
        f"| `shard_size` | `{SHARD_SIZE}` |",
        "",
        f"Built in {stats['seconds']:.1f} s with {args.num_proc} worker process(es) (the content does not depend on "
        "the number of workers).",
    ]
    return "\n".join(lines)


def build_dataset(args: BuildDatasetArguments, config: Any = None, return_stats: bool = False):
    """Build ``DatasetDict(train, test_seen, test_new)`` for ``args`` and the task's generator ``config`` (default:
    the task's ``config_class()``); see the module docstring for the rules.

    With ``return_stats=True`` returns ``(dataset, stats)``; ``stats`` holds the counts and build time.
    """
    start = time.perf_counter()
    task = get_task(args.task)
    config = task.config_class() if config is None else config
    args.validate(config)
    check_problem_space(args, config)
    settings = {
        "mode": args.mode,
        "backtrack_ratio": float(args.backtrack_ratio),
        "error_mix": parse_error_mix(args.error_mix, task),
        "solution_order": args.solution_order,
    }
    pool = None
    if args.num_proc > 1:
        # fork shares the warm solver caches and needs no re-import; spawn is the fallback where fork is missing.
        methods = multiprocessing.get_all_start_methods()
        pool = multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(args.num_proc)
    try:
        test_seen, test_seen_keys = _collect_split(task, "test_seen", args.num_test, config, settings, set(), pool)
        test_new, _ = _collect_split(task, "test_new", args.num_test, config, settings, set(), pool)
        train, _ = _collect_split(task, "train", args.num_train_questions, config, settings, test_seen_keys, pool)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    dataset = DatasetDict({"train": train, "test_seen": test_seen, "test_new": test_new})
    stats = {
        "questions": {"train": args.num_train_questions, "test_seen": args.num_test, "test_new": args.num_test},
        "seconds": time.perf_counter() - start,
    }
    return (dataset, stats) if return_stats else dataset


def build_and_save(args: BuildDatasetArguments, config: Any = None) -> DatasetDict:
    """What ``recipes/build_dataset.py`` runs: build, write the Hub-layout folder, optionally push it."""
    from backtrack_trl.atomic_io import check_output_dir
    from backtrack_trl.data.hub_layout import push_hub_dataset, write_hub_dataset

    task = get_task(args.task)
    config = task.config_class() if config is None else config
    args.validate(config)
    # Fail before minutes of generation, not after.
    check_output_dir(args.output_dir, args.overwrite, what="dataset output_dir")
    dataset, stats = build_dataset(args, config, return_stats=True)
    card = dataset_card(args, dataset, stats, config)
    write_hub_dataset(dataset, args.output_dir, card=card, overwrite=args.overwrite)
    counts = ", ".join(f"{split}: {len(ds):,} rows" for split, ds in dataset.items())
    print(f"Wrote {args.output_dir} ({counts}) in {stats['seconds']:.1f} s with num_proc={args.num_proc}.")
    if args.push_to_hub:
        push_hub_dataset(args.output_dir, args.hub_dataset_id, private=args.hub_private)
        print(f"Pushed {args.output_dir} to https://huggingface.co/datasets/{args.hub_dataset_id}")
    return dataset


__all__ = [
    "BuildDatasetArguments",
    "build_and_save",
    "build_dataset",
    "build_rows",
    "dataset_card",
    "parse_data_args",
    "parse_error_mix",
    "question_seed",
    "row_features",
    "task_of_recipe",
]
