"""DPO and KTO on the backtrack dataset's own pairs (the paper's Table 1 baselines) with TRL's own trainers.

``train_preference(script_args, training_args, model_args)`` loads a preference folder written by
``recipes/build_preference_dataset.py`` (config ``pairwise`` for DPO, ``unpaired`` for KTO), the starting model (the
optimal-SFT model, as in the paper) and trains it with ``trl.DPOTrainer`` or ``trl.KTOTrainer``. The reference model is
the starting model: TRL loads a frozen copy from the same path (or, with ``precompute_ref_log_probs``, scores the data
once and frees it; with LoRA it disables the adapter). The rows are plain non-conversational text without EOS: both
trainers append ``tokenizer.eos_token`` to chosen / rejected / completion, so every answer is scored up to its EOS.

Usage:

```python
from trl import DPOConfig, ModelConfig

from backtrack_trl.training.preference import PreferenceScriptArguments, train_preference

script_args = PreferenceScriptArguments(method="dpo", dataset_name="data/countdown-tiny/preference")
training_args = DPOConfig("models/countdown-tiny/dpo", use_cpu=True, bf16=False, max_steps=20)
model_args = ModelConfig(model_name_or_path="models/countdown-tiny/optimal-sft")
metrics = train_preference(script_args, training_args, model_args)  # {"train_loss": ..., "rewards/margins": ...}
```

The command line picks the config class from the method: ``parse_preference_args(["--config", "x.yaml"])`` reads
``method:`` from the YAML (or ``--method``) first, then parses with ``DPOConfig`` or ``KTOConfig``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, ModelConfig, ScriptArguments, TrlParser, get_peft_config

from backtrack_trl.data.loading import first_rows, load_hub_dataset, pick_split
from backtrack_trl.errors import recipe_option, recipe_parser
from backtrack_trl.logs import setup_logging
from backtrack_trl.training.checkpoints import ResumeAtTheEndMixin, resume_checkpoint
from backtrack_trl.training.model_card import PreferenceCardMixin
from backtrack_trl.training.model_loading import configure_generation, load_model, load_tokenizer
from backtrack_trl.training.recipe_args import parse_recipe_args
from backtrack_trl.training.run_folder import OVERWRITE_HELP, plan_recipe_run
from backtrack_trl.training.sft_config import check_training_values
from backtrack_trl.training.task_check import check_dataset_task, check_model_task, first_row


logger = logging.getLogger(__name__)

METHODS = {"dpo": DPOConfig, "kto": KTOConfig}
#: Default dataset config and the columns each method needs (TRL's standard preference formats).
DEFAULT_CONFIG = {"dpo": "pairwise", "kto": "unpaired"}
COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}
CONVERTER = "python recipes/build_preference_dataset.py --source <backtrack dataset folder> --output_dir <folder>"


@dataclass
class PreferenceScriptArguments(ScriptArguments):
    """Script arguments of ``recipes/preference.py``; ``dataset_name`` is a folder of build_preference_dataset.py."""

    method: str = field(
        default="dpo",
        metadata={
            "help": "Preference method: 'dpo' (trl.DPOTrainer, pairwise data) or 'kto' (trl.KTOTrainer, unpaired "
            "data). It picks the trainer config class: `--method kto --help` lists KTOConfig's options.",
            "choices": list(METHODS),
        },
    )
    dataset_config: str | None = field(
        default=None,
        metadata={"help": "Dataset config; default 'pairwise' for dpo, 'unpaired' for kto."},
    )
    dataset_test_split: str = field(
        default="test_seen",
        metadata={"help": "Split used for evaluation when `eval_strategy` is not 'no' (test_seen / test_new)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows of the train split only (quick runs)."}
    )
    task: str = field(default="countdown", metadata={"help": "Registered task of the dataset (backtrack_trl.tasks)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {list(METHODS)}, got {self.method!r}.")
        if self.dataset_config is None:
            self.dataset_config = DEFAULT_CONFIG[self.method]


def method_of_recipe(argv: Sequence[str]) -> str:
    """The method a command line names: ``--method``, else the ``method:`` of its ``--config``, else dpo (the parser
    needs it before it builds the dataclasses: it picks DPOConfig or KTOConfig)."""
    method = (recipe_option(argv, "method") or "dpo").lower()
    if method not in METHODS:
        raise ValueError(f"--method must be one of {list(METHODS)}, got {method!r}.")
    return method


def make_parser(method: str = "dpo") -> TrlParser:
    return recipe_parser((PreferenceScriptArguments, METHODS[method], ModelConfig))  # one-line CLI errors


def parse_preference_args(argv: Sequence[str] | None = None):
    """``(script_args, DPOConfig | KTOConfig, ModelConfig)`` of ``--config recipe.yaml`` + flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    method = method_of_recipe(argv)
    hint = (
        f"These are not options of recipes/preference.py --method {method} (PreferenceScriptArguments, "
        f"trl.{METHODS[method].__name__}, trl.ModelConfig): list them with "
        f"`python recipes/preference.py --method {method} --help`."
    )
    script_args, training_args, model_args = parse_recipe_args(make_parser(method), argv, hint)
    if script_args.method != method:  # e.g. `method: kto` in the YAML overridden by nothing but a typo'd flag
        raise ValueError(f"--method {script_args.method!r} disagrees with the parsed config class ({method}).")
    return script_args, training_args, model_args


