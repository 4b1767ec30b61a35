"""Preference data from a backtrack dataset: the paper's DPO / KTO baselines "on the same pairs" (Table 1).

A backtrack dataset (the row contract of :mod:`backtrack_trl.data.builder`) already holds, for every training question, the
optimal solution and one (or more) wrong continuations: ``prefix`` (correct steps) + ``wrong_step``. This module turns
it into TRL's standard, non-conversational preference formats, written as two configs of one Hub-layout folder:

- ``pairwise`` (DPO): ``prompt``, ``chosen``, ``rejected`` + the task's problem columns + ``error_type``. One row per
  backtrack row of the train split: ``chosen`` = the optimal completion of the same question (the optimal row with the
  same prompt), ``rejected`` = ``prefix + wrong_step`` of the backtrack row, **without** ``<backtrack>``: the mistake
  itself is the dispreferred behaviour; ``<backtrack>`` is the backtrack-SFT model's remedy for it and has no place in
  a preference baseline trained from the optimal-SFT model (whose vocabulary need not know it).
- ``unpaired`` (KTO): ``prompt``, ``completion``, ``label`` (bool) + the same columns: the optimal completion of
  every paired question once with ``True``, every rejected completion with ``False`` (the same texts as ``pairwise``).

Texts carry no EOS: for non-conversational data TRL's ``DPOTrainer`` and ``KTOTrainer`` (1.16, ``_prepare_dataset``)
append ``tokenizer.eos_token`` to ``chosen`` / ``rejected`` / ``completion`` themselves, as the SFT collator does.

The source's test splits hold optimal rows only, so their pairs are made here with the task's own wrong-step makers
(seeded per question, like the builder): ``chosen`` = an optimal path of the task's solver (the card counts how often
it is the source's own completion), ``rejected`` = a correct prefix of that path plus a wrong step. Eval losses and reward margins then
measure the same thing on unseen questions; the problem columns stay, so the decoders can evaluate on these splits too.

Usage:

```python
import tempfile

from datasets import load_dataset

from backtrack_trl.data.build_config import BuildDatasetArguments
from backtrack_trl.data.builder import build_dataset
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference
from backtrack_trl.tasks.countdown import CountdownConfig

source = tempfile.mkdtemp() + "/backtrack"
args = BuildDatasetArguments(num_train_questions=20, num_test=5, num_proc=1)
write_hub_dataset(build_dataset(args, CountdownConfig(num_numbers=3, max_number=20, max_target=100)), source)
output = tempfile.mkdtemp() + "/preference"
build_and_save_preference(PreferenceDataArguments(source=source, output_dir=output))
pairs = load_dataset(output, "pairwise")["train"]  # prompt, chosen, rejected, numbers, target, error_type
labelled = load_dataset(output, "unpaired")["train"]  # prompt, completion, label, ...
```
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from backtrack_trl.atomic_io import atomic_directory
from backtrack_trl.data.build_config import parse_error_mix
from backtrack_trl.data.builder import ROW_FEATURES, question_seed
from backtrack_trl.data.hub_layout import check_config_write, write_hub_dataset
from backtrack_trl.data.loading import check_dataset_folder
from backtrack_trl.tasks import BACKTRACK_TOKEN, Task, get_task


logger = logging.getLogger(__name__)

PAIRWISE, UNPAIRED = "pairwise", "unpaired"
CONTRACT_COLUMNS = ("prompt", "completion", "kind", "error_type", "prefix", "wrong_step")
CONVERTER = "python recipes/build_preference_dataset.py --source <backtrack dataset folder> --output_dir <folder>"
#: Draws of a wrong step per test question before the question is left out (counted in the card).
MAX_TEST_DRAWS = 8


@dataclass
class PreferenceDataArguments:
    """Options of ``recipes/build_preference_dataset.py``."""

    source: str = field(
        default="data/countdown-tiny/backtrack",
        metadata={"help": "Backtrack dataset folder (or Hub id) with optimal and backtrack rows (row contract)."},
    )
    output_dir: str = field(
        default="data/countdown-tiny/preference",
        metadata={"help": "Folder to write: configs `pairwise` (DPO) and `unpaired` (KTO), Hub layout."},
    )
    source_config: str | None = field(default=None, metadata={"help": "Config of the source dataset (default one)."})
    train_split: str = field(default="train", metadata={"help": "Split of the source whose rows are paired."})
    task: str = field(default="countdown", metadata={"help": "Registered task of the source (backtrack_trl.tasks)."})
    seed: int = field(default=42, metadata={"help": "Seed of the wrong steps made for the test splits' pairs."})
    overwrite: bool = field(default=False, metadata={"help": "Replace configs already in output_dir."})


def problem_columns(column_names: list[str]) -> list[str]:
    """The task's problem columns of a contract dataset: every column the row contract does not define."""
    return [name for name in column_names if name not in ROW_FEATURES]


