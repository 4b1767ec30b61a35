"""Build the Countdown SFT datasets: optimal rows and backtrack rows over the same questions, plus two test splits.

Splits (see the dataset row contract in the README):

- ``test_seen``: problems with *seen* targets, generated first; ``test_new``: problems with held-out targets.
- ``train``: problems with seen targets, none of which is a test problem. Two problems are the same when their
  numbers are the same multiset and their targets are equal (:func:`backtrack_trl.tasks.countdown.generator.problem_key`), so a
  reordering of a test problem's numbers never appears in train. Train problems are distinct from each other too.
- Every train question gets one ``optimal`` row and, in ``mode="backtrack"``, ``backtrack_ratio`` backtrack rows on
  average (``0.5``: half the questions get one; ``2``: every question gets two with different error draws).
  ``mode="optimal"`` keeps only the optimal rows. Test splits hold one optimal row per problem.

Determinism: problems are drawn in fixed shards of :data:`SHARD_SIZE` with seeds derived from ``seed`` (and the
split), the solution path and the error draws of a question come from seeds derived from ``seed`` and the problem
itself. So the dataset depends only on the settings, never on ``num_proc``, and the optimal and backtrack datasets
built with the same seed and problem settings contain the same questions, the same optimal solutions and the same test
splits (the comparison of a baseline and a backtrack model is paired). Asking for more train questions keeps the
first ones.

Usage:

```python
from backtrack_trl.data import BuildDatasetArguments, build_countdown_dataset

args = BuildDatasetArguments(
    num_train_questions=20, num_test=5, num_numbers=3, max_number=20, min_target=1, max_target=100, num_proc=1
)
dataset = build_countdown_dataset(args)  # DatasetDict(train=40 rows, test_seen=5, test_new=5)
row = dataset["train"][1]  # a backtrack row
assert row["completion"] == row["prefix"] + row["wrong_step"] + "<backtrack>"
```
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations_with_replacement

import pyarrow as pa
from datasets import Dataset, DatasetDict, DatasetInfo, Features, List, Value
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from .tasks import get_task
from .tasks.countdown.error_steps import ERROR_TYPES, make_backtrack_example, sample_error_type
from .tasks.countdown.format import (
    BACKTRACK_TOKEN,
    Problem,
    Step,
)
from .tasks.countdown.generator import CountdownConfig, generate_problems_shard, problem_key, shard_seed, split_targets
from .tasks.countdown.solver import reachable_values, solve


MODES = ("backtrack", "optimal")
SOLUTION_ORDERS = ("random", "canonical")
# Problems per shard. Part of the dataset definition (shard seeds are derived per shard index), hence not an option.
SHARD_SIZE = 1000
# Draws of (error type, position) per backtrack row before the row is given up (counted in the card).
MAX_ERROR_DRAWS = 8

FEATURES = Features(
    {
        "numbers": List(Value("int64")),
        "target": Value("int64"),
        "prompt": Value("string"),
        "completion": Value("string"),
        "kind": Value("string"),
        "error_type": Value("string"),
        "prefix": Value("string"),
        "wrong_step": Value("string"),
    }
)
COLUMN_DESCRIPTIONS = {
    "numbers": "the problem's numbers, in prompt order",
    "target": "the number to reach",
    "prompt": "`###Question: numbers [..]->target T\\n###Response:\\n`",
    "completion": "optimal: the steps then `Goal Reached!`; backtrack: correct prefix, one wrong step, `<backtrack>` "
    "(no EOS text: the tokenizer side appends EOS)",
    "kind": "`optimal` or `backtrack`",
    "error_type": "`exploration`, `computational`, `rule_violation` (backtrack rows) or empty (optimal rows)",
    "prefix": "the correct steps before the wrong step, one per line (optimal rows: the whole completion)",
    "wrong_step": "the wrong line including its newline (empty for optimal rows); masked out of the loss",
}


@dataclass
class BuildDatasetArguments:
    """Options of ``recipes/build_dataset.py`` (YAML keys of ``recipes/<scale>/data/config_*.yaml``)."""

    output_dir: str = field(
        default="data/countdown-tiny/backtrack",
        metadata={"help": "Dataset folder to write (Hub layout: README.md + data/<split>-*.parquet)."},
    )
    num_train_questions: int = field(
        default=20_000,
        metadata={
            "help": "Distinct training questions. Rows = questions x (1 + backtrack_ratio) in backtrack mode, "
            "= questions in optimal mode (the paper: 250,000 questions -> 500,000 rows at ratio 1)."
        },
    )
    num_test: int = field(default=500, metadata={"help": "Problems in each test split (test_seen and test_new)."})
    num_numbers: int = field(default=3, metadata={"help": "Numbers per problem (the paper: 4)."})
    min_number: int = field(default=1, metadata={"help": "Smallest number (inclusive)."})
    max_number: int = field(default=20, metadata={"help": "Largest number (inclusive; the paper: 99)."})
    min_target: int = field(default=1, metadata={"help": "Smallest target (inclusive; the paper: 10)."})
    max_target: int = field(default=100, metadata={"help": "Largest target (inclusive; the paper: 100)."})
    new_target_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of the targets held out for test_new (the paper: 9 of 91)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the target split, the problems and the error draws."})
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
    error_mix: str = field(
        default="1:2:2",
        metadata={
            "help": "Weights of the error types exploration:computational:rule_violation (the paper: 1:2:2). "
            'Quote it in YAML ("1:2:2"): unquoted, YAML reads 1:2:2 as a base-60 number.'
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

    def countdown_config(self) -> CountdownConfig:
        return CountdownConfig(
            num_numbers=self.num_numbers,
            min_number=self.min_number,
            max_number=self.max_number,
            min_target=self.min_target,
            max_target=self.max_target,
            new_target_fraction=self.new_target_fraction,
            seed=self.seed,
        ).validate()

    def validate(self) -> BuildDatasetArguments:
        """Raise ValueError naming the bad option and the fix; return self."""
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
        parse_error_mix(self.error_mix)
        self.countdown_config()
        return self


def parse_error_mix(error_mix: str | Sequence[float]) -> tuple[float, float, float]:
    """``"1:2:2"`` (or a sequence of 3 numbers) -> weights of (exploration, computational, rule_violation)."""
    fix = f'use three non-negative weights for {"/".join(ERROR_TYPES)} with a positive sum, e.g. "1:2:2"'
    if isinstance(error_mix, (list, tuple)):
        parts = list(error_mix)
    elif isinstance(error_mix, str):
        parts = error_mix.split(":")
    else:
        raise ValueError(
            f"error_mix={error_mix!r} is not a string like '1:2:2'; {fix} (in YAML write it quoted: an unquoted "
            f"1:2:2 is read as the base-60 number 3722)."
        )
    try:
        weights = tuple(float(part) for part in parts)
    except (TypeError, ValueError):
        raise ValueError(f"error_mix={error_mix!r} is malformed; {fix}.") from None
    if (
        len(weights) != len(ERROR_TYPES)
        or any(not w >= 0 or not math.isfinite(w) for w in weights)
        or sum(weights) <= 0
    ):
        raise ValueError(f"error_mix={error_mix!r} is malformed; {fix}.")
    return weights


def count_distinct_problems(
    config: CountdownConfig, targets: Sequence[int], max_multisets: int = 20_000
) -> int | None:
    """Exact number of distinct solvable problems (numbers multiset, target) with a target in ``targets``.

    None when the space has more than ``max_multisets`` number multisets (too slow to enumerate, and large anyway).
    """
    span = config.max_number - config.min_number + 1
    if math.comb(span + config.num_numbers - 1, config.num_numbers) > max_multisets:
        return None
    wanted = set(targets)
    numbers = range(config.min_number, config.max_number + 1)
    return sum(len(reachable_values(ms) & wanted) for ms in combinations_with_replacement(numbers, config.num_numbers))


def check_problem_space(args: BuildDatasetArguments, seen_targets: Sequence[int], new_targets: Sequence[int]) -> None:
    """Fail fast, with the counts, when small settings cannot give that many distinct problems."""
    config = args.countdown_config()
    if args.num_test and not new_targets:
        raise ValueError(
            f"The test_new split needs held-out targets but new_target_fraction={args.new_target_fraction} leaves "
            f"none; raise new_target_fraction (e.g. 0.1) or set num_test: 0."
        )
    for needed, targets, what in (
        (args.num_train_questions + args.num_test, seen_targets, "num_train_questions + num_test (seen targets)"),
        (args.num_test, new_targets, "num_test (held-out targets)"),
    ):
        available = count_distinct_problems(config, targets) if needed else None
        if available is not None and needed > available:
            raise ValueError(
                f"Only {available} distinct solvable problems exist for {what} with {args.num_numbers} numbers in "
                f"{args.min_number}..{args.max_number} and targets {args.min_target}..{args.max_target}, but "
                f"{needed} are needed. Lower num_train_questions/num_test or widen the number/target ranges."
            )


def question_seed(seed: int, purpose: str, problem: Problem) -> int:
    """A stable seed for one question (independent of its position, its shard and the worker that builds it)."""
    digest = hashlib.sha256(f"{seed}/{purpose}/{list(problem.numbers)}/{problem.target}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def optimal_row(problem: Problem, solution: Sequence[Step]) -> dict:
    """A Countdown solved row (:meth:`backtrack_trl.tasks.Task.optimal_row`)."""
    return get_task("countdown").optimal_row(problem, solution)


def backtrack_row(problem: Problem, prefix: Sequence[Step], wrong_step: Step, error_type: str) -> dict:
    """A Countdown backtrack row (:meth:`backtrack_trl.tasks.Task.backtrack_row`)."""
    row = get_task("countdown").backtrack_row(problem, prefix, wrong_step, error_type)
    assert row["completion"] == row["prefix"] + row["wrong_step"] + BACKTRACK_TOKEN
    return row


def build_rows(
    problem: Problem,
    solution: Sequence[Step],
    mode: str = "backtrack",
    ratio: float = 1.0,
    error_mix: Sequence[float] = (1, 2, 2),
    rng: random.Random | None = None,
) -> list[dict]:
    """The rows of one training question: the optimal row first, then its backtrack rows (``mode="backtrack"``).

    The number of backtrack rows is ``floor(ratio)`` plus one more with probability ``ratio - floor(ratio)``. Each
    draws an error type from ``error_mix`` and a position (:func:`make_backtrack_example`); a draw that is
    impossible for this question, or that repeats an earlier backtrack row of the question, is redrawn up to
    :data:`MAX_ERROR_DRAWS` times, then the row is skipped (rare; see the dataset card's counts).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    rows = [optimal_row(problem, solution)]
    if mode == "optimal" or ratio <= 0:
        return rows
    rng = rng if rng is not None else random.Random(question_seed(0, "errors", problem))
    whole = int(ratio)
    count = whole + (1 if rng.random() < ratio - whole else 0)
    completions = set()
    for _ in range(count):
        for _ in range(MAX_ERROR_DRAWS):
            error_type = sample_error_type(rng, error_mix)
            example = make_backtrack_example(problem, solution, error_type, rng)
            if example is None:
                continue
            row = backtrack_row(problem, example[0], example[1], error_type)
            if row["completion"] not in completions:
                completions.add(row["completion"])
                rows.append(row)
                break
    return rows


def _build_shard(task: tuple) -> tuple[list[tuple], list[int], pa.Table]:
    """Worker: the first ``limit`` problems of one shard and their rows, as an Arrow table (compact to send back).

    Returns ``(keys, question_of_row, table)``. Picklable, and a function of the task only, so it gives the same
    result in any process.
    """
    config, targets, shard_index, limit, split, settings = task
    problems = generate_problems_shard(config, targets, limit, shard_seed=shard_seed(config.seed, split, shard_index))
    keys, question_of_row, rows = [], [], []
    for index, problem in enumerate(problems):
        solution_rng = None
        if settings["solution_order"] == "random":
            solution_rng = random.Random(question_seed(config.seed, "solution", problem))
        solution = solve(problem.numbers, problem.target, rng=solution_rng)
        if split == "train":
            question_rows = build_rows(
                problem,
                solution,
                mode=settings["mode"],
                ratio=settings["backtrack_ratio"],
                error_mix=settings["error_mix"],
                rng=random.Random(question_seed(config.seed, "errors", problem)),
            )
        else:
            question_rows = [optimal_row(problem, solution)]
        keys.append(problem_key(problem))
        question_of_row.extend([index] * len(question_rows))
        rows.extend(question_rows)
    return keys, question_of_row, pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)


