"""The model cards (``README.md``) the trainers write beside the weights: checkpoints, final save and push_to_hub.

- SFT: the package's ``templates/model_card.md`` (a ``string.Template``); its task paragraph and quick-start example
  come from the task plug-in (:func:`card_task_fields`), the rest from the trainer's arguments and logs.
- DPO / KTO: a short card (method, beta, dataset, base model, last loss and reward margin).

Each is a mixin in front of the TRL trainer class, overriding ``create_model_card`` (world process zero writes).

Usage:

```python
from backtrack_trl.training.model_card import card_task_fields, model_card_template

fields = card_task_fields("countdown")  # task_title, task_text, prompt, answer, problem, ...
assert "${task_text}" in model_card_template().template
print(fields["prompt"])  # ###Question: numbers [2, 39, 45, 10]->target 62\\n###Response:\\n
```
"""

from __future__ import annotations

import dataclasses
import os
import string
from collections.abc import Callable
from importlib import resources
from typing import Any

from backtrack_trl.atomic_io import atomic_write_text
from backtrack_trl.tasks.base import BACKTRACK_TOKEN, Task, get_task


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


def _mask_rule(script_args) -> str:
    """The model card's words for what happens to the wrong step."""
    if not script_args.mask_wrong_step:
        return "is trained too (`mask_wrong_step: false`)"
    if script_args.trained_error_types:
        return f"is masked, except for the error types {script_args.trained_error_types} (trained)"
    return "is masked"


def _trained_for(args) -> str:
    """``"N steps"`` when ``max_steps`` bounds the training, else ``"E epochs"``."""
    return f"{args.max_steps} steps" if args.max_steps and args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"


def _framework_versions() -> dict[str, str]:
    import datasets
    import torch
    import transformers
    import trl

    return {
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "datasets": datasets.__version__,
    }


def _logged_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def write_model_card(trainer, model_name: str | None, card_text: Callable[[Any, str], str]) -> None:
    """On world process zero, write ``card_text(trainer, model_name)`` as ``README.md`` of the output folder
    (``model_name`` defaults to the last part of ``hub_model_id`` or ``output_dir``)."""
    if not trainer.is_world_process_zero():
        return
    args = trainer.args
    model_name = model_name or (args.hub_model_id or args.output_dir).rstrip("/").split("/")[-1]
    atomic_write_text(os.path.join(args.output_dir, "README.md"), card_text(trainer, model_name))


def sft_card_text(trainer, model_name: str) -> str:
    """The SFT card: the package template filled from the task plug-in, the trainer's arguments and its logs."""
    args, script_args, model_args = trainer.args, trainer.script_args, trainer.model_args
    repo = args.hub_model_id or args.output_dir
    base_model = model_args.model_name_or_path
    dataset = script_args.dataset_name
    front = ["library_name: transformers", "pipeline_tag: text-generation"]
    if _is_hub_id(base_model):
        front.append(f"base_model: {base_model}")
    if _is_hub_id(dataset):
        front.append(f"datasets:\n- {dataset}")
    task_fields = card_task_fields(script_args.task, trainer.train_dataset)
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
    losses = _logged_losses(trainer)
    results = ""
    if losses:
        results = f"- Final training loss: {losses[-1]:.4f} after {trainer.state.global_step} steps.\n"
    try:
        rows = f", {len(trainer.train_dataset):,} rows"
    except TypeError:
        rows = ""
    return model_card_template().substitute(
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
        backtrack_id=trainer.processing_class.convert_tokens_to_ids(BACKTRACK_TOKEN),
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
        epochs=_trained_for(args),
        max_length=args.max_length,
        weight_decay=args.weight_decay,
        peft=f", LoRA r={model_args.lora_r} alpha={model_args.lora_alpha} (embeddings and LM head trained in full)"
        if peft
        else "",
        results=results,
        **_framework_versions(),
    )


def preference_card_text(trainer, model_name: str) -> str:
    """A short DPO / KTO card (method, beta, dataset, base model, last loss and reward margin)."""
    args, script = trainer.args, trainer.script_args
    # The TRL trainer class the mixin stands in front of (DPOTrainer or KTOTrainer).
    trl_class = next(cls.__name__ for cls in type(trainer).__mro__ if cls.__module__.startswith("trl."))
    losses = _logged_losses(trainer)
    margins = [entry[k] for entry in trainer.state.log_history for k in ("rewards/margins",) if k in entry]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags:\n- trl\n- {script.method}\n- self-backtracking\n- {script.task}",
        "---",
        "",
        f"# {model_name}",
        "",
        f"A {script.task} model trained with **{script.method.upper()}** (TRL's `{trl_class}`) "
        "on the pairs of a backtrack dataset: the preference baseline of Self-Backtracking "
        "([arXiv 2502.04404](https://arxiv.org/abs/2502.04404), Table 1). Chosen: the optimal solution; "
        "rejected: a correct prefix followed by a wrong step.",
        "",
        f"- Method: {script.method} (loss `{args.loss_type}`), beta {args.beta}",
        f"- Base (and reference) model: `{trainer.model_args.model_name_or_path}`",
        f"- Dataset: `{script.dataset_name}`, config `{script.dataset_config}`, split "
        f"`{script.dataset_train_split}` ({len(trainer.train_dataset):,} rows)",
        f"- Hyperparameters: learning rate {args.learning_rate}, {args.per_device_train_batch_size} per device x "
        f"{args.gradient_accumulation_steps} accumulation x {args.world_size} processes, {_trained_for(args)}, "
        f"max length {args.max_length}",
    ]
    if losses:
        lines.append(f"- Final training loss: {losses[-1]:.4f} after {trainer.state.global_step} steps")
    if margins:
        lines.append(f"- Last logged reward margin: {margins[-1]:.4f}")
    versions = _framework_versions()
    lines += ["", f"Framework versions: TRL {versions['trl']}, transformers {versions['transformers']}, "
              f"torch {versions['torch']}, datasets {versions['datasets']}.", ""]  # fmt: skip
    return "\n".join(lines)


class SFTCardMixin:
    """``create_model_card`` of the SFT trainer (checkpoints, the final save and push_to_hub call it)."""

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        write_model_card(self, model_name, sft_card_text)


class PreferenceCardMixin:
    """``create_model_card`` of the DPO / KTO trainers."""

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        write_model_card(self, model_name, preference_card_text)
