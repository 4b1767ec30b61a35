"""One self-improvement harvest: search a pool of training problems, keep the paths the strict checker accepts.

The kept paths become the round's dataset (rows of kind ``optimal`` in the shared row contract), written as config
``round_<k>`` of a Hub-layout dataset folder with a card naming the source model, the search settings, the filter
and the counts. Test problems can never enter it: any pool problem that is also in a test split is an error.

Optionally the dataset also gets backtrack rows from the search's own wrong answers (``mistakes_per_problem``, see
:mod:`backtrack_trl.study.mistakes`) and rows replayed from the original training data (``replay_dataset``,
``replay_ratio`` times the harvested rows), so a round keeps teaching when to backtrack. Each row's ``source``
column says which: ``search``, ``mistake`` or ``replay``.

Usage:

```python
from backtrack_trl.study.harvest import harvest

stats = harvest(
    "models/countdown-tiny/backtrack-sft",
    problems=[{"numbers": [3, 5, 2], "target": 16}],
    output_folder="results/demo/round_datasets",
    config_name="round_1",
    search_options={"n": 16, "b": 1},
)
print(stats["kept"], stats["search_accuracy"])
```
"""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

from backtrack_trl.data.held_out import test_problem_keys
from backtrack_trl.errors import UserError, check_file
from backtrack_trl.study.harvest_args import HARVEST_METHODS, KEEP_RULES, HarvestArguments
from backtrack_trl.study.mistakes import count_error_types, mistake_rows
from backtrack_trl.tasks import BACKTRACK_TOKEN, get_task


logger = logging.getLogger(__name__)


class EmptyHarvestError(UserError, RuntimeError):
    """The search solved none of the pool problems, so the round has nothing to train on (a user error: the recipes
    print it as one line naming what to change)."""


def pick_path(problem, result, keep: str, task="countdown") -> str | None:
    """The one response kept for ``problem``: a strict-correct path without ``<backtrack>``, or None."""
    task = get_task(task)

    def ok(text: str) -> bool:
        return bool(text) and BACKTRACK_TOKEN not in text and task.check(problem, text, mode="strict").correct

    if keep == "none":  # a harvest of mistakes only
        return None
    if keep == "chosen":
        return result.completion if ok(result.completion) else None
    if keep == "best_correct":
        correct = [c for c in result.candidates if c.reached_goal and ok(c.text)]
        return max(correct, key=lambda c: c.score).text if correct else None
    raise ValueError(f"keep={keep!r}: choose one of {KEEP_RULES}.")


