"""One self-improvement harvest: search a pool of training problems, keep the paths the strict checker accepts.

The kept paths become the round's dataset (rows of kind ``optimal`` in the shared row contract), written as config
``round_<k>`` of a Hub-layout dataset folder with a card naming the source model, the search settings, the filter
and the counts. Test problems can never enter it: any pool problem that is also in a test split is an error.

Usage:

```python
from backtrack_trl.harvest import harvest

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
import logging
from pathlib import Path
from typing import Any, Iterable

from .tasks import BACKTRACK_TOKEN, get_task


logger = logging.getLogger(__name__)

# What pick_path can keep; the one list (self_improve's --keep takes its choices from it).
KEEP_RULES = ("best_correct", "chosen")


class EmptyHarvestError(RuntimeError):
    """The search solved none of the pool problems, so the round has nothing to train on."""


def test_problem_keys(
    dataset_folder: str | Path, splits: Iterable[str] = ("test_seen", "test_new"), task="countdown"
) -> set:
    """:meth:`Task.problem_key` of every problem in the test splits of a Hub-layout dataset folder."""
    from datasets import load_dataset

    task = get_task(task)
    keys = set()
    dataset = load_dataset(str(dataset_folder))
    for split in splits:
        if split in dataset:
            for row in dataset[split].select_columns(list(task.problem_columns)):
                keys.add(task.problem_key(task.problem_from_row(row)))
    return keys


def pick_path(problem, result, keep: str, task="countdown") -> str | None:
    """The one response kept for ``problem``: a strict-correct path without ``<backtrack>``, or None."""
    task = get_task(task)

    def ok(text: str) -> bool:
        return bool(text) and BACKTRACK_TOKEN not in text and task.check(problem, text, mode="strict").correct

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
) -> dict[str, Any]:
    """Search ``problems`` with the model in ``model_dir``, write the kept paths, return the counts.

    ``forbidden_keys``: problem keys (:meth:`Task.problem_key`) that must never be written,
    i.e. the test problems; a pool containing one is refused.
    """
    from datasets import Dataset, DatasetDict

    from .decoding import SelfBacktrackingDecoder
    from .hub_dataset import write_hub_dataset

    task = get_task(task)
    pool = [task.problem_from_row(p) for p in problems]
    leaked = [p for p in pool if forbidden_keys and task.problem_key(p) in forbidden_keys]
    if leaked:
        raise ValueError(
            f"{len(leaked)} pool problems are test problems (e.g. {leaked[0]}): the pool must come from the train split."
        )
    import torch

    device = "cuda" if torch.cuda.is_available() else None  # the orchestrator process may own a GPU
    decoder = SelfBacktrackingDecoder.from_pretrained(
        str(model_dir), device=device, seed=seed, task=task, **search_options
    )
    results = decoder.solve(pool, progress=progress)
    # The next stage (a round's SFT) is another process: hand this process's GPU memory back before it starts.
    del decoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    rows, chosen_correct, oracle = [], 0, 0
    for problem, result in zip(pool, results):
        chosen_correct += bool(result.completion) and task.check(problem, result.completion, mode="strict").correct
        oracle += any(c.reached_goal and task.check(problem, c.text, mode="strict").correct for c in result.candidates)
        path = pick_path(problem, result, keep, task)
        if path is not None:
            rows.append(task.optimal_row(problem, task.parse_steps(path)))
    stats = {
        "pool_problems": len(pool),
        "kept": len(rows),
        "search_accuracy": 100.0 * chosen_correct / max(1, len(pool)),
        "oracle_accuracy": 100.0 * oracle / max(1, len(pool)),
        "tokens_generated": sum(r.tokens_generated for r in results),
        "search_seconds": sum(r.wall_time for r in results),
    }
    if not rows:
        raise EmptyHarvestError(
            f"Round {config_name}: the strict checker accepted no path found by the search on {len(pool)} pool "
            f"problems (search accuracy {stats['search_accuracy']:.1f}%, any candidate correct "
            f"{stats['oracle_accuracy']:.1f}%). Train the model longer or search wider (search_n / search_b) before "
            f"self-improving."
        )
    card = {
        "source model": str(model_dir),
        "search": ", ".join(f"{k}={v}" for k, v in sorted(search_options.items())),
        "filter": f"strict checker; keep={keep} (one path per problem, no <backtrack>)",
        "seed": seed,
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in stats.items()},
    }
    write_hub_dataset(
        DatasetDict({"train": Dataset.from_list(rows)}),
        output_folder,
        card=card,
        overwrite=True,
        config_name=config_name,
    )
    logger.info("%s: kept %d of %d pool problems", config_name, len(rows), len(pool))
    return stats
