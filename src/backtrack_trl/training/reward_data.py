"""The ORM's data stage (``recipes/reward_model.py --stage data``): sample a policy, label, pair, write.

``build_orm_dataset`` samples ``num_samples`` responses per TRAIN problem from a policy folder (the optimal-SFT model)
with ``BestOfNDecoder`` (N independent samples, no rollback), labels every distinct response with the task's strict
checker, and pairs them (correct = chosen, a wrong response to the same problem = rejected). Problems of the
dataset's test splits are never used (:func:`backtrack_trl.data.held_out.test_problem_keys`). Written in the Hub
layout (``prompt``, ``chosen``, ``rejected`` + the problem columns; splits ``train`` and ``eval``: the pairs of a few
held-out train problems).

Usage:

```python
from backtrack_trl.training.reward_config import RewardModelScriptArguments
from backtrack_trl.training.reward_data import build_orm_dataset, make_pairs

assert make_pairs(["a", "b"], ["x"], limit=4) == [("a", "x"), ("b", "x")]
script_args = RewardModelScriptArguments(policy_model="models/countdown-tiny/optimal-sft", max_problems=200)
summary = build_orm_dataset(script_args)  # -> script_args.preference_dataset
print(summary["train_pairs"], summary["eval_pairs"])
```
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from backtrack_trl.training.reward_config import RewardModelScriptArguments


logger = logging.getLogger(__name__)


def label_candidates(task, problem, result) -> tuple[list[str], list[str]]:
    """The distinct responses of ``result`` split by the task's strict checker: (correct, wrong)."""
    correct, wrong = [], []
    for candidate in result.candidates:
        ok = candidate.reached_goal and task.check(problem, candidate.text, mode="strict").correct
        (correct if ok else wrong).append(candidate.text)
    return correct, wrong


def make_pairs(correct: list[str], wrong: list[str], limit: int) -> list[tuple[str, str]]:
    """Up to ``limit`` distinct (chosen, rejected) pairs, spread over both lists before any response repeats."""
    # Diagonals of the correct x wrong grid: each offset pairs every correct response once, with different wrongs.
    pairs = [(c, wrong[(i + d) % len(wrong)]) for d in range(len(wrong)) for i, c in enumerate(correct)]
    return pairs[:limit]


def train_problems(script_args: RewardModelScriptArguments) -> tuple[list, int]:
    """The first ``max_problems`` distinct problems of the train split that are not test problems, and how many
    rows were skipped because their problem is a test problem."""
    from backtrack_trl.data.held_out import test_problem_keys
    from backtrack_trl.data.loading import load_hub_dataset
    from backtrack_trl.tasks import get_task

    task = get_task(script_args.task)
    if not Path(script_args.problems_dataset).is_dir():
        raise FileNotFoundError(
            f"--problems_dataset {script_args.problems_dataset!r} does not exist: build it first (recipes/"
            f"build_dataset.py) or point at a Hub-layout dataset folder with a {script_args.problems_split!r} split."
        )
    dataset = load_hub_dataset(script_args.problems_dataset)
    if script_args.problems_split not in dataset:
        raise ValueError(f"--problems_split {script_args.problems_split!r} is not in {sorted(dataset)}.")
    held_out = test_problem_keys(script_args.problems_dataset, task=task)
    problems, seen, skipped = [], set(), 0
    for row in dataset[script_args.problems_split].select_columns(list(task.problem_columns)):
        problem = task.problem_from_row(row)
        key = task.problem_key(problem)
        if key in held_out:
            skipped += 1
            continue
        if key not in seen:
            seen.add(key)
            problems.append(problem)
            if len(problems) == script_args.max_problems:
                break
    return problems, skipped


def build_orm_dataset(script_args: RewardModelScriptArguments, model=None, tokenizer=None) -> dict[str, Any]:
    """Stage ``data``: sample, label, pair, write ``preference_dataset``; returns counts (also in the card).

    ``model``/``tokenizer`` replace loading ``policy_model`` (tests pass scripted models)."""
    from datasets import Dataset, DatasetDict

    from backtrack_trl.data.hub_layout import write_hub_dataset
    from backtrack_trl.decoding import BestOfNDecoder
    from backtrack_trl.decoding.api import load_model_and_tokenizer
    from backtrack_trl.tasks import get_task

    task = get_task(script_args.task)
    problems, skipped = train_problems(script_args)
    if model is None:
        device = script_args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model_and_tokenizer(script_args.policy_model, device=device, option="--policy_model")
    decoder = BestOfNDecoder(
        model, tokenizer, n=script_args.num_samples, temperature=script_args.temperature,
        max_new_tokens=script_args.max_new_tokens, batch_size=script_args.sampling_batch_size,
        seed=script_args.sampling_seed, task=task,
    )  # fmt: skip
    began = time.perf_counter()
    results = decoder.solve([task.format_prompt(problem) for problem in problems], progress=sys.stderr.isatty())
    sampling_seconds = time.perf_counter() - began
    rows = {"train": [], "eval": []}
    counts = {"candidates": 0, "correct": 0, "problems_with_pairs": 0}
    first_eval = len(problems) - script_args.eval_problems
    for index, (problem, result) in enumerate(zip(problems, results, strict=True)):
        correct, wrong = label_candidates(task, problem, result)
        counts["candidates"] += len(correct) + len(wrong)
        counts["correct"] += len(correct)
        pairs = make_pairs(correct, wrong, script_args.pairs_per_problem)
        counts["problems_with_pairs"] += bool(pairs)
        split = "eval" if index >= first_eval else "train"
        for chosen, rejected in pairs:
            rows[split].append(
                {"prompt": result.prompt, "chosen": chosen, "rejected": rejected, **task.problem_to_row(problem)}
            )
    if not rows["train"]:
        raise ValueError(
            f"No preference pair from {len(problems)} problems x {script_args.num_samples} samples of "
            f"{script_args.policy_model!r}: every problem was all right or all wrong. Raise --num_samples or "
            f"--temperature, or use a better trained policy."
        )
    summary = {
        "policy_model": script_args.policy_model,
        "problems_dataset": f"{script_args.problems_dataset} ({script_args.problems_split})",
        "problems": len(problems),
        "test_problem_rows_skipped": skipped,
        "samples_per_problem": script_args.num_samples,
        "temperature": script_args.temperature,
        "distinct_candidates": counts["candidates"],
        "strict_correct_candidates": counts["correct"],
        "problems_with_pairs": counts["problems_with_pairs"],
        "train_pairs": len(rows["train"]),
        "eval_pairs": len(rows["eval"]),
        "sampling_seconds": round(sampling_seconds, 1),
    }
    dataset = DatasetDict({split: Dataset.from_list(split_rows) for split, split_rows in rows.items() if split_rows})
    write_hub_dataset(dataset, script_args.preference_dataset, card=summary, overwrite=script_args.overwrite_dataset)
    logger.info("ORM pairs: %s", summary)
    return summary
