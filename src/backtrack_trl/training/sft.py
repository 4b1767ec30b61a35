"""Backtrack-masked supervised fine-tuning with TRL: the logic behind ``recipes/sft.py``.

``train(script_args, training_args, model_args)`` loads a contract dataset (a local Hub-layout folder or a Hub id),
the model and tokenizer with ``from_pretrained``, adds ``<backtrack>`` when missing (resizing and mean-initialising
the embeddings before DeepSpeed starts), trains with :class:`~backtrack_trl.training.collator.BacktrackMaskingCollator` in
TRL's ``SFTTrainer`` and saves the model, tokenizer, generation config and a model card (the package's
``templates/model_card.md``, whose task paragraph and example come from the ``task`` plug-in). The same function trains
the optimal-only baseline and the backtrack model: the dataset decides. The self-improvement loop calls it too.

Usage:

```python
from trl import ModelConfig, SFTConfig

from backtrack_trl.training.sft import SFTScriptArguments, train

script_args = SFTScriptArguments(dataset_name="data/countdown-tiny/backtrack")
training_args = SFTConfig("models/countdown-tiny/backtrack-sft", use_cpu=True, bf16=False, max_steps=20)
model_args = ModelConfig(model_name_or_path="models/countdown-tiny/init")
metrics = train(script_args, training_args, model_args)  # {"train_loss": ..., "final_loss": ..., ...}
```
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import string
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import datasets
import torch
import transformers
import yaml
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser, get_peft_config
from trl.trainer.utils import get_quantization_config

from backtrack_trl.atomic_io import atomic_write_text
from backtrack_trl.decoding.custom_generate_writer import write_custom_generate
from backtrack_trl.tasks.base import BACKTRACK_TOKEN, Task, get_task
from backtrack_trl.training.collator import BacktrackMaskingCollator, check_columns
from backtrack_trl.training.tokenizers import add_backtrack_token, mean_init_rows


logger = logging.getLogger(__name__)

# A resized vocabulary is padded to a multiple of this (Llama-3.2: 128,256 + <backtrack> -> 128,320 rows): matmuls
# over the embedding and LM head are faster on aligned shapes. Decoders never sample the padding ids.
VOCAB_MULTIPLE = 64
# Generation-config fields of sampling, reset when a trained model is saved (see configure_generation).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "typical_p")


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Script arguments of ``recipes/sft.py`` (dataset selection and the backtrack loss options).

    Inherits ``dataset_name`` (a local Hub-layout folder or a Hub id), ``dataset_config``, ``dataset_train_split``,
    ``dataset_test_split`` and ``dataset_streaming`` from TRL's ``ScriptArguments``.
    """

    dataset_test_split: str = field(
        default="test_seen",
        metadata={"help": "Split used for evaluation when `eval_strategy` is not 'no' (test_seen / test_new)."},
    )
    mask_wrong_step: bool = field(
        default=True,
        metadata={
            "help": "Mask the wrong step of backtrack rows out of the loss (the paper's choice). False trains it "
            "too (the 'Physics of Language Models 2.2' choice)."
        },
    )
    trained_error_types: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Error types whose wrong step is trained even with mask_wrong_step (a subset of exploration, "
            "computational, rule_violation). [exploration] trains legal steps with right arithmetic that miss the "
            "target, then <backtrack>: the model practises honest last steps instead of copying the target."
        },
    )
    on_untrained_example: str = field(
        default="warn",
        metadata={
            "help": "What to do with an example that truncation leaves with no trained token: 'warn' (counted and "
            "logged) or 'raise'.",
            "choices": ["warn", "raise"],
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows of the train split only (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N rows of the test split only."}
    )
    task: str = field(default="countdown", metadata={"help": "Registered task of the dataset (backtrack_trl.tasks)."})


# SFTConfig options that contradict raw-row collation: name -> (bad value test, why, fix)
_CONTRADICTIONS = {
    "packing": (lambda v: bool(v), "packing concatenates pre-tokenized rows, but the backtrack collator needs the raw "
                "rows (prompt/prefix/wrong_step) of every example", "packing: false"),
    "eval_packing": (lambda v: bool(v), "packing needs pre-tokenized rows; the collator builds them", "eval_packing: false"),
    "padding_free": (lambda v: bool(v), "padding-free batches are built by TRL's own collator, which cannot mask the "
                     "wrong step", "padding_free: false"),
    "assistant_only_loss": (lambda v: bool(v), "the loss mask comes from the row contract (prompt, wrong step), not "
                            "from a chat template", "assistant_only_loss: false"),
    "truncation_mode": (lambda v: v != "keep_start", "the collator truncates from the end, keeping the prompt",
                        "truncation_mode: keep_start"),
}  # fmt: skip


def _mask_rule(script_args: SFTScriptArguments) -> str:
    """The model card's words for what happens to the wrong step."""
    if not script_args.mask_wrong_step:
        return "is trained too (`mask_wrong_step: false`)"
    if script_args.trained_error_types:
        return f"is masked, except for the error types {script_args.trained_error_types} (trained)"
    return "is masked"


def configure_training_args(training_args: SFTConfig) -> SFTConfig:
    """Set the SFTConfig flags the collator needs and refuse the ones that contradict it (one clear error each).

    - ``remove_unused_columns=False``: the raw columns must reach the collator (TRL would drop them).
    - ``dataset_kwargs={"skip_prepare_dataset": True}``: TRL must not tokenize the rows itself.
    - ``completion_only_loss`` is irrelevant (the collator builds the labels); it is set to False.
    """
    for name, (is_bad, why, fix) in _CONTRADICTIONS.items():
        value = getattr(training_args, name, None)
        if value is not None and is_bad(value):
            raise ValueError(f"`{name}: {value}` cannot be used with backtrack-masked SFT: {why}. Set `{fix}`.")
    dataset_kwargs = dict(training_args.dataset_kwargs or {})
    if dataset_kwargs.get("skip_prepare_dataset") is False:
        raise ValueError(
            "`dataset_kwargs: {skip_prepare_dataset: false}` would let TRL tokenize the rows and drop the columns the "
            "backtrack collator needs. Remove it (recipes/sft.py sets skip_prepare_dataset: true)."
        )
    dataset_kwargs["skip_prepare_dataset"] = True
    training_args.dataset_kwargs = dataset_kwargs
    training_args.remove_unused_columns = False
    training_args.completion_only_loss = False
    return training_args


def setup_logging(training_args: SFTConfig) -> None:
    """open-r1 style logging: one format, per-process level from ``log_level`` / ``log_level_replica``."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # backtrack-trl's own messages (token added, rank summaries) show at INFO on the main process by default.
    ours = logging.INFO if training_args.log_level == "passive" and training_args.should_log else log_level
    logger.setLevel(ours)
    logging.getLogger("backtrack_trl").setLevel(ours)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def load_sft_datasets(script_args: SFTScriptArguments, training_args: SFTConfig):
    """Load (train, eval or None) from a Hub-layout folder or Hub id and check the contract columns."""
    with training_args.main_process_first(desc="load dataset"):
        dataset = datasets.load_dataset(
            script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
        )
    splits = list(dataset.keys())
    if script_args.dataset_train_split not in dataset:
        raise ValueError(
            f"Dataset {script_args.dataset_name!r} has no split {script_args.dataset_train_split!r} (it has {splits}); "
            "set `dataset_train_split`."
        )
    train_dataset = dataset[script_args.dataset_train_split]
    if train_dataset.column_names is not None:
        check_columns(train_dataset.column_names, where=f"dataset {script_args.dataset_name!r}")
    if script_args.max_train_samples is not None and not script_args.dataset_streaming:
        train_dataset = train_dataset.select(range(min(script_args.max_train_samples, len(train_dataset))))
    eval_dataset = None
    if training_args.eval_strategy != "no":
        if script_args.dataset_test_split not in dataset:
            raise ValueError(
                f"eval_strategy={training_args.eval_strategy!r} but dataset {script_args.dataset_name!r} has no split "
                f"{script_args.dataset_test_split!r} (it has {splits}); set `dataset_test_split` or `eval_strategy: no`."
            )
        eval_dataset = dataset[script_args.dataset_test_split]
        if script_args.max_eval_samples is not None and not script_args.dataset_streaming:
            eval_dataset = eval_dataset.select(range(min(script_args.max_eval_samples, len(eval_dataset))))
    return train_dataset, eval_dataset


def load_tokenizer(model_args: ModelConfig, training_args: SFTConfig) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
    )
    for name in ("eos_token", "pad_token"):
        value = getattr(training_args, name, None)
        if value is not None:
            if value not in tokenizer.get_vocab():
                raise ValueError(f"`{name}: {value}` is not in the vocabulary of {model_args.model_name_or_path!r}.")
            setattr(tokenizer, name, value)
    return tokenizer


def load_model(model_args: ModelConfig, training_args: SFTConfig) -> PreTrainedModel:
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    model_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": getattr(training_args, "trust_remote_code", False),
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        "use_cache": not (training_args.activation_checkpointing or training_args.gradient_checkpointing),
        # Quantized weights are placed on this process's device; otherwise the trainer places the model.
        "device_map": {"": PartialState().local_process_index} if quantization_config is not None else None,
        "quantization_config": quantization_config,
    }
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)


def ensure_backtrack_token(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, pad_to_multiple_of: int | None = VOCAB_MULTIPLE
) -> int:
    """Add ``<backtrack>`` (and a pad token) when missing and resize + mean-initialise the embeddings, padded to a
    multiple of ``pad_to_multiple_of`` rows (None: exactly ``len(tokenizer)``; LoRA runs use it, because
    ``AutoPeftModelForCausalLM`` resizes the base model to ``len(tokenizer)`` when it loads the adapter).

    Runs before the trainer (hence before DeepSpeed) starts. Under ZeRO-3 the weights are already partitioned by
    ``from_pretrained``, so the new rows are set inside ``GatheredParameters`` (rank 0 writes, then re-partitions).
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    if not is_deepspeed_zero3_enabled():
        token_id = add_backtrack_token(tokenizer, model, pad_to_multiple_of=pad_to_multiple_of)
    else:
        import deepspeed

        token_id = add_backtrack_token(tokenizer)  # tokenizer only; the partitioned weights are handled below
        embeddings = model.get_input_embeddings()
        with deepspeed.zero.GatheredParameters([embeddings.weight]):
            old_rows = embeddings.weight.shape[0]
        if len(tokenizer) > old_rows:
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
            output = model.get_output_embeddings()
            tied = output is None or output.weight is model.get_input_embeddings().weight
            params = [model.get_input_embeddings().weight] + ([] if tied else [output.weight])
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                for param in params:
                    mean_init_rows(param, old_rows)
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    if len(tokenizer) > old_rows:
        logger.info(
            "Added %s (id %d); embeddings resized %d -> %d rows (%d tokens).",
            BACKTRACK_TOKEN, token_id, old_rows, model.get_input_embeddings().weight.shape[0], len(tokenizer),
        )  # fmt: skip
    return token_id


def configure_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make ``generate`` stop at the EOS the collator trains, pad with the tokenizer's pad id, and decode greedily.

    A base model's sampling defaults (Llama-3.2's ``do_sample: true, temperature: 0.6, top_p: 0.9``) are dropped:
    saved with the fine-tuned model they would apply silently to every ``generate`` call that does not set them.
    The decoders pass their own sampling options."""
    model.config.pad_token_id = tokenizer.pad_token_id
    generation_config = model.generation_config
    generation_config.do_sample = False
    for name in SAMPLING_FIELDS:
        setattr(generation_config, name, None)
    others = generation_config.eos_token_id
    others = [] if others is None else [others] if isinstance(others, int) else list(others)
    eos = [tokenizer.eos_token_id] + [i for i in others if i != tokenizer.eos_token_id]
    generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
    generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        generation_config.bos_token_id = tokenizer.bos_token_id


def _module_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.split(".")[-1]
    return None


def lora_config_for_new_tokens(model_args: ModelConfig, model: PreTrainedModel):
    """``get_peft_config(model_args)`` with the embeddings and LM head in ``modules_to_save`` so ``<backtrack>`` learns.

    LoRA alone freezes the embedding matrix, so the freshly added ``<backtrack>`` row (mean-initialised) would
    never move and the model could not learn to emit it. Returns None when ``use_peft`` is off.
    """
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        return None
    input_name = _module_name(model, model.get_input_embeddings())
    output_name = _module_name(model, model.get_output_embeddings())
    modules = list(peft_config.modules_to_save or [])
    for name in (input_name, output_name):
        if name is not None and name not in modules:
            modules.append(name)
    peft_config.modules_to_save = modules
    if getattr(model.config, "tie_word_embeddings", False):
        # Keep the trainable copies of the tied input/output embeddings tied.
        peft_config.ensure_weight_tying = True
    targets = peft_config.target_modules
    if isinstance(targets, (list, set)) and output_name in targets:
        raise ValueError(
            f"`lora_target_modules` contains {output_name!r}: TRL scores tokens with the LM head weight directly, so "
            "an adapter on it never trains. The LM head is trained in full instead (modules_to_save)."
        )
    logger.info("LoRA: training %s in full so %s learns (modules_to_save=%s).", modules, BACKTRACK_TOKEN, modules)
    return peft_config


#: The model card: a ``string.Template`` shipped as package data (``${name}`` fields, see ``create_model_card``).
MODEL_CARD_TEMPLATE = "templates/model_card.md"
#: The card's example problem per task, as a dataset row (other tasks: the first training row).
CARD_EXAMPLE_ROWS = {"countdown": {"numbers": [2, 39, 45, 10], "target": 62}}


def model_card_template() -> string.Template:
    """The model card template, read from the installed package (``backtrack_trl/templates/model_card.md``)."""
    return string.Template(resources.files("backtrack_trl").joinpath(MODEL_CARD_TEMPLATE).read_text(encoding="utf-8"))


def _card_example(task: Task, train_dataset) -> Any:
    """The card's example problem: the task's fixed example, else the first training row's problem (None if none)."""
    if task.name in CARD_EXAMPLE_ROWS:
        return task.problem_from_row(CARD_EXAMPLE_ROWS[task.name])
    try:
        return task.problem_from_row(next(iter(train_dataset)))
    except (StopIteration, TypeError, KeyError, ValueError):
        return None


def _problem_code(problem: Any, prompt: str) -> tuple[str, str]:
    """(import line, expression) that build ``problem`` in the card's quick start: the dataclass constructor call when
    calling it with the problem's fields gives the same problem (e.g. Countdown's ``Problem(numbers=(2, 39, 45, 10),
    target=62)``), else the prompt string. Built from the fields, never by evaluating text."""
    cls = type(problem)
    if dataclasses.is_dataclass(problem) and cls.__module__ not in ("__main__", "builtins"):
        values = {f.name: getattr(problem, f.name) for f in dataclasses.fields(problem) if f.init}
        try:
            same = cls(**values) == problem
        except (TypeError, ValueError):
            same = False
        if same:
            arguments = ", ".join(f"{name}={value!r}" for name, value in values.items())
            return f"\nfrom {cls.__module__} import {cls.__name__}", f"{cls.__name__}({arguments})"
    return "", repr(prompt)


def card_task_fields(task: str | Task, train_dataset=None) -> dict[str, str]:
    """The model card's task-specific fields, from the task plug-in (``card_text``, ``format_prompt``, ``solve``)."""
    task = get_task(task)
    fields = {
        "task_title": task.name.replace("_", " ").capitalize(),
        "task_tag": task.name,
        "task_text": task.card_text(),
        "task_option": "" if task.name == "countdown" else f", task={task.name!r}",
    }
    problem = _card_example(task, train_dataset)
    if problem is None:
        prompt, answer, problem_import, code = "###Question: ...\n###Response:\n", "...", "", '"###Question: ..."'
    else:
        prompt = task.format_prompt(problem)
        steps = task.solve(problem)
        answer = task.format_response(steps) if steps is not None else "(no solution)"
        problem_import, code = _problem_code(problem, prompt)
    fields.update(
        prompt=prompt.replace("\n", "\\n"),
        answer=answer.rstrip("\n"),
        problem_import=problem_import,
        problem=code,
    )
    return fields


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and not os.path.exists(name) and name.count("/") == 1


class BacktrackSFTTrainer(SFTTrainer):
    """SFTTrainer whose model card (checkpoints, final save, push_to_hub) documents backtrack SFT and our decoder."""

    def __init__(self, *args, script_args: SFTScriptArguments, model_args: ModelConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.script_args = script_args
        self.model_args = model_args

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        if not self.is_world_process_zero():
            return
        import trl

        args, script_args, model_args = self.args, self.script_args, self.model_args
        model_name = model_name or (args.hub_model_id or args.output_dir).rstrip("/").split("/")[-1]
        repo = args.hub_model_id or args.output_dir
        base_model = model_args.model_name_or_path
        dataset = script_args.dataset_name
        front = ["library_name: transformers", "pipeline_tag: text-generation"]
        if _is_hub_id(base_model):
            front.append(f"base_model: {base_model}")
        if _is_hub_id(dataset):
            front.append(f"datasets:\n- {dataset}")
        task_fields = card_task_fields(script_args.task, self.train_dataset)
        tags = ["trl", "sft", "self-backtracking", task_fields.pop("task_tag")]
        front.append("tags:\n" + "".join(f"- {t}\n" for t in tags).rstrip())
        peft = bool(model_args.use_peft)
        if peft:
            imports = "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
            load = f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}").merge_and_unload()\n'
        else:
            imports = "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            load = f'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
        load += f'tokenizer = AutoTokenizer.from_pretrained("{repo}")'
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        results = ""
        if losses:
            results = f"- Final training loss: {losses[-1]:.4f} after {self.state.global_step} steps.\n"
        epochs = (
            f"{args.max_steps} steps" if args.max_steps and args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"
        )
        try:
            rows = f", {len(self.train_dataset):,} rows"
        except TypeError:
            rows = ""
        text = model_card_template().substitute(
            **task_fields,
            front_matter="\n".join(front) + "\n",
            model_name=model_name,
            what=(
                "It was trained on optimal solutions and backtrack examples, so it can emit `<backtrack>` after a "
                "wrong step."
                if "optimal" not in str(dataset).split("/")[-1]
                else "It was trained on optimal solutions only (the baseline of the paper)."
            ),
            imports=imports.rstrip(),
            load=load,
            backtrack_id=self.processing_class.convert_tokens_to_ids(BACKTRACK_TOKEN),
            base_model=base_model,
            dataset_name=dataset,
            train_split=script_args.dataset_train_split,
            rows=rows,
            mask_rule=_mask_rule(script_args),
            lr=args.learning_rate,
            scheduler=str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
            warmup=args.warmup_steps,
            batch=args.per_device_train_batch_size,
            accum=args.gradient_accumulation_steps,
            world=args.world_size,
            epochs=epochs,
            max_length=args.max_length,
            weight_decay=args.weight_decay,
            peft=f", LoRA r={model_args.lora_r} alpha={model_args.lora_alpha} (embeddings and LM head trained in full)"
            if peft
            else "",
            results=results,
            trl=trl.__version__,
            transformers=transformers.__version__,
            torch=torch.__version__,
            datasets=datasets.__version__,
        )
        atomic_write_text(os.path.join(args.output_dir, "README.md"), text)


def _resume_checkpoint(training_args: SFTConfig) -> str | None:
    requested = training_args.resume_from_checkpoint
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if requested in (None, "", "False", "false"):
        return last
    if requested in ("True", "true", True, "last"):
        if last is None:
            raise ValueError(
                f"resume_from_checkpoint asks for the last checkpoint but {training_args.output_dir!r} has none."
            )
        return last
    return requested


def train(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict[str, Any]:
    """Run backtrack-masked SFT and save the result in ``training_args.output_dir``; return the metrics.

    Returned keys: ``train_loss`` (mean over training), ``final_loss`` (last logged loss), ``train_runtime``,
    ``global_step``, ``world_size``, ``num_untrained_examples`` / ``num_truncated_examples`` (this process's collator),
    ``output_dir`` and ``eval_*`` when an eval split is used.
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
    logger.info("Script parameters %s", script_args)
    logger.info("Model parameters %s", model_args)
    logger.info("Training parameters %s", training_args)

    checkpoint = _resume_checkpoint(training_args)
    if checkpoint is not None:
        logger.info("Resuming from checkpoint %s.", checkpoint)

    train_dataset, eval_dataset = load_sft_datasets(script_args, training_args)
    tokenizer = load_tokenizer(model_args, training_args)
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

    logger.info("*** Train ***")
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(train_dataset) if hasattr(train_dataset, "__len__") else None
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
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
    return metrics


def shutdown_distributed() -> None:
    """Wait for every rank, then tear the process group down (avoids gloo aborting a rank that exits first)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def make_parser() -> TrlParser:
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))