def check_preference_columns(column_names: list[str], method: str, where: str) -> None:
    """The standard preference columns ``method`` needs, or one error naming the first missing one and the fix."""
    for name in COLUMNS[method]:
        if name not in column_names:
            config = DEFAULT_CONFIG[method]
            raise ValueError(
                f"{where} has no column {name!r} (it has {column_names}): {method.upper()} needs the "
                f"{config} preference format ({', '.join(COLUMNS[method])}). Build it with `{CONVERTER}` and set "
                f"`dataset_config: {config}`."
            )


def load_preference_datasets(script_args: PreferenceScriptArguments, training_args):
    """(train, eval or None), reduced to the method's columns (the problem columns are for the decoders)."""
    name, config = script_args.dataset_name, script_args.dataset_config
    if not name:
        raise ValueError(f"Set `dataset_name` (a folder written by `{CONVERTER}`).")
    if not os.path.exists(name) and name.count("/") != 1:
        raise FileNotFoundError(f"dataset_name {name!r}: no such dataset folder. Build it with `{CONVERTER}`.")

    def explain(error: Exception) -> Exception | None:
        if isinstance(error, ValueError) and ("BuilderConfig" in str(error) or "not found" in str(error)):
            return ValueError(
                f"Dataset {name!r} has no config {config!r} ({error}). Build both configs with `{CONVERTER}`."
            )
        return None

    dataset = load_hub_dataset(name, config, training_args=training_args, explain=explain)
    columns = list(COLUMNS[script_args.method])
    where = f"Dataset {name!r} (config {config!r}) split {script_args.dataset_train_split!r}"
    train = pick_split(
        dataset,
        script_args.dataset_train_split,
        f"Dataset {name!r} (config {config!r}) has no split {script_args.dataset_train_split!r} (it has "
        f"{list(dataset)}); set `dataset_train_split`.",
    )
    check_preference_columns(train.column_names, script_args.method, where)
    train = first_rows(train.select_columns(columns), script_args.max_train_samples)
    evaluation = None
    if training_args.eval_strategy != "no":
        evaluation = pick_split(
            dataset,
            script_args.dataset_test_split,
            f"eval_strategy={training_args.eval_strategy!r} but dataset {name!r} has no split "
            f"{script_args.dataset_test_split!r}; set `dataset_test_split` or `eval_strategy: no`.",
        )
        check_preference_columns(evaluation.column_names, script_args.method, where.replace("train", "test"))
        evaluation = evaluation.select_columns(columns)
    return train, evaluation


class BacktrackDPOTrainer(PreferenceCardMixin, ResumeAtTheEndMixin, DPOTrainer):
    pass


class BacktrackKTOTrainer(PreferenceCardMixin, ResumeAtTheEndMixin, KTOTrainer):
    pass


TRAINERS = {"dpo": BacktrackDPOTrainer, "kto": BacktrackKTOTrainer}


def configure_preference_args(script_args: PreferenceScriptArguments, training_args) -> None:
    """Refuse a config class that does not match the method, and numbers that cannot train."""
    expected = METHODS[script_args.method]
    if not isinstance(training_args, expected):
        raise ValueError(
            f"--method {script_args.method} needs a trl.{expected.__name__}, got {type(training_args).__name__}."
        )
    check_preference_values(script_args, training_args)
    if script_args.method == "kto" and training_args.per_device_train_batch_size < 2:
        # TRL's KL estimate pairs each prompt with another row's completion in the same batch.
        raise ValueError("KTO needs per_device_train_batch_size >= 2 (its KL term mixes the rows of a batch).")


def _in(value, low: float, high: float, *, high_open: bool = False) -> bool:
    return value is not None and low <= value and (value < high if high_open else value <= high)


