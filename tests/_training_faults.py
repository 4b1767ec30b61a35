"""Crash a training run in the middle of a checkpoint save, at a chosen step and point of the Trainer's save order.

``Trainer._save_checkpoint`` (transformers 5.23) writes the model (config, then the weights), the optimizer and
scheduler, the RNG states and last ``trainer_state.json``. The crash points:

- ``weights``: the weights file is half written (truncated), nothing after it;
- ``optimizer``: the model is saved, the optimizer is not;
- ``trainer_state``: everything but the end of ``trainer_state.json`` (half of its text).

In-process (fast tests) the crash raises :class:`SimulatedKill`; run as a script it SIGKILLs its own process, a
real ``kill -9``:

    BACKTRACK_TEST_CRASH=4:weights python tests/_training_faults.py recipes/sft.py --config ...
"""

from __future__ import annotations

import os
import re
import runpy
import signal
import sys


POINTS = ("weights", "optimizer", "trainer_state")


class SimulatedKill(BaseException):
    """A crash during a checkpoint save (BaseException: no ``except Exception`` of the code under test catches it)."""


def _crash(kill: bool) -> None:
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    raise SimulatedKill


def _in_checkpoint(path: str, step: int) -> bool:
    return re.search(rf"checkpoint-{step}(/|$)", str(path).replace(os.sep, "/")) is not None


def install_crash(step: int, point: str, kill: bool = False, patch=None) -> None:
    """Crash at ``point`` of the save of ``checkpoint-<step>``; ``patch(obj, name, value)`` sets attributes
    (pytest's ``monkeypatch.setattr`` in-process, plain ``setattr`` in a script)."""
    import transformers.modeling_utils as modeling_utils
    from transformers import Trainer, TrainerState

    patch = patch or setattr
    if point == "weights":
        original_save = modeling_utils.safe_save_file

        def save_file(tensors, filename, *args, **kwargs):
            original_save(tensors, filename, *args, **kwargs)
            if _in_checkpoint(os.path.dirname(filename), step):
                size = os.path.getsize(filename)
                with open(filename, "r+b") as f:
                    f.truncate(size // 2)
                _crash(kill)

        patch(modeling_utils, "safe_save_file", save_file)
    elif point == "optimizer":
        original_optimizer = Trainer._save_optimizer_and_scheduler

        def save_optimizer(self, output_dir):
            if _in_checkpoint(output_dir, step):
                _crash(kill)
            return original_optimizer(self, output_dir)

        patch(Trainer, "_save_optimizer_and_scheduler", save_optimizer)
    elif point == "trainer_state":
        original_state = TrainerState.save_to_json

        def save_to_json(self, json_path):
            original_state(self, json_path)
            if _in_checkpoint(os.path.dirname(json_path), step):
                with open(json_path, "r+") as f:
                    f.truncate(len(f.read()) // 2)
                _crash(kill)

        patch(TrainerState, "save_to_json", save_to_json)
    else:
        raise ValueError(f"crash point {point!r} is not one of {POINTS}")


if __name__ == "__main__":
    crash_step, crash_point = os.environ["BACKTRACK_TEST_CRASH"].split(":")
    install_crash(int(crash_step), crash_point, kill=True)
    recipe, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(recipe, run_name="__main__")