def _check_recipe_keys(argv: list[str]) -> None:
    """Name unknown keys of the ``--config`` YAML before any dataclass is built (their own errors would come first)."""
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return
    path = argv[argv.index("--config") + 1]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Recipe {path!r} (--config) does not exist.")
    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {path!r} must be a YAML mapping of option: value.")
    known = {f.name for cls in (SFTScriptArguments, SFTConfig, ModelConfig) for f in dataclasses.fields(cls)}
    unknown = sorted(set(recipe) - known - {"env"})
    if unknown:
        raise ValueError(
            f"Recipe {path!r} has unknown key(s) {unknown}. These are not options of recipes/sft.py "
            "(SFTScriptArguments, trl.SFTConfig or trl.ModelConfig): check the spelling, or list every option with "
            "`python recipes/sft.py --help`."
        )


def parse_args(argv: list[str] | None = None) -> tuple[SFTScriptArguments, SFTConfig, ModelConfig]:
    """Parse ``--config recipe.yaml`` + CLI overrides; an unknown recipe key or flag gives one clear error naming it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _check_recipe_keys(argv)
    parser = make_parser()
    try:
        parsed = parser.parse_args_and_config(args=argv)
    except ValueError as error:
        message = str(error)
        if "Unknown arguments from config file" in message or "not used by the HfArgumentParser" in message:
            raise ValueError(
                f"{message.split('. Please')[0]}. These are not options of recipes/sft.py (SFTScriptArguments, "
                "trl.SFTConfig or trl.ModelConfig): check the spelling, or list every option with "
                "`python recipes/sft.py --help`."
            ) from None
        raise
    check_training_values(parsed[1])
    return parsed


def check_training_values(args: SFTConfig) -> None:
    """The training values transformers accepts silently but that cannot train (e.g. a negative learning rate)."""
    if not args.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {args.learning_rate!r}.")
    if not (args.max_steps and args.max_steps > 0) and not args.num_train_epochs > 0:
        raise ValueError(f"--num_train_epochs must be > 0 (or set --max_steps), got {args.num_train_epochs!r}.")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)!r}.")
    if args.max_length is not None and args.max_length < 1:
        raise ValueError(f"--max_length must be >= 1 (or unset), got {args.max_length!r}.")
    if args.weight_decay < 0 or args.warmup_steps < 0:
        raise ValueError(f"--weight_decay and --warmup_steps must be >= 0, got {args.weight_decay!r} and "
                         f"{args.warmup_steps!r}.")  # fmt: skip
