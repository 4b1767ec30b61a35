"""Backtrack-masked supervised fine-tuning with TRL: the logic behind ``recipes/sft.py``.

``train(script_args, training_args, model_args)`` loads a contract dataset (a local Hub-layout folder or a Hub id),
the model and tokenizer with ``from_pretrained``, adds ``<backtrack>`` when missing (resizing and mean-initialising
the embeddings before DeepSpeed starts), trains with :class:`~backtrack_trl.training.collator.BacktrackMaskingCollator`
in TRL's ``SFTTrainer`` and saves the model, tokenizer, generation config and a model card
(:mod:`backtrack_trl.training.model_card`). The same function trains the optimal-only baseline and the backtrack
model: the dataset decides. The self-improvement loop calls it too. The options and their checks live in
:mod:`backtrack_trl.training.sft_config`, the model preparation in :mod:`backtrack_trl.training.model_loading`.

Usage:

```python
from trl import ModelConfig, SFTConfig

from backtrack_trl.training.sft import train
from backtrack_trl.training.sft_config import SFTScriptArguments

script_args = SFTScriptArguments(dataset_name="data/countdown-tiny/backtrack")
training_args = SFTConfig("models/countdown-tiny/backtrack-sft", use_cpu=True, bf16=False, max_steps=20)
model_args = ModelConfig(model_name_or_path="models/countdown-tiny/init")
metrics = train(script_args, training_args, model_args)  # {"train_loss": ..., "final_loss": ..., ...}
```
"""

from __future__ import annotations

import logging
import math
from typing import Any

from trl import ModelConfig, SFTConfig, SFTTrainer

from backtrack_trl.data.loading import first_rows, load_hub_dataset, pick_split
from backtrack_trl.decoding.custom_generate_writer import write_custom_generate
from backtrack_trl.logs import setup_logging
from backtrack_trl.provenance import write_provenance
from backtrack_trl.tasks.base import get_task
from backtrack_trl.training.checkpoints import ResumeAtTheEndMixin, resume_checkpoint
from backtrack_trl.training.collator import BacktrackMaskingCollator, check_columns
from backtrack_trl.training.model_card import SFTCardMixin
from backtrack_trl.training.model_loading import (
    VOCAB_MULTIPLE,
    configure_generation,
    ensure_backtrack_token,
    load_model,
    load_tokenizer,
    lora_config_for_new_tokens,
)
from backtrack_trl.training.run_folder import plan_recipe_run
from backtrack_trl.training.sft_config import SFTScriptArguments, configure_training_args
from backtrack_trl.training.task_check import check_dataset_task, check_model_task, first_row


logger = logging.getLogger(__name__)


def load_sft_datasets(script_args: SFTScriptArguments, training_args: SFTConfig):
    """Load (train, eval or None) from a Hub-layout folder or Hub id and check the contract columns."""
    dataset = load_hub_dataset(
        script_args.dataset_name,
        script_args.dataset_config,
        streaming=script_args.dataset_streaming,
        training_args=training_args,
    )
    splits = list(dataset.keys())
    train_dataset = pick_split(
        dataset,
        script_args.dataset_train_split,
        f"Dataset {script_args.dataset_name!r} has no split {script_args.dataset_train_split!r} (it has {splits}); "
        "set `dataset_train_split`.",
    )
    if train_dataset.column_names is not None:
        check_columns(train_dataset.column_names, where=f"dataset {script_args.dataset_name!r}")
    if not script_args.dataset_streaming:
        train_dataset = first_rows(train_dataset, script_args.max_train_samples)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_dataset = pick_split(
            dataset,
            script_args.dataset_test_split,
            f"eval_strategy={training_args.eval_strategy!r} but dataset {script_args.dataset_name!r} has no split "
            f"{script_args.dataset_test_split!r} (it has {splits}); set `dataset_test_split` or `eval_strategy: no`.",
        )
        if not script_args.dataset_streaming:
            eval_dataset = first_rows(eval_dataset, script_args.max_eval_samples)
    return train_dataset, eval_dataset