def harvest(
    model_dir: str | Path,
    problems: list[dict[str, Any]],
    output_folder: str | Path,
    config_name: str,
    search_options: dict[str, Any],
    keep: str = "best_correct",
    seed: int = 0,
    forbidden_keys: set | None = None,
    progress: bool = True,
    task="countdown",
    dtype: str | None = None,
    mistakes_per_problem: int = 0,
    forged_weight: int = 1,
    replay_dataset: str | Path | None = None,
    replay_ratio: float = 0.0,
) -> dict[str, Any] | None:
    """Search ``problems`` with the model in ``model_dir``, write the kept paths, return the counts.

    ``forbidden_keys``: problem keys (:meth:`Task.problem_key`) that must never be written,
    i.e. the test problems; a pool containing one is refused. ``dtype``: of the model's weights, as the evaluation's
    (``"auto"``: the checkpoint's on a GPU, float32 on CPU). ``mistakes_per_problem``: also write up to this many
    backtrack rows per problem from the wrong answers among the candidates, highest score first (``forged_weight``
    copies of a forged last step); ``replay_dataset``: add ``replay_ratio`` times the harvested rows drawn from its
    train split. Under ``accelerate launch`` every process searches its
    share of the pool; the main process writes the dataset and returns the counts, the others return None.
    """
    from datasets import Dataset, DatasetDict

    from backtrack_trl import decoding
    from backtrack_trl.data.hub_layout import write_hub_dataset

    task = get_task(task)
    pool = [task.problem_from_row(p) for p in problems]
    leaked = [p for p in pool if forbidden_keys and task.problem_key(p) in forbidden_keys]
    if leaked:
        raise ValueError(
            f"{len(leaked)} pool problems are test problems (e.g. {leaked[0]}): the pool must come from the train split."
        )
    import torch
    from accelerate import PartialState

    from backtrack_trl.decoding.results import SearchResult
    from backtrack_trl.distributed import solve_sharded

    # Under `accelerate launch` every process searches its share of the pool; on a machine without GPUs its ranks
    # must be told to use CPU + gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    options = dict(search_options)
    method = options.pop("method", "self_backtracking")
    if method not in HARVEST_METHODS:
        raise ValueError(f"The harvest searches with one of {sorted(HARVEST_METHODS)}, got method {method!r}.")
    if options.get("backend") == "vllm" and not options.get("vllm_server_base_url") and state.num_processes > 1:
        raise ValueError(
            f"backend='vllm' without a server in {state.num_processes} processes would start one vLLM engine per "
            "process: start one server (`vllm serve <model folder> --enable-prefix-caching`) and pass "
            "vllm_server_base_url, or harvest in one process."
        )
    device = state.device if torch.cuda.is_available() else None
    decoder = getattr(decoding, HARVEST_METHODS[method]).from_pretrained(
        str(model_dir),
        device=device,
        dtype=dtype,
        seed=seed,
        task=task,
        model_option="--model_name_or_path",
        **options,
    )
    began = time.perf_counter()
    # Problem i is searched with seed + i whatever process it lands on, so the result does not depend on the number
    # of processes.
    results = solve_sharded(
        state,
        decoder.solve,
        pool,
        seed,
        progress,
        encode=lambda result: result.to_dict(),
        decode=SearchResult.from_dict,
    )
    seconds = time.perf_counter() - began
    # The next stage (a round's SFT) is another process: hand this process's GPU memory back before it starts.
    del decoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if results is None:  # not the main process
        return None

    rows, mistakes, chosen_correct, oracle = [], [], 0, 0
    for problem, result in zip(pool, results):
        chosen_correct += bool(result.completion) and task.check(problem, result.completion, mode="strict").correct
        oracle += any(c.reached_goal and task.check(problem, c.text, mode="strict").correct for c in result.candidates)
        path = pick_path(problem, result, keep, task)
        if path is not None:
            rows.append({**task.optimal_row(problem, task.parse_steps(path)), "source": "search"})
        if mistakes_per_problem:
            ranked = sorted(result.candidates, key=lambda c: -c.score)
            found = mistake_rows(task, problem, [c.text for c in ranked], mistakes_per_problem, forged_weight)
            mistakes.extend({**row, "source": "mistake"} for row in found)
    kept = len(rows)
    rows += mistakes
    replay = replay_rows(replay_dataset, round(replay_ratio * len(rows)), seed) if replay_dataset else []
    stats = {
        "pool_problems": len(pool),
        "kept": kept,
        "mistake_rows": len(mistakes),
        "mistake_types": count_error_types(mistakes),
        "replay_rows": len(replay),
        "search_accuracy": 100.0 * chosen_correct / max(1, len(pool)),
        "oracle_accuracy": 100.0 * oracle / max(1, len(pool)),
        "tokens_generated": sum(r.tokens_generated for r in results),
        "search_seconds": sum(r.wall_time for r in results),
        "wall_seconds": seconds,
        "processes": state.num_processes,
    }
    if not rows:
        raise EmptyHarvestError(
            f"Harvest {config_name!r}: nothing to train on: the strict checker accepted no path and no mistake row "
            f"was found on {len(pool)} pool problems (search accuracy {stats['search_accuracy']:.1f}%, any candidate "
            f"correct {stats['oracle_accuracy']:.1f}%). Give it more to find: a larger pool (--pool_size; the "
            "study's pool_size), a wider search (larger n or b in --search; the study's search_n / search_b), or a "
            "better model (train it longer) before self-improving."
        )
    card = {
        "source model": str(model_dir),
        "search": ", ".join(f"{k}={v}" for k, v in sorted(search_options.items())),
        "filter": f"strict checker; keep={keep} (one path per problem, no <backtrack>)",
        "mistakes": f"up to {mistakes_per_problem} per problem, forged last steps x{forged_weight}",
        "replay": f"{len(replay)} rows of {replay_dataset} (train)" if replay else "none",
        "seed": seed,
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in stats.items()},
    }
    write_hub_dataset(
        DatasetDict({"train": Dataset.from_list(rows + replay)}),
        output_folder,
        card=card,
        overwrite=True,
        config_name=config_name,
    )
    logger.info("%s: kept %d of %d pool problems, %d mistake rows, %d replayed rows", config_name, kept, len(pool),
                len(mistakes), len(replay))  # fmt: skip
    return stats


