"""Refuse training a task's model on another task's data: the recipe's ``task`` must be the dataset's and the model's.

A trainer recipe names its task (``task:``, default ``countdown``); the model card, the decoders and the study take
it from there. Nothing else records a task as a field, so it is read from what each side holds:

- a dataset: its rows. Every contract row has the task's ``prompt`` (``###Question: numbers [..]->target T`` or
  ``###Question: sudoku ...``), and :meth:`~backtrack_trl.tasks.Task.parse_prompt` of exactly one registered task
  reads it (the builder's card also lists ``task`` among its settings, but preference, reward and round datasets
  have other cards; the rows are common to all);
- a model folder: the tags of the model card our trainers write (``tags: [trl, sft, self-backtracking, sudoku]``),
  else the task tokenizer ``recipes/init_model.py`` built (every template phrase of one task is a single token:
  Countdown's ``" numbers"`` and ``"->target"``, Sudoku's ``" sudoku"``). A Hub model or a pretrained tokenizer
  names no task and passes.

Usage:

```python
from backtrack_trl.training.task_check import check_dataset_task

row = {"prompt": "###Question: numbers [2, 39]->target 41\\n###Response:\\n"}
check_dataset_task("countdown", row, "data/countdown-tiny/backtrack")  # passes
# check_dataset_task("sudoku", row, "data/countdown-tiny/backtrack") -> ValueError: ... holds countdown problems ...
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backtrack_trl.tasks import TASKS, get_task, prompt_is_of, task_for_prompt


def dataset_task(row: Mapping[str, Any]) -> str | None:
    """The registered task whose prompt format ``row["prompt"]`` is in (None: no prompt, or no task reads it)."""
    prompt = row.get("prompt")
    return task_for_prompt(prompt) if isinstance(prompt, str) else None


def first_row(dataset) -> Mapping[str, Any] | None:
    """The first row of a dataset (map-style or streaming), None when it is empty."""
    try:
        return next(iter(dataset))
    except StopIteration:
        return None


def check_dataset_task(task: str, row: Mapping[str, Any] | None, dataset_name: str, option: str = "dataset_name"):
    """ValueError unless the dataset whose first row is ``row`` holds ``task`` problems (see the module docstring)."""
    if row is None or not isinstance(row.get("prompt"), str) or prompt_is_of(task, row["prompt"]):
        return
    found = dataset_task(row)
    prompt = row["prompt"][:80]
    if found is not None:
        raise ValueError(
            f"--{option} {dataset_name!r} holds {found} problems (its prompts read e.g. {prompt!r}), but --task is "
            f"{task!r}: the model card and the decoders would call the model a {task} model. Set `task: {found}` "
            f"(with a {found} starting model), or train on a {task} dataset."
        )
    raise ValueError(
        f"--{option} {dataset_name!r} is not a {task} dataset: its prompts (e.g. {prompt!r}) are in no registered "
        f"task's format ({sorted(TASKS)}). Set `task:` to the dataset's task, or build the data with "
        "recipes/build_dataset.py."
    )


def _card_tasks(folder: Path) -> set[str]:
    from backtrack_trl.training.run_folder import card_front_matter

    card = folder / "README.md"
    tags = (card_front_matter(card).get("tags") or []) if card.is_file() else []
    return {str(tag) for tag in tags} & set(TASKS)


def _tokenizer_tasks(tokenizer) -> set[str]:
    from backtrack_trl.tasks.tokenizer import template_phrases

    vocab = tokenizer.get_vocab()
    phrases = {name: set(template_phrases(name)) for name in TASKS}
    found = set()
    for name, own in phrases.items():
        distinctive = own - set.intersection(*phrases.values())
        if distinctive and distinctive <= vocab.keys():
            found.add(name)
    return found


def model_task(model_name_or_path: str | None, tokenizer=None) -> tuple[str, str] | None:
    """``(task, evidence)`` of a model folder (its card's tags, else its task tokenizer), or None when it names none."""
    get_task()
    folder = Path(model_name_or_path) if model_name_or_path and os.path.isdir(model_name_or_path) else None
    tasks = _card_tasks(folder) if folder is not None else set()
    if len(tasks) == 1:
        return next(iter(tasks)), f"the tags of its model card {str(folder / 'README.md')!r}"
    tasks = _tokenizer_tasks(tokenizer) if tokenizer is not None else set()
    if len(tasks) == 1:
        task = next(iter(tasks))
        return task, f"its tokenizer, the {task} task tokenizer of recipes/init_model.py"
    return None


def check_model_task(task: str, model_name_or_path: str | None, tokenizer=None, option: str = "model_name_or_path"):
    """ValueError when the starting model was made for another task than ``task`` (see the module docstring)."""
    found = model_task(model_name_or_path, tokenizer)
    if found is not None and found[0] != task:
        raise ValueError(
            f"--{option} {model_name_or_path!r} is a {found[0]} model ({found[1]}), but --task is {task!r}. Start "
            f"from a {task} model (e.g. `python recipes/init_model.py --tokenizer {task} ...`), or set "
            f"`task: {found[0]}` with {found[0]} data."
        )
