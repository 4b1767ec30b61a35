"""Resumable, atomic bookkeeping for multi-stage jobs (the default study and the self-improvement loop).

A study folder holds ``state.json``: the fingerprint of the configuration that created it and the stages that
finished, with their wall times. A stage is recorded only after all its outputs were written (each output is
written to a temporary path and renamed), so a job killed at any point and run again skips exactly the finished
stages and redoes the interrupted one from scratch.

Usage:

```python
from backtrack_trl.study.state import StudyState

state = StudyState.open("results/demo", config={"seed": 0}, ignore_keys=("rounds",))
if not state.is_done("build_data"):
    ...  # do the work, writing outputs atomically
    state.mark_done("build_data", seconds=1.5)
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtrack_trl.atomic_io import atomic_write_json, atomic_write_text  # noqa: F401  (atomic_write_text: re-exported)
from backtrack_trl.study.lock import LOCK_FILE


STATE_FILE = "state.json"


def fingerprint(config: dict[str, Any], ignore_keys: tuple[str, ...] = ()) -> str:
    kept = {k: v for k, v in sorted(config.items()) if k not in ignore_keys}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ConfigMismatchError(ValueError):
    pass


@dataclass
class StudyState:
    folder: Path
    config: dict[str, Any]
    config_fingerprint: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        config: dict[str, Any],
        ignore_keys: tuple[str, ...] = (),
        overwrite: bool = False,
    ) -> "StudyState":
        """Open (or create) the state of ``folder``; refuse a folder made by a different configuration.

        ``ignore_keys`` are options that may change between runs without invalidating finished work (e.g. the number
        of self-improvement rounds: asking for more rounds continues the study).
        """
        folder = Path(folder)
        fp = fingerprint(config, ignore_keys)
        path = folder / STATE_FILE
        if overwrite and folder.exists():
            for entry in folder.iterdir():  # keep the run's own lock file (see study_lock)
                if entry.name != LOCK_FILE:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("config_fingerprint") != fp:
                old = saved.get("config", {})
                diff = sorted(
                    k for k in set(old) | set(config) if k not in ignore_keys and old.get(k) != config.get(k)
                )
                shown = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff[:6]) or "unknown"
                raise ConfigMismatchError(
                    f"Output folder {folder} was created by a different configuration ({shown}). Use another "
                    f"--output_dir, or pass --overwrite to delete it and start again."
                )
            return cls(folder, config, fp, saved.get("stages", {}))
        if folder.exists() and any(p.name not in (STATE_FILE, LOCK_FILE) for p in folder.iterdir()):
            raise ConfigMismatchError(
                f"Output folder {folder} exists and was not created by this tool (no {STATE_FILE}). Use another "
                f"--output_dir, or pass --overwrite to delete it."
            )
        state = cls(folder, config, fp)
        state.save()
        return state

    def save(self) -> None:
        payload = {"config_fingerprint": self.config_fingerprint, "config": self.config, "stages": self.stages}
        atomic_write_json(self.folder / STATE_FILE, payload)

    def is_done(self, stage: str) -> bool:
        return stage in self.stages

    def mark_done(self, stage: str, seconds: float, **info: Any) -> None:
        self.stages[stage] = {"seconds": round(seconds, 2), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self.save()

    def forget(self, stage: str) -> None:
        if self.stages.pop(stage, None) is not None:
            self.save()