def replay_rows(dataset_folder: str | Path, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` rows drawn without replacement (seeded) from the train split of a contract dataset, with
    ``source: replay``; all of them when it has fewer."""
    import random

    from datasets import load_dataset

    train = load_dataset(str(dataset_folder), split="train")
    picked = sorted(random.Random(seed).sample(range(len(train)), min(count, len(train))))
    return [{**row, "source": "replay"} for row in train.select(picked)]


def read_pool_file(path: str | Path, task) -> list[dict[str, Any]]:
    """Problem rows from a JSON-lines file; one error naming the line and the missing columns."""
    task = get_task(task)
    path = check_file(path, "--pool_file", "give a JSON-lines file of problems, one per line")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"--pool_file {str(path)!r} line {number} is not JSON ({error}).") from None
        missing = [c for c in task.problem_columns if not isinstance(row, dict) or c not in row]
        if missing:
            raise ValueError(
                f"--pool_file {str(path)!r} line {number} lacks the {task.name} problem column(s) {missing}."
            )
        rows.append({c: row[c] for c in task.problem_columns})
    if not rows:
        raise ValueError(f"--pool_file {str(path)!r} holds no problems.")
    return rows


def write_pool_file(rows: list[dict[str, Any]], path: str | Path) -> None:
    """The JSON-lines pool file :func:`read_pool_file` reads (written atomically)."""
    from backtrack_trl.atomic_io import atomic_write_text

    atomic_write_text(Path(path), "".join(json.dumps(row) + "\n" for row in rows))


def dataset_pool(dataset_folder: str | Path, split: str, pool_size: int | None, task) -> list[dict[str, Any]]:
    """The first ``pool_size`` distinct problems of a split, in row order."""
    from datasets import load_dataset

    task = get_task(task)
    dataset = load_dataset(str(dataset_folder))
    if split not in dataset:
        raise ValueError(
            f"--dataset_split {split!r} is not a split of --dataset_name {str(dataset_folder)!r}; it has "
            f"{', '.join(sorted(dataset))} (the pool must come from the train split)."
        )
    seen, rows = set(), []
    for row in dataset[split].select_columns(list(task.problem_columns)):
        key = task.problem_key(task.problem_from_row(row))
        if key not in seen:
            seen.add(key)
            rows.append(dict(row))
            if pool_size is not None and len(rows) >= pool_size:
                break
    return rows


def dataset_test_keys(folder: str | Path, task) -> set:
    """:meth:`Task.problem_key` of the problems in every ``test*`` split of every config of a dataset folder (the
    default config's ``test_seen``/``test_new`` of a Hub id); configs of another task's columns are skipped."""
    from datasets import load_dataset

    from backtrack_trl.data.hub_layout import config_shape, dataset_configs

    task = get_task(task)
    configs = dataset_configs(folder)
    if not configs:
        return test_problem_keys(folder, task=task)
    keys = set()
    for config in configs:
        splits, columns = config_shape(folder, config)
        splits = [split for split in splits if split.startswith("test")]
        if not splits or (columns is not None and not set(task.problem_columns) <= set(columns)):
            continue
        dataset = load_dataset(str(folder), config)
        for split in splits:
            for row in dataset[split].select_columns(list(task.problem_columns)):
                keys.add(task.problem_key(task.problem_from_row(row)))
    return keys


def check_pool_against_tests(args: HarvestArguments, problems: list[dict[str, Any]], task) -> set:
    """The test problem keys a harvest must never write: those of ``test_dataset_name``, ``dataset_name`` and the
    ``output_dir`` dataset it extends (when it exists). A pool problem among them is refused, with the count, an
    example and the fix."""
    from backtrack_trl.data.hub_layout import dataset_configs

    task = get_task(task)
    folders = [args.test_dataset_name, args.dataset_name]
    if dataset_configs(args.output_dir):  # an existing dataset (a new output folder has no test split)
        folders.append(args.output_dir)
    folders = list(dict.fromkeys(str(folder) for folder in folders if folder))
    if not folders:
        logger.warning(
            "No test split to check the --pool_file %r against: pass --test_dataset_name <the dataset the model is "
            "evaluated on> so that no test problem is harvested into training data.", args.pool_file
        )  # fmt: skip
    forbidden = set()
    for folder in folders:
        keys = dataset_test_keys(folder, task)
        leaked = [row for row in problems if task.problem_key(task.problem_from_row(row)) in keys]
        if leaked:
            if args.pool_file:
                pool, fix = f"--pool_file {args.pool_file!r}", "Remove them from the pool file"
            else:
                pool = f"the pool (split {args.dataset_split!r} of --dataset_name {args.dataset_name!r})"
                fix = "Draw the pool from a training split (--dataset_split train)"
            raise ValueError(
                f"{len(leaked)} of the {len(problems)} problems of {pool} are test problems of {folder!r} (its test "
                f"splits), e.g. {json.dumps(leaked[0])}: harvested, they would put test questions into training "
                f"data. {fix}, so that the harvest only sees problems the model is not evaluated on."
            )
        forbidden |= keys
    return forbidden


def run_harvest(args: HarvestArguments) -> dict[str, Any] | None:
    """The recipe: read the pool, search it (sharded over ``accelerate launch`` processes), write the round dataset
    and the counts on the main process. Returns the counts there, None on the other processes."""
    from backtrack_trl.atomic_io import atomic_write_json
    from backtrack_trl.data.builder import row_features
    from backtrack_trl.data.hub_layout import check_config_write

    task = get_task(args.task)
    # Before minutes of search: the harvest replaces only a config of its own kind (train split, these columns),
    # never a dataset's own config such as `default` of the dataset it extends.
    check_config_write(args.output_dir, args.config_name, ["train"], [*row_features(task), "source"], overwrite=True)
    if args.pool_file:
        problems = read_pool_file(args.pool_file, task)
    else:
        problems = dataset_pool(args.dataset_name, args.dataset_split, args.pool_size, task)
    forbidden = check_pool_against_tests(args, problems, task)
    stats = harvest(
        args.model_name_or_path,
        problems=problems,
        output_folder=args.output_dir,
        config_name=args.config_name,
        search_options=args.search_options(),
        keep=args.keep,
        seed=args.seed,
        forbidden_keys=forbidden,
        progress=args.progress,
        task=task,
        dtype=args.dtype,
        mistakes_per_problem=args.mistakes_per_problem,
        forged_weight=args.forged_weight,
        replay_dataset=args.replay_dataset,
        replay_ratio=args.replay_ratio,
    )
    if stats is not None:
        if args.stats_file:
            atomic_write_json(Path(args.stats_file), stats)
        # The recipe's result, readable where it ran (the counts are also in the dataset card and stats_file).
        print(
            f"{args.config_name}: kept {stats['kept']} of {stats['pool_problems']} pool problems, "
            f"{stats['mistake_rows']} mistake rows, {stats['replay_rows']} replayed rows "
            f"(search accuracy {stats['search_accuracy']:.1f}%, any candidate correct {stats['oracle_accuracy']:.1f}%, "
            f"{stats['processes']} process(es), {stats['wall_seconds']:.1f} s) -> {args.output_dir}"
        )
    return stats
