"""An outcome reward model (ORM) for best-of-N (the paper's section 6 baseline), through TRL's ``RewardTrainer``.

Two stages, the logic behind ``recipes/reward_model.py`` (options: :mod:`backtrack_trl.training.reward_config`):

- ``data``: sample a policy on train problems and write labelled preference pairs
  (:mod:`backtrack_trl.training.reward_data`).
- ``train``: ``AutoModelForSequenceClassification`` (``num_labels=1``, ``pad_token_id`` set) from ``model_name_or_path``,
  trained by ``trl.RewardTrainer`` on the pairs; saves model + tokenizer + a model card with the pairwise accuracy
  before and after training.

The ORM is then a decoder option: ``best_of_n:n=8,reward_model=<output_dir>``.

Usage:

```python
from trl import ModelConfig, RewardConfig

from backtrack_trl.training.reward_config import RewardModelScriptArguments
from backtrack_trl.training.reward_data import build_orm_dataset
from backtrack_trl.training.reward_model import train_reward_model

script_args = RewardModelScriptArguments(policy_model="models/countdown-tiny/optimal-sft", max_problems=200)
build_orm_dataset(script_args)  # -> script_args.preference_dataset
training_args = RewardConfig("models/countdown-tiny/reward-model", use_cpu=True, bf16=False, max_steps=50)
metrics = train_reward_model(script_args, training_args, ModelConfig("models/countdown-tiny/optimal-sft"))
print(metrics["pairwise_accuracy_before"], metrics["pairwise_accuracy_after"])
```
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from backtrack_trl.atomic_io import atomic_write_json, atomic_write_text
from backtrack_trl.data.loading import load_hub_dataset
from backtrack_trl.logs import setup_logging
from backtrack_trl.training.checkpoints import ResumeAtTheEndMixin, resume_checkpoint
from backtrack_trl.training.reward_config import RewardModelScriptArguments, parse_args
from backtrack_trl.training.reward_data import build_orm_dataset
from backtrack_trl.training.run_folder import RunPlan, plan_recipe_run
from backtrack_trl.training.task_check import check_dataset_task, check_model_task, first_row


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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    path = model_args.model_name_or_path
    if not path:
        raise ValueError(
            "--model_name_or_path is required: the model folder (or Hub id) the reward model starts from."
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # Llama-3.2 has none; the head must find the last real token
        tokenizer.pad_token = tokenizer.eos_token
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    # The score head is new: seed its initialisation, or two runs of the same config train different ORMs.
    set_seed(training_args.seed)
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


def train_reward_model(
    script_args: RewardModelScriptArguments, training_args, model_args, plan: RunPlan | None = None
) -> dict[str, Any]:
    """Stage ``train``: RewardTrainer on ``preference_dataset``; saves model, tokenizer, card, ``orm_metrics.json``.
    A finished run of the same settings in ``output_dir`` is left alone (its recorded metrics are returned)."""
    from trl import RewardTrainer

    from backtrack_trl.decoding.reward_scorer import RewardModelScorer

    plan = plan or plan_recipe_run("reward_model", script_args, training_args, model_args)
    if plan.finished is not None:
        return plan.finished
    if not Path(script_args.preference_dataset).is_dir():
        raise FileNotFoundError(
            f"--preference_dataset {script_args.preference_dataset!r} does not exist: run --stage data first."
        )
    dataset = load_hub_dataset(script_args.preference_dataset)
    check_dataset_task(script_args.task, first_row(dataset["train"]), script_args.preference_dataset,
                       option="preference_dataset")  # fmt: skip
    columns = ["prompt", "chosen", "rejected"]  # explicit-prompt pairs; the problem columns are for people
    train_rows = dataset["train"].select_columns(columns)
    eval_rows = dataset["eval"].select_columns(columns) if "eval" in dataset else None
    model, tokenizer = load_reward_base(model_args, training_args)
    check_model_task(script_args.task, model_args.model_name_or_path, tokenizer)

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
    checkpoint = resume_checkpoint(training_args, fresh=script_args.overwrite_output_dir)

    class BacktrackRewardTrainer(ResumeAtTheEndMixin, RewardTrainer):  # here: trl's RewardTrainer loads lazily
        pass

    trainer = BacktrackRewardTrainer(
        model=model, args=training_args, train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer
    )
    if trainer.is_world_process_zero():
        plan.record()  # the settings, before the first checkpoint
    began = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
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
        atomic_write_json(out / "orm_metrics.json", metrics)
        atomic_write_text(
            out / "README.md",
            CARD.format(
                task=script_args.task, base=model_args.model_name_or_path, policy=script_args.policy_model,
                train_pairs=len(train_rows), eval_pairs=0 if eval_rows is None else len(eval_rows),
                train_before=f"{before[0]:.3f}", train_after=f"{after[0]:.3f}", eval_before=f"{before[1]:.3f}",
                eval_after=f"{after[1]:.3f}", steps=output.global_step, lr=training_args.learning_rate,
                seconds=metrics["train_seconds"], dataset=script_args.preference_dataset,
            ),
        )  # fmt: skip
        plan.record(metrics)  # the last write: a rerun of the same settings finds a finished run
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    script_args, training_args, model_args = parse_args(argv)
    setup_logging()
    report: dict[str, Any] = {"stage": script_args.stage}
    if script_args.stage != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every process would sample and write the same dataset folder.
        raise ValueError(
            f"--stage {script_args.stage} under a multi-process launch: run `python recipes/reward_model.py ... "
            f"--stage data` in one process first, then `accelerate launch ... --stage train`."
        )
    plan = None
    if script_args.stage in ("train", "all"):  # a folder the train stage would refuse fails before the sampling
        plan = plan_recipe_run("reward_model", script_args, training_args, model_args)
    if plan is not None and plan.finished is not None:
        report["train"] = plan.finished  # finished with these settings: neither stage runs again
    else:
        if script_args.stage in ("data", "all"):
            report["data"] = build_orm_dataset(script_args)
        if plan is not None:
            report["train"] = train_reward_model(script_args, training_args, model_args, plan)
    print(json.dumps(report, indent=2, default=str))
    return report
