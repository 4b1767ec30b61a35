"""Build a task's SFT datasets: optimal rows and backtrack rows over the same questions, plus two test splits.

The task (``task: countdown`` by default, see :mod:`backtrack_trl.tasks`) owns its problems, their generator options
(the YAML keys beside the builder's own, :mod:`backtrack_trl.data.build_config`; e.g. Countdown's ``num_numbers`` or
Sudoku's ``size``), its solver and its wrong-step makers; this module owns the splits, the row contract, determinism
and the dataset card.

Splits (see the dataset row contract in docs/data.md):

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
from backtrack_trl.data.build_config import BuildDatasetArguments
from backtrack_trl.data.builder import build_dataset
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
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from backtrack_trl.data.build_config import MODES, BuildDatasetArguments, check_problem_space, parse_error_mix
from backtrack_trl.tasks import BACKTRACK_TOKEN, Task, get_task
from backtrack_trl.tasks.base import shard_seed


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
                f"num_train_questions/num_test or {task.widen_hint(config)}."
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
    "build_and_save",
    "build_dataset",
    "build_rows",
    "dataset_card",
    "question_seed",
    "row_features",
]
