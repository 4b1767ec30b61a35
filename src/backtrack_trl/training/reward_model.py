"""An outcome reward model (ORM) for best-of-N (the paper's section 6 baseline), through TRL's ``RewardTrainer``.

Two stages, the logic behind ``recipes/reward_model.py``:

- ``data``: sample ``num_samples`` responses per TRAIN problem from a policy folder (the optimal-SFT model) with
  ``BestOfNDecoder`` (N independent samples, no rollback), label every distinct response with the task's strict
  checker, and pair them (correct = chosen, a wrong response to the same problem = rejected). Problems of the
  dataset's test splits are never used (``harvest.test_problem_keys``). Written in the Hub layout (``prompt``,
  ``chosen``, ``rejected`` + the problem columns; splits ``train`` and ``eval``: the pairs of a few held-out train
  problems).
- ``train``: ``AutoModelForSequenceClassification`` (``num_labels=1``, ``pad_token_id`` set) from ``model_name_or_path``,
  trained by ``trl.RewardTrainer`` on the pairs; saves model + tokenizer + a model card with the pairwise accuracy
  before and after training.

The ORM is then a decoder option: ``best_of_n:n=8,reward_model=<output_dir>``.

Usage:

```python
from trl import ModelConfig, RewardConfig

from backtrack_trl.training.reward_model import RewardModelScriptArguments, build_orm_dataset, train_reward_model

script_args = RewardModelScriptArguments(policy_model="models/countdown-tiny/optimal-sft", max_problems=200)
build_orm_dataset(script_args)  # -> script_args.preference_dataset
training_args = RewardConfig("models/countdown-tiny/reward-model", use_cpu=True, bf16=False, max_steps=50)
metrics = train_reward_model(script_args, training_args, ModelConfig("models/countdown-tiny/optimal-sft"))
print(metrics["pairwise_accuracy_before"], metrics["pairwise_accuracy_after"])
```
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


logger = logging.getLogger(__name__)

STAGES = ("data", "train", "all")


@dataclass
class RewardModelScriptArguments:
    """Options of ``recipes/reward_model.py`` besides ``trl.RewardConfig`` (training) and ``trl.ModelConfig``."""

    stage: str = field(
        default="all",
        metadata={
            "help": "'data' builds the preference pairs, 'train' trains the reward model on them, 'all' does both.",
            "choices": list(STAGES),
        },
    )
    task: str = field(default="countdown", metadata={"help": "Registered task (backtrack_trl.tasks)."})
    policy_model: str = field(
        default="models/countdown-tiny/optimal-sft",
        metadata={"help": "Model folder that samples the candidates (stage data): the optimal-SFT model."},
    )
    problems_dataset: str = field(
        default="data/countdown-tiny/optimal",
        metadata={"help": "Hub-layout dataset folder with the problems; its test splits are excluded."},
    )
    problems_split: str = field(
        default="train", metadata={"help": "Split whose problems are sampled (not a test one)."}
    )
    max_problems: int = field(default=1000, metadata={"help": "Distinct train problems to sample (first ones)."})
    eval_problems: int = field(
        default=50,
        metadata={"help": "Of those, the last ones whose pairs form the 'eval' split (pairwise accuracy held out)."},
    )
    num_samples: int = field(default=8, metadata={"help": "Samples per problem (N of best-of-N)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=64, metadata={"help": "Response length limit in tokens."})
    sampling_batch_size: int | None = field(
        default=None, metadata={"help": "Problems decoded together (default: about 512 rows / N)."}
    )
    pairs_per_problem: int = field(
        default=4, metadata={"help": "At most this many (correct, wrong) pairs per problem (balanced round robin)."}
    )
    preference_dataset: str = field(
        default="data/countdown-tiny/orm-pairs",
        metadata={"help": "Hub-layout folder of the pairs: written by stage data, read by stage train."},
    )
    overwrite_dataset: bool = field(default=False, metadata={"help": "Replace an existing preference_dataset."})
    sampling_seed: int = field(default=0, metadata={"help": "Base seed of the sampling (problem i gets seed + i)."})
    device: str | None = field(default=None, metadata={"help": "Sampling device (default: cuda if available)."})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}.")
        for name in ("max_problems", "num_samples", "pairs_per_problem"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)!r}.")
        if not 0 <= self.eval_problems < self.max_problems:
            raise ValueError(f"--eval_problems must be in [0, max_problems), got {self.eval_problems!r}.")
        if self.problems_split.startswith("test"):
            raise ValueError(f"--problems_split {self.problems_split!r}: the ORM never trains on test problems.")


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
    from datasets import load_dataset

    from backtrack_trl.study.harvest import test_problem_keys
    from backtrack_trl.tasks import get_task

    task = get_task(script_args.task)
    if not Path(script_args.problems_dataset).is_dir():
        raise FileNotFoundError(
            f"--problems_dataset {script_args.problems_dataset!r} does not exist: build it first (recipes/"
            f"build_dataset.py) or point at a Hub-layout dataset folder with a {script_args.problems_split!r} split."
        )
    dataset = load_dataset(script_args.problems_dataset)
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
        model, tokenizer = load_model_and_tokenizer(script_args.policy_model, device=device)
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


def pairwise_accuracy(scorer, rows) -> float:
    """Fraction of pairs whose chosen response the scorer ranks strictly above the rejected one."""
    rows = list(rows)
    if not rows:
        return float("nan")
    prompts = [row["prompt"] for row in rows]
    chosen = scorer.score(prompts, [row["chosen"] for row in rows])
    rejected = scorer.score(prompts, [row["rejected"] for row in rows])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)


def load_reward_base(model_args, training_args):
    """``AutoModelForSequenceClassification`` (one label, a new score head) + tokenizer from ``model_name_or_path``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = model_args.model_name_or_path
    if not path:
        raise ValueError(
            "--model_name_or_path is required: the model folder (or Hub id) the reward model starts from."
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # Llama-3.2 has none; the head must find the last real token
        tokenizer.pad_token = tokenizer.eos_token
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


CARD = """---
library_name: transformers
tags: [trl, reward-model, backtrack-trl, {task}]
base_model: {base}
---

# Outcome reward model ({task})

A sequence-classification model (one scalar) trained with TRL's `RewardTrainer` on preference pairs built by
`recipes/reward_model.py --stage data`: responses sampled from `{policy}` on train problems, labelled by the task's
strict checker (correct = chosen, wrong = rejected). It scores `prompt + response + EOS`.

Use it in best-of-N: `best_of_n:n=8,reward_model=<this folder>` (recipes/evaluate_decoders.py).

| pairwise accuracy | before training | after training |
|---|---|---|
| train pairs ({train_pairs}) | {train_before} | {train_after} |
| eval pairs ({eval_pairs}) | {eval_before} | {eval_after} |

Training: {steps} steps, learning rate {lr}, {seconds} s. Dataset: `{dataset}`.
"""


def train_reward_model(script_args: RewardModelScriptArguments, training_args, model_args) -> dict[str, Any]:
    """Stage ``train``: RewardTrainer on ``preference_dataset``; saves model, tokenizer, card, ``orm_metrics.json``."""
    from datasets import load_dataset
    from trl import RewardTrainer

    from backtrack_trl.decoding.reward_scorer import RewardModelScorer

    if not Path(script_args.preference_dataset).is_dir():
        raise FileNotFoundError(
            f"--preference_dataset {script_args.preference_dataset!r} does not exist: run --stage data first."
        )
    dataset = load_dataset(script_args.preference_dataset)
    columns = ["prompt", "chosen", "rejected"]  # explicit-prompt pairs; the problem columns are for people
    train_rows = dataset["train"].select_columns(columns)
    eval_rows = dataset["eval"].select_columns(columns) if "eval" in dataset else None
    model, tokenizer = load_reward_base(model_args, training_args)

    def accuracies() -> tuple[float, float]:
        # On the training device: a 1B model scored on the CPU would take longer than the training.
        scorer = RewardModelScorer(
            model, tokenizer, batch_size=training_args.per_device_eval_batch_size, device=training_args.device
        )
        held_out = pairwise_accuracy(scorer, eval_rows) if eval_rows is not None else float("nan")
        result = pairwise_accuracy(scorer, train_rows), held_out
        model.train()
        return result

    before = accuracies()
    trainer = RewardTrainer(
        model=model, args=training_args, train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer
    )
    began = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - began
    trainer.save_model(training_args.output_dir)
    after = accuracies()
    metrics = {
        "train_loss": output.training_loss,
        "steps": output.global_step,
        "train_seconds": round(seconds, 1),
        "pairwise_accuracy_before": before[0],
        "pairwise_accuracy_after": after[0],
        "eval_pairwise_accuracy_before": before[1],
        "eval_pairwise_accuracy_after": after[1],
    }
    if trainer.accelerator.is_main_process:
        out = Path(training_args.output_dir)
        tokenizer.save_pretrained(out)
        (out / "orm_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        (out / "README.md").write_text(
            CARD.format(
                task=script_args.task, base=model_args.model_name_or_path, policy=script_args.policy_model,
                train_pairs=len(train_rows), eval_pairs=0 if eval_rows is None else len(eval_rows),
                train_before=f"{before[0]:.3f}", train_after=f"{after[0]:.3f}", eval_before=f"{before[1]:.3f}",
                eval_after=f"{after[1]:.3f}", steps=output.global_step, lr=training_args.learning_rate,
                seconds=metrics["train_seconds"], dataset=script_args.preference_dataset,
            ),
            encoding="utf-8",
        )  # fmt: skip
    return metrics


def parse_args(argv: list[str] | None = None):
    """``--config recipe.yaml`` + CLI overrides -> (RewardModelScriptArguments, RewardConfig, ModelConfig)."""
    from trl import ModelConfig, RewardConfig, TrlParser

    parser = TrlParser((RewardModelScriptArguments, RewardConfig, ModelConfig))
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as error:
        message = str(error)
        if "Unknown arguments from config file" in message or "not used by the HfArgumentParser" in message:
            raise ValueError(
                f"{message.split('. Please')[0]}. List the options with `python recipes/reward_model.py --help`."
            ) from None
        raise


def main(argv: list[str] | None = None) -> dict[str, Any]:
    script_args, training_args, model_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report: dict[str, Any] = {"stage": script_args.stage}
    if script_args.stage != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every process would sample and write the same dataset folder.
        raise ValueError(
            f"--stage {script_args.stage} under a multi-process launch: run `python recipes/reward_model.py ... "
            f"--stage data` in one process first, then `accelerate launch ... --stage train`."
        )
    if script_args.stage in ("data", "all"):
        report["data"] = build_orm_dataset(script_args)
    if script_args.stage in ("train", "all"):
        report["train"] = train_reward_model(script_args, training_args, model_args)
    print(json.dumps(report, indent=2, default=str))
    return report


__all__ = [
    "RewardModelScriptArguments",
    "build_orm_dataset",
    "label_candidates",
    "make_pairs",
    "pairwise_accuracy",
    "train_reward_model",
    "main",
]