# Give up on a split only after this many draws in a row brought under 1% new problems.
FRUITLESS_DRAWS = 2000


def _collect_split(
    split: str,
    n: int,
    config: CountdownConfig,
    targets: list[int],
    settings: dict,
    exclude: set,
    pool,
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
        tasks = [(config, targets, next_shard + i, limit, split, settings) for i, limit in enumerate(limits)]
        next_shard += len(tasks)
        results = pool.imap(_build_shard, tasks) if pool is not None else map(_build_shard, tasks)
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
                f"num_train_questions/num_test or widen the number/target ranges."
            )
    progress.close()
    table = pa.concat_tables(tables) if tables else FEATURES.arrow_schema.empty_table()
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=FEATURES)), keys


def dataset_card(args: BuildDatasetArguments, dataset: DatasetDict, stats: dict) -> str:
    """Markdown body of the dataset card: what the rows are, the settings, the counts."""
    not_settings = (
        "output_dir",
        "num_proc",
        "max_shard_size",
        "overwrite",
        "push_to_hub",
        "hub_dataset_id",
        "hub_private",
    )
    settings = {key: value for key, value in asdict(args).items() if key not in not_settings}
    lines = [
        f"# Countdown self-backtracking SFT data ({args.mode})",
        "",
        "Built with backtrack-trl `recipes/build_dataset.py`, following "
        "[Self-Backtracking](https://arxiv.org/abs/2502.04404) (Yang et al., 2025). Load it with "
        "`datasets.load_dataset(<this folder or repo>)`.",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
        *[f"| `{name}` | {text} |" for name, text in COLUMN_DESCRIPTIONS.items()],
        "",
        "Invariant: backtrack rows: `completion == prefix + wrong_step + '<backtrack>'`; optimal rows: "
        "`completion == prefix`. Test splits hold one optimal row per problem; no test problem (numbers as a "
        "multiset, and target) is in train; `test_new` only uses the held-out targets.",
        "",
        "## Counts",
        "",
        "| split | rows | questions | optimal | backtrack | exploration | computational | rule_violation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, ds in dataset.items():
        kinds = Counter(ds["kind"])
        errors = Counter(ds["error_type"])
        lines.append(
            f"| {split} | {len(ds):,} | {stats['questions'][split]:,} | {kinds['optimal']:,} | {kinds['backtrack']:,}"
            f" | {errors['exploration']:,} | {errors['computational']:,} | {errors['rule_violation']:,} |"
        )
    lines += [
        "",
        f"Seen targets ({len(stats['seen_targets'])}): {stats['seen_targets']}",
        "",
        f"Held-out targets ({len(stats['new_targets'])}): {stats['new_targets']}",
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


def build_countdown_dataset(args: BuildDatasetArguments, return_stats: bool = False):
    """Build ``DatasetDict(train, test_seen, test_new)`` for ``args`` (see the module docstring for the rules).

    With ``return_stats=True`` returns ``(dataset, stats)``; ``stats`` holds the targets, counts and build time.
    """
    start = time.perf_counter()
    args.validate()
    config = args.countdown_config()
    seen_targets, new_targets = split_targets(config)
    check_problem_space(args, seen_targets, new_targets)
    settings = {
        "mode": args.mode,
        "backtrack_ratio": float(args.backtrack_ratio),
        "error_mix": parse_error_mix(args.error_mix),
        "solution_order": args.solution_order,
    }
    pool = None
    if args.num_proc > 1:
        # fork shares the warm solver caches and needs no re-import; spawn is the fallback where fork is missing.
        methods = multiprocessing.get_all_start_methods()
        pool = multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(args.num_proc)
    try:
        test_seen, test_seen_keys = _collect_split(
            "test_seen", args.num_test, config, seen_targets, settings, set(), pool
        )
        test_new, _ = _collect_split("test_new", args.num_test, config, new_targets, settings, set(), pool)
        train, _ = _collect_split(
            "train", args.num_train_questions, config, seen_targets, settings, test_seen_keys, pool
        )
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    dataset = DatasetDict({"train": train, "test_seen": test_seen, "test_new": test_new})
    stats = {
        "seen_targets": seen_targets,
        "new_targets": new_targets,
        "questions": {"train": args.num_train_questions, "test_seen": args.num_test, "test_new": args.num_test},
        "seconds": time.perf_counter() - start,
    }
    return (dataset, stats) if return_stats else dataset


def build_and_save(args: BuildDatasetArguments) -> DatasetDict:
    """What ``recipes/build_dataset.py`` runs: build, write the Hub-layout folder, optionally push it."""
    from .atomic_io import check_output_dir
    from .hub_dataset import push_hub_dataset, write_hub_dataset

    args.validate()
    # Fail before minutes of generation, not after.
    check_output_dir(args.output_dir, args.overwrite, what="dataset output_dir")
    dataset, stats = build_countdown_dataset(args, return_stats=True)
    write_hub_dataset(dataset, args.output_dir, card=dataset_card(args, dataset, stats), overwrite=args.overwrite)
    counts = ", ".join(f"{split}: {len(ds):,} rows" for split, ds in dataset.items())
    print(f"Wrote {args.output_dir} ({counts}) in {stats['seconds']:.1f} s with num_proc={args.num_proc}.")
    if args.push_to_hub:
        push_hub_dataset(args.output_dir, args.hub_dataset_id, private=args.hub_private)
        print(f"Pushed {args.output_dir} to https://huggingface.co/datasets/{args.hub_dataset_id}")
    return dataset


__all__ = [
    "BuildDatasetArguments",
    "FEATURES",
    "build_and_save",
    "build_countdown_dataset",
    "build_rows",
    "count_distinct_problems",
    "dataset_card",
    "parse_error_mix",
    "question_seed",
]
