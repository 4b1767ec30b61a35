"""Held-out problems: the problem keys of a dataset's test splits, which no training data may contain.

Two problems are the same when their :meth:`~backtrack_trl.tasks.base.Task.problem_key` is equal (for Countdown: the
numbers as a multiset and the target). The self-improvement harvest and the reward model's data stage both drop (or
refuse) any problem whose key is in this set.

Usage:

```python
from backtrack_trl.data.held_out import test_problem_keys

held_out = test_problem_keys("data/countdown-tiny/backtrack", task="countdown")  # test_seen + test_new
print(len(held_out))
```
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from backtrack_trl.data.loading import load_hub_dataset
from backtrack_trl.tasks.base import get_task


def test_problem_keys(
    dataset_folder: str | Path, splits: Iterable[str] = ("test_seen", "test_new"), task="countdown"
) -> set:
    """:meth:`Task.problem_key` of every problem in the test splits of a Hub-layout dataset folder."""
    task = get_task(task)
    keys = set()
    dataset = load_hub_dataset(str(dataset_folder))
    for split in splits:
        if split in dataset:
            for row in dataset[split].select_columns(list(task.problem_columns)):
                keys.add(task.problem_key(task.problem_from_row(row)))
    return keys