class BacktrackSFTTrainer(SFTCardMixin, ResumeAtTheEndMixin, SFTTrainer):
    """SFTTrainer whose model card (checkpoints, final save, push_to_hub) documents backtrack SFT and our decoder."""

    def __init__(self, *args, script_args: SFTScriptArguments, model_args: ModelConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.script_args = script_args
        self.model_args = model_args


def train(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict[str, Any]:
    """Run backtrack-masked SFT and save the result in ``training_args.output_dir``; return the metrics.

    Returned keys: ``train_loss`` (mean over training), ``final_loss`` (last logged loss), ``train_runtime``,
    ``global_step``, ``world_size``, ``num_untrained_examples`` / ``num_truncated_examples`` (this process's collator),
    ``output_dir`` and ``eval_*`` when an eval split is used. What ``output_dir`` already holds decides the rest
    (:func:`~backtrack_trl.training.run_folder.plan_run`): a finished run of the same settings is left alone (its
    recorded metrics are returned), an interrupted one continues from its newest complete checkpoint, anything else
    is refused unless ``overwrite_output_dir``; the dataset and the model must be of ``script_args.task``.
    """
    if not model_args.model_name_or_path:
        raise ValueError("Set `model_name_or_path` (e.g. models/countdown-tiny/init, made by recipes/init_model.py).")
    if not script_args.dataset_name:
        raise ValueError(
            "Set `dataset_name` (a Hub-layout folder such as data/countdown-tiny/backtrack, or a Hub id)."
        )
    get_task(script_args.task)  # an unknown task fails now (it writes the model card), not after training
    configure_training_args(training_args)
    setup_logging(training_args)
    # The output folder first: a finished run is left alone, a folder holding something else is refused.
    plan = plan_recipe_run("sft", script_args, training_args, model_args)
    if plan.finished is not None:
        return plan.finished
    logger.info("Script parameters %s", script_args)
    logger.info("Model parameters %s", model_args)
    logger.info("Training parameters %s", training_args)
    train_dataset, eval_dataset = load_sft_datasets(script_args, training_args)
    check_dataset_task(script_args.task, first_row(train_dataset), script_args.dataset_name)
    tokenizer = load_tokenizer(model_args, training_args)
    check_model_task(script_args.task, model_args.model_name_or_path, tokenizer)
    checkpoint = resume_checkpoint(training_args, fresh=script_args.overwrite_output_dir)
    if checkpoint is not None:
        logger.info("Resuming from checkpoint %s.", checkpoint)
    model = load_model(model_args, training_args)
    ensure_backtrack_token(tokenizer, model, pad_to_multiple_of=None if model_args.use_peft else VOCAB_MULTIPLE)
    configure_generation(model, tokenizer)
    peft_config = lora_config_for_new_tokens(model_args, model)

    collator = BacktrackMaskingCollator(
        tokenizer,
        max_length=training_args.max_length,
        mask_wrong_step=script_args.mask_wrong_step,
        trained_error_types=script_args.trained_error_types,
        pad_to_multiple_of=training_args.pad_to_multiple_of,
        on_untrained=script_args.on_untrained_example,
    )
    trainer = BacktrackSFTTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        script_args=script_args,
        model_args=model_args,
    )

    if trainer.is_world_process_zero():
        plan.record()  # the settings, before the first checkpoint
    logger.info("*** Train ***")
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(train_dataset) if hasattr(train_dataset, "__len__") else None
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():  # beside train_results.json: the seed, threads, revision and versions
        write_provenance(training_args.output_dir, seed=training_args.seed)
    rank, world = training_args.process_index, training_args.world_size
    logger.log(
        logging.INFO,
        "rank %d/%d: collator saw %d examples (%d truncated, %d without a trained token).",
        rank,
        world,
        collator.num_examples,
        collator.num_truncated,
        collator.num_untrained,
    )
    if collator.num_untrained:
        logger.warning("%d training examples had no trained token (raise max_length).", collator.num_untrained)

    logger.info("*** Save model ***")
    trainer.model.config.use_cache = True
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        model.generation_config.save_pretrained(training_args.output_dir)
        if trainer.is_world_process_zero() and not model_args.use_peft:
            trainer.model.config.save_pretrained(training_args.output_dir)
            # custom_generate/ lets from_pretrained(..., trust_remote_code=True).generate run the search
            write_custom_generate(training_args.output_dir)
        trainer.create_model_card()
    logger.info("Model saved to %s", training_args.output_dir)

    if eval_dataset is not None:
        logger.info("*** Evaluate ***")
        eval_metrics = trainer.evaluate()
        if "eval_loss" in eval_metrics:
            eval_metrics["eval_perplexity"] = math.exp(min(eval_metrics["eval_loss"], 50))
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    if training_args.push_to_hub:
        logger.info("Pushing to the Hub (%s)...", training_args.hub_model_id or training_args.output_dir)
        trainer.push_to_hub(dataset_name=script_args.dataset_name)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics.update(
        final_loss=losses[-1] if losses else None,
        global_step=trainer.state.global_step,
        world_size=world,
        num_untrained_examples=collator.num_untrained,
        num_truncated_examples=collator.num_truncated,
        output_dir=training_args.output_dir,
    )
    if trainer.is_world_process_zero():
        plan.record(metrics)  # the last write: a rerun of the same settings finds a finished run
    return metrics