def check_source(dataset: DatasetDict, train_split: str, source: str) -> None:
    """A source must be a backtrack dataset: the contract columns, a train split, at least one backtrack row."""
    if train_split not in dataset:
        raise ValueError(
            f"Source {source!r} has no split {train_split!r} (it has {list(dataset)}); set --train_split."
        )
    columns = dataset[train_split].column_names
    for name in CONTRACT_COLUMNS:
        if name not in columns:
            raise ValueError(
                f"Source {source!r} split {train_split!r} has no column {name!r} (it has {columns}): it is not a "
                "backtrack-trl dataset. Build one with `python recipes/build_dataset.py --config "
                "recipes/countdown-tiny/data/config_backtrack.yaml` (mode: backtrack)."
            )
    if "backtrack" not in set(dataset[train_split]["kind"]):
        raise ValueError(
            f"Source {source!r} split {train_split!r} has no backtrack rows (kind == 'backtrack'), so there is "
            "nothing to pair: it is an optimal-only dataset. Use the backtrack dataset of the same questions "
            "(`mode: backtrack`, e.g. data/countdown-tiny/backtrack)."
        )


def _rejected(row: dict) -> str:
    # The mistake itself: the correct prefix and the wrong step, without the <backtrack> that follows it in SFT.
    text = row["prefix"] + row["wrong_step"]
    if row["completion"] != text + BACKTRACK_TOKEN:
        raise ValueError(
            f"A backtrack row breaks the row contract (completion != prefix + wrong_step + {BACKTRACK_TOKEN!r}): "
            f"{row['completion']!r}. Rebuild the source with recipes/build_dataset.py."
        )
    return text


def pair_rows(rows: Dataset, extra_columns: list[str]) -> tuple[list[dict], Counter]:
    """(pairwise rows, counts) of a contract split, by the pairing rule of the module docstring."""
    optimal: dict[str, str] = {}
    counts: Counter = Counter()
    for row in rows:
        if row["kind"] == "optimal":
            counts["optimal rows"] += 1
            optimal.setdefault(row["prompt"], row["completion"])  # data.py writes one per question
    pairwise, questions = [], set()
    for row in rows:
        if row["kind"] != "backtrack":
            continue
        chosen = optimal.get(row["prompt"])
        if chosen is None:
            raise ValueError(
                f"The backtrack row of prompt {row['prompt']!r} has no optimal row with the same prompt: the pairing "
                "needs both rows of a question. Use a dataset built by recipes/build_dataset.py (mode: backtrack)."
            )
        extra = {name: row[name] for name in extra_columns}
        pairwise.append({"prompt": row["prompt"], "chosen": chosen, "rejected": _rejected(row), **extra})
        questions.add(row["prompt"])
        counts[f"pairs ({row['error_type']})"] += 1
    counts["pairs"] = len(pairwise)
    counts["paired questions"] = len(questions)
    return pairwise, counts


def test_pairs(rows: Dataset, task: Task, seed: int, split: str, extra_columns: list[str]) -> tuple[list, Counter]:
    """Pairwise rows for a test split of optimal rows: a wrong step made by the task for each question."""
    mix = parse_error_mix(None, task)
    pairs, counts = [], Counter()
    for row in rows:
        problem = task.problem_from_row(row)
        rng = random.Random(question_seed(seed, f"preference/{split}", problem, task))
        solution = task.solve(problem, rng)
        if solution is None:
            counts["unsolvable"] += 1
            continue
        # chosen and rejected share the solver's path (the rejected prefix is a prefix of chosen), as in train.
        chosen = task.format_response(solution)
        counts["chosen == the source completion"] += chosen == row["completion"]
        for _ in range(MAX_TEST_DRAWS):
            error_type = task.sample_error_type(rng, mix)
            example = task.make_backtrack_example(problem, solution, error_type, rng)
            if example is not None:
                made = task.backtrack_row(problem, example[0], example[1], error_type)
                extra = {name: row[name] for name in extra_columns if name != "error_type"}
                pairs.append(
                    {"prompt": row["prompt"], "chosen": chosen, "rejected": _rejected(made), **extra,
                     "error_type": error_type}
                )  # fmt: skip
                break
        else:
            counts["no wrong step found"] += 1
    counts["pairs"] = len(pairs)
    return pairs, counts


def unpair(pairs: list[dict]) -> list[dict]:
    """KTO rows of pairwise rows: each distinct chosen once (True), each rejected (False)."""
    rows, seen = [], set()
    for pair in pairs:
        extra = {k: v for k, v in pair.items() if k not in ("prompt", "chosen", "rejected")}
        if (pair["prompt"], pair["chosen"]) not in seen:
            seen.add((pair["prompt"], pair["chosen"]))
            rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True, **extra,
                         "error_type": ""})  # fmt: skip
        rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False, **extra})
    return rows