def check_preference_values(script_args: PreferenceScriptArguments, training_args) -> None:
    """Numbers DPOConfig / KTOConfig accept silently but that cannot train (``--beta -1`` trained and exited 0):
    one error naming the option, its value and what is accepted. The trainer options SFT shares come from
    :func:`check_training_values`."""
    check_training_values(training_args)
    args = training_args
    # (option, value is fine, what is accepted[, a hint]). A negative beta flips the preference; a weight <= 0
    # drops a side of the loss.
    checks = [
        ("beta", args.beta > 0, "> 0", "0.1 is the usual value"),
        ("ref_model_mixup_alpha", _in(args.ref_model_mixup_alpha, 0, 1), "in [0, 1]"),
        ("ref_model_sync_steps", args.ref_model_sync_steps >= 1, ">= 1"),
        ("precompute_ref_batch_size", args.precompute_ref_batch_size is None or args.precompute_ref_batch_size >= 1,
         ">= 1 (or unset)"),
    ]  # fmt: skip
    if script_args.method == "dpo":
        weights = args.loss_weights
        checks += [
            # At 0.5 the loss is flat in the margin; above it prefers the rejected answer.
            ("label_smoothing", _in(args.label_smoothing, 0, 0.5, high_open=True), "in [0, 0.5)"),
            ("ld_alpha", args.ld_alpha is None or _in(args.ld_alpha, 0, 1), "in [0, 1] (or unset)"),
            ("discopop_tau", args.discopop_tau > 0, "> 0"),
            ("loss_weights", weights is None or (min(weights) >= 0 and sum(weights) > 0),
             ">= 0 with a positive sum", "one weight per --loss_type"),
        ]  # fmt: skip
    else:
        checks += [
            ("desirable_weight", args.desirable_weight > 0, "> 0", "1.0 unless the labels are unbalanced"),
            ("undesirable_weight", args.undesirable_weight > 0, "> 0", "1.0 unless the labels are unbalanced"),
        ]
    for option, ok, accepted, *hint in checks:
        if not ok:
            value = getattr(args, option)
            raise ValueError(f"--{option} must be {accepted}, got {value!r}" + (f" ({hint[0]})." if hint else "."))
    samples = script_args.max_train_samples
    if samples is not None and samples < 1:
        raise ValueError(
            f"--max_train_samples must be >= 1 (or unset), got {samples!r} (unset trains on the whole split)."
        )


def train_preference(script_args: PreferenceScriptArguments, training_args, model_args: ModelConfig) -> dict[str, Any]:
    """Train with DPOTrainer / KTOTrainer and save model, tokenizer and model card; return the metrics."""
    configure_preference_args(script_args, training_args)
    setup_logging(training_args)
    # The output folder first: a finished run is left alone, a folder holding something else is refused.
    plan = plan_recipe_run(script_args.method, script_args, training_args, model_args)
    if plan.finished is not None:
        return plan.finished
    train_dataset, eval_dataset = load_preference_datasets(script_args, training_args)
    check_dataset_task(script_args.task, first_row(train_dataset), script_args.dataset_name)
    tokenizer = load_tokenizer(model_args, training_args)
    check_model_task(script_args.task, model_args.model_name_or_path, tokenizer)
    checkpoint = resume_checkpoint(training_args, fresh=script_args.overwrite_output_dir)
    if checkpoint is not None:
        logger.info("Resuming from checkpoint %s.", checkpoint)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model(model_args, training_args)
    trainer = TRAINERS[script_args.method](
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.script_args, trainer.model_args = script_args, model_args
    if trainer.is_world_process_zero():
        plan.record()  # the settings, before the first checkpoint
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    configure_generation(trainer.model, tokenizer)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics.update(
        final_loss=logged[-1]["loss"] if logged else None,
        global_step=trainer.state.global_step,
        output_dir=training_args.output_dir,
        **{k: v for k, v in (logged[-1] if logged else {}).items() if k.startswith("rewards/")},
    )
    if trainer.is_world_process_zero():
        plan.record(metrics)  # the last write: a rerun of the same settings finds a finished run
    return metrics


@torch.no_grad()
def sequence_logps(model, tokenizer, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Sum of log p(completion + EOS | prompt) per row, with the tokenization TRL uses (prompt, then prompt+text)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        full = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
        start = len(prompt_ids)
        while start > 1 and full[:start] != prompt_ids[:start]:  # tokens merged across the edge
            start -= 1
        ids = torch.tensor([full], device=device)
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        out.append(logps[start - 1 :].gather(1, targets[start - 1 :, None]).sum())
    return torch.stack(out)


def preference_margin(model, tokenizer, pairs) -> float:
    """Mean of log p(chosen) - log p(rejected) under ``model`` over rows with prompt / chosen / rejected."""
    chosen = sequence_logps(model, tokenizer, list(pairs["prompt"]), list(pairs["chosen"]))
    rejected = sequence_logps(model, tokenizer, list(pairs["prompt"]), list(pairs["rejected"]))
    return float((chosen - rejected).mean())
