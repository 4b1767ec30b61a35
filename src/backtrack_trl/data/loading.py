"""Load a dataset the recipes name: a local Hub-layout folder or a Hub id, with a config, as ``datasets`` does.

The one loader of the training and evaluation recipes. The caller keeps its own words: ``explain`` turns a loading
error into the error that names the caller's option, and :func:`pick_split` raises the caller's message for a
missing split.

Usage:

```python
from backtrack_trl.data.loading import first_rows, load_hub_dataset, pick_split

dataset = load_hub_dataset("data/countdown-tiny/backtrack")
train = pick_split(dataset, "train", "Dataset has no split 'train'; set `dataset_train_split`.")
train = first_rows(train, 100)  # the first 100 rows (all of them when None)
```
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


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