def build_preference(args: PreferenceDataArguments, dataset: DatasetDict | None = None) -> dict[str, Any]:
    """``{"pairwise": DatasetDict, "unpaired": DatasetDict, "counts": {split: Counter}}`` of ``args.source``."""
    if dataset is None:
        if not os.path.exists(args.source) and args.source.count("/") != 1:
            raise FileNotFoundError(
                f"--source {args.source!r}: no such dataset folder. Give a backtrack dataset built by "
                "recipes/build_dataset.py (mode: backtrack), e.g. data/countdown-tiny/backtrack."
            )
        fix = (
            "Give a backtrack dataset folder built by recipes/build_dataset.py (mode: backtrack), e.g. "
            "data/countdown-tiny/backtrack."
        )
        check_dataset_folder(args.source, "--source", fix)
        dataset = datasets.load_dataset(args.source, name=args.source_config)
    check_source(dataset, args.train_split, args.source)
    task = get_task(args.task)
    missing = [name for name in task.problem_columns if name not in dataset[args.train_split].column_names]
    if missing:
        raise ValueError(
            f"Source {args.source!r} has none of the {task.name} problem columns {missing}: it is another task's "
            f"dataset. Pass --task with the source's task (known: countdown, sudoku, ...)."
        )
    extra = problem_columns(dataset[args.train_split].column_names) + ["error_type"]
    pairwise, train_counts = pair_rows(dataset[args.train_split], extra)
    splits = {args.train_split: pairwise}
    counts = {args.train_split: train_counts}
    for split in dataset:
        if split != args.train_split:
            splits[split], counts[split] = test_pairs(dataset[split], task, args.seed, split, extra)
    pair_features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "chosen": datasets.Value("string"),
            "rejected": datasets.Value("string"),
            **{name: dataset[args.train_split].features[name] for name in extra},
        }
    )
    label_features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "completion": datasets.Value("string"),
            "label": datasets.Value("bool"),
            **{name: dataset[args.train_split].features[name] for name in extra},
        }
    )
    return {
        PAIRWISE: DatasetDict({s: Dataset.from_list(r, features=pair_features) for s, r in splits.items()}),
        UNPAIRED: DatasetDict({s: Dataset.from_list(unpair(r), features=label_features) for s, r in splits.items()}),
        "counts": counts,
    }


def _card(args: PreferenceDataArguments, config: str, built: dict[str, Any]) -> str:
    lines = [
        f"Preference data built by backtrack-trl from the backtrack dataset `{args.source}`"
        + (f" (config `{args.source_config}`)" if args.source_config else "")
        + f", task `{args.task}`: the DPO / KTO baselines of Self-Backtracking (arXiv 2502.04404) on the same pairs.",
        "",
        f"Pairing rule (split `{args.train_split}`): one pair per backtrack row; `chosen` = the optimal completion of "
        "the same question (the optimal row with the same prompt); `rejected` = the backtrack row's `prefix + "
        f"wrong_step` without `{BACKTRACK_TOKEN}` (the correct prefix plus the wrong step: the mistake itself). "
        "Texts have no EOS: TRL's DPOTrainer / KTOTrainer append it.",
        f"Other splits: the source's test questions, each paired with a wrong step made by the task (seed {args.seed}).",
        "",
    ]
    if config == UNPAIRED:
        lines += ["This config (KTO): each distinct `chosen` once with `label: true`, each `rejected` with "
                  "`label: false`.", ""]  # fmt: skip
    else:
        lines += ["This config (DPO): `prompt`, `chosen`, `rejected` + the problem columns + `error_type`.", ""]
    lines += ["| split | rows | counts |", "|---|---|---|"]
    for split, ds in built[config].items():
        detail = ", ".join(f"{k}: {v:,}" for k, v in sorted(built["counts"][split].items()))
        lines.append(f"| `{split}` | {len(ds):,} | {detail} |")
    return "\n".join(lines)


def build_and_save_preference(args: PreferenceDataArguments) -> dict[str, Any]:
    """Build both configs and write them to ``args.output_dir`` (Hub layout); return what :func:`build_preference`
    returns."""
    built = build_preference(args)
    folder = Path(args.output_dir)
    for config in (PAIRWISE, UNPAIRED):  # both are refused before either is written
        columns = next(iter(built[config].values())).column_names
        check_config_write(folder, config, list(built[config]), columns, args.overwrite)

    def write(config: str, target: Path, overwrite: bool) -> None:
        card = _card(args, config, built)
        write_hub_dataset(built[config], target, card=card, overwrite=overwrite, config_name=config)
        logger.info("Wrote config %r of %s: %s", config, folder, {s: len(d) for s, d in built[config].items()})

    if folder.exists():  # configs added to (or replaced in) an existing dataset folder, each atomically
        for config in (PAIRWISE, UNPAIRED):
            write(config, folder, args.overwrite)
        return built
    # A new folder gets both configs or neither: they are assembled inside one temporary sibling (a kill leaves only
    # that, which the next run deletes) and renamed into place together.
    with atomic_directory(folder, what="preference output_dir") as tmp:
        for config in (PAIRWISE, UNPAIRED):
            write(config, tmp / "dataset", overwrite=False)
        for entry in list((tmp / "dataset").iterdir()):
            os.rename(entry, tmp / entry.name)
        (tmp / "dataset").rmdir()
    return built
