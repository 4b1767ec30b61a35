"""Load a dataset the recipes name: a local Hub-layout folder or a Hub id, with a config, as ``datasets`` does.

The one loader of the training and evaluation recipes. The caller keeps its own words: ``explain`` turns a loading
error into the error that names the caller's option, and :func:`pick_split` raises the caller's message for a
missing split.

Usage:

```python
from backtrack_trl.data.loading import check_dataset_folder, first_rows, load_hub_dataset, pick_split

dataset = load_hub_dataset("data/countdown-tiny/backtrack")
train = pick_split(dataset, "train", "Dataset has no split 'train'; set `dataset_train_split`.")
train = first_rows(train, 100)  # the first 100 rows (all of them when None)
# A model folder raises ValueError("--source 'models/x' is not a Hub-layout dataset folder: it holds a model ...")
check_dataset_folder("data/countdown-tiny/backtrack", "--source", "Give a backtrack dataset folder.")
```
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backtrack_trl.data.hub_layout import dataset_configs


def load_hub_dataset(
    name: str,
    config: str | None = None,
    *,
    streaming: bool = False,
    training_args=None,
    explain: Callable[[Exception], Exception | None] | None = None,
):
    """``datasets.load_dataset(name, name=config, streaming=streaming)``.

    ``training_args`` (a ``TrainingArguments``): the main process loads first, the others then read its cache.
    ``explain(error)``: the clearer error to raise instead of ``error`` (raised ``from None``), or None to let
    ``error`` through.
    """
    import datasets

    if training_args is not None:
        first = training_args.main_process_first(desc="load dataset")
    else:
        first = contextlib.nullcontext()
    with first:
        try:
            return datasets.load_dataset(name, name=config, streaming=streaming)
        except Exception as error:
            clearer = explain(error) if explain is not None else None
            if clearer is None:
                raise
            raise clearer from None


def pick_split(dataset, split: str, message: str) -> Any:
    """``dataset[split]``, or ``ValueError(message)`` when the dataset has no such split."""
    if split not in dataset:
        raise ValueError(message)
    return dataset[split]


def first_rows(dataset, limit: int | None):
    """The first ``limit`` rows of ``dataset`` (all of them when ``limit`` is None or above its length)."""
    if limit is None:
        return dataset
    return dataset.select(range(min(limit, len(dataset))))


#: Files that make a folder a model (config.json plus weights) rather than a dataset.
_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def _listing(names: list[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def describe_folder(folder: Path) -> str:
    """What a folder that is not a dataset holds, in a few words ("it holds a model (config.json, ...)")."""
    entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    if not entries:
        return "it is empty"
    weights = sorted({path.name for pattern in _WEIGHTS for path in folder.glob(pattern)})
    if "config.json" in entries and weights:
        rest = [name for name in entries if name != "config.json" and name not in weights]
        return f"it holds a model ({_listing(['config.json', *weights, *rest])})"
    return f"it holds {_listing(entries)}"


def check_dataset_folder(path: str, option: str, fix: str) -> None:
    """A local ``path`` must be a Hub-layout dataset folder (a card listing ``configs:``, or parquet shards under
    ``data/``): otherwise ``load_dataset`` reads whatever files it finds (a model's config.json as JSON rows, a
    raw DatasetGenerationError). One error names ``option``, the path, what it holds and ``fix``. A path that does
    not exist is left to the caller (it may be a Hub id)."""
    folder = Path(path)
    if not os.path.exists(path):
        return
    if not folder.is_dir():
        raise NotADirectoryError(f"{option} {path!r} is a file, not a dataset folder: {fix}")
    if dataset_configs(folder) or any((folder / "data").glob("*.parquet")):
        return
    raise ValueError(f"{option} {path!r} is not a Hub-layout dataset folder: {describe_folder(folder)}. {fix}")
