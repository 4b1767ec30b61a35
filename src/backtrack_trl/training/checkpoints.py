"""Which checkpoint a training run resumes from: ``resume_from_checkpoint`` as recipes and the study loop use it.

- unset / ``false``: the newest COMPLETE ``checkpoint-*`` of ``output_dir`` when there is one (an interrupted run
  continues), else None (a fresh start);
- ``true`` / ``last``: the newest complete checkpoint, and an error when ``output_dir`` holds none;
- a path: that checkpoint, refused when it is incomplete.

A checkpoint is complete when the Trainer finished writing it. ``Trainer._save_checkpoint`` (transformers 5.23) writes,
in this order, the model (weights, config, tokenizer, card), the optimizer and scheduler, the RNG states and, last,
``trainer_state.json``; so a checkpoint is complete when its ``trainer_state.json`` parses and names the folder's step
and a weights file is there. A kill during a save (or during the rotation that deletes old checkpoints) leaves an
incomplete folder: resuming from it fails ("Can't find a valid checkpoint") or, worse, silently restarts at step 0
with a fresh optimizer. Such folders are renamed aside to ``incomplete-checkpoint-<step>`` (one log line) and never
used: renaming is instant and atomic where deleting a multi-GB folder could itself be cut short, the interrupted
save's files stay there for a look, and the new name matches neither the Trainer's resume nor its rotation, so the
rerun saves ``checkpoint-<step>`` afresh. Delete them by hand when they are not needed.

Usage:

```python
from trl import SFTConfig

from backtrack_trl.training.checkpoints import resume_checkpoint

training_args = SFTConfig("models/countdown-tiny/backtrack-sft", use_cpu=True, bf16=False)
checkpoint = resume_checkpoint(training_args)  # None, or ".../checkpoint-40" (the newest complete one)
```
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path


logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Prefix of an incomplete checkpoint set aside (``incomplete-checkpoint-40``).
INCOMPLETE_PREFIX = "incomplete-"
#: The file ``Trainer._save_checkpoint`` writes last.
TRAINER_STATE = "trainer_state.json"
#: Weight files a checkpoint's model save leaves (full model, sharded, LoRA adapter, legacy .bin).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


def _has_weights(folder: Path) -> bool:
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return True
    # DeepSpeed (global_step<N>/) and FSDP (pytorch_model_fsdp*) keep the weights in their own layout.
    return any(entry.name.startswith(("global_step", "pytorch_model_fsdp")) for entry in folder.iterdir())


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a complete checkpoint (None when it is complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE} (the Trainer writes it last, so the save was cut short)"
    try:
        global_step = json.loads(state_file.read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{TRAINER_STATE} is truncated or unreadable"
    match = CHECKPOINT_RE.match(folder.name)
    if match and int(match.group(1)) != global_step:
        return f"{TRAINER_STATE} says step {global_step}"
    if not _has_weights(folder):
        return "no model weights (model.safetensors, adapter_model.safetensors, ...)"
    return None


def scan_checkpoints(output_dir: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(complete, incomplete)`` ``checkpoint-<step>`` folders of ``output_dir``: the complete ones oldest first,
    the incomplete ones with the reason."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return [], []
    found = []
    for entry in output_dir.iterdir():
        match = CHECKPOINT_RE.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    complete, incomplete = [], []
    for _, folder in sorted(found):
        problem = checkpoint_problem(folder)
        if problem is None:
            complete.append(folder)
        elif folder.exists():  # another rank may have set it aside meanwhile
            incomplete.append((folder, problem))
    return complete, incomplete


def set_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint to ``incomplete-<name>`` (replacing an older one of the same step)."""
    target = folder.with_name(INCOMPLETE_PREFIX + folder.name)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(folder, target)
    except FileNotFoundError:  # another node's main process moved it first (a shared file system)
        pass
    return target


def set_aside_incomplete(output_dir: str | os.PathLike, main_process: bool = True) -> list[Path]:
    """Set the incomplete checkpoints of ``output_dir`` aside (only ``main_process`` renames; every process skips
    them) and report them in one log line; return the complete ones, oldest first."""
    complete, incomplete = scan_checkpoints(output_dir)
    if incomplete:
        if main_process:
            for folder, _ in incomplete:
                set_aside(folder)
        logger.warning(
            "%s: %d incomplete checkpoint(s) from an interrupted save, set aside as %s and never resumed from (%s); "
            "delete them when not needed.",
            output_dir,
            len(incomplete),
            ", ".join(INCOMPLETE_PREFIX + folder.name for folder, _ in incomplete),
            "; ".join(f"{folder.name}: {problem}" for folder, problem in incomplete),
        )
    return complete


def resume_checkpoint(training_args, fresh: bool = False) -> str | None:
    """The checkpoint to pass to ``trainer.train(resume_from_checkpoint=...)`` (see the module docstring).

    ``fresh`` (``--overwrite_output_dir``): never pick up a checkpoint of ``output_dir`` by itself; an explicit path
    is still used.
    """
    requested = training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    named = requested not in (None, "", "False", "false", False, "True", "true", True, "last")
    if named:
        problem = checkpoint_problem(requested)
        if problem is not None:
            raise ValueError(
                f"--resume_from_checkpoint {requested!r} is not a complete checkpoint ({problem}). Name another "
                f"checkpoint-<step> folder, or pass `last` for the newest complete one of --output_dir."
            )
        return str(requested)
    if fresh:
        return None
    main_process = getattr(training_args, "local_process_index", 0) == 0
    complete = set_aside_incomplete(output_dir, main_process) if os.path.isdir(output_dir) else []
    last = str(complete[-1]) if complete else None
    if requested in ("True", "true", True, "last") and last is None:
        raise ValueError(
            f"--resume_from_checkpoint {requested!r} asks for the last checkpoint but --output_dir {output_dir!r} "
            "has no complete one. Leave resume_from_checkpoint unset to start afresh."
        )
    return last


class ResumeAtTheEndMixin:
    """In front of a ``transformers.Trainer`` class: resuming from a checkpoint saved at the last step trains nothing.

    transformers 5.23 checks ``max_steps`` only after a step, so resuming from the final checkpoint of a
    ``max_steps`` run that ends inside an epoch (a kill after it, before the final save) trained one step more than
    asked. With this mixin such a resume trains no step; its ``train_loss`` (the Trainer's mean over the steps of this
    call, here 0.0 for none) is the mean of the run's logged losses instead.
    """

    def _run_epoch(self, *args, **kwargs):
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if getattr(self, "_initial_global_step", None) == self.state.global_step and "train_loss" in output.metrics:
            losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
            output.metrics["train_loss"] = sum(losses) / len(losses) if losses else float("nan")
        return output
