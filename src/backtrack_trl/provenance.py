"""Where a result comes from: the seed, the CPU threads, the code revision and the library versions of a run.

The same config, seed and torch thread count give the same datasets, weights and numbers
(``tests/training/test_training_determinism.py``, ``tests/evaluation/test_evaluation_determinism.py``); the thread
count is part of that key because a reduction split over more threads may add in another order. So every report
records these: the evaluation writes ``provenance.json`` beside ``metrics.json``,
SFT beside ``train_results.json``, the study in ``report/provenance.json`` and at the top of ``report/report.md``.

The revision is ``git rev-parse --short HEAD`` of the checkout this package is imported from, with ``-dirty`` when
``git status --porcelain`` lists anything (a changed or untracked file may change the numbers); ``"unknown"`` when the
package is not a tracked file of a git checkout (an installed wheel) or git is missing. It never raises.

Usage:

```python
import tempfile

from backtrack_trl.provenance import provenance, provenance_markdown, write_provenance

info = provenance(seed=42)  # {"seed": 42, "torch_threads": 2, "omp_num_threads": "2", "revision": "b28f86d", ...}
print(provenance_markdown(info))  # Provenance: seed 42, torch threads 2 (OMP_NUM_THREADS=2), revision b28f86d, ...
path = write_provenance(tempfile.mkdtemp(), seed=42)  # <folder>/provenance.json
```
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from backtrack_trl.atomic_io import atomic_write_text


PROVENANCE_FILE = "provenance.json"
# The libraries whose versions change the numbers (kernels, trainer loop, sampler).
LIBRARIES = ("torch", "transformers", "trl")
_GIT_TIMEOUT_S = 10


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of ``git <args>`` in ``cwd``, or None when git is missing, fails or hangs."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def code_revision(path: str | os.PathLike | None = None) -> str:
    """``<short hash>[-dirty]`` of the git checkout that tracks ``path`` (default: this package), else "unknown".

    ``path`` must be a tracked file (or a folder holding tracked files): a package installed into a virtual environment
    that happens to sit inside some git checkout is not that checkout's code, and gets "unknown".
    """
    target = Path(path) if path is not None else Path(__file__).resolve().parent / "__init__.py"
    cwd = target if target.is_dir() else target.parent
    if not cwd.is_dir() or _git(["ls-files", "--error-unmatch", "--", str(target)], cwd) is None:
        return "unknown"
    head = _git(["rev-parse", "--short", "HEAD"], cwd)
    if not head or not head.strip():
        return "unknown"
    status = _git(["status", "--porcelain"], cwd)
    dirty = status is None or bool(status.strip())  # a status we cannot read cannot vouch for a clean tree
    return head.strip() + ("-dirty" if dirty else "")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def provenance(seed: int | None = None, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The facts a result depends on besides its config: seed, threads, code revision, versions, Python, host.

    ``seed``: the run's seed (None when it has none); ``path``: see :func:`code_revision`.
    """
    return {
        "seed": seed,
        "torch_threads": _torch_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "revision": code_revision(path),
        **{name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


def provenance_markdown(info: dict[str, Any]) -> str:
    """One line for a markdown report: ``Provenance: seed 42, torch threads 2 (OMP_NUM_THREADS=2), revision ...``."""
    omp = info.get("omp_num_threads")
    threads = f"{info.get('torch_threads')} ({f'OMP_NUM_THREADS={omp}' if omp else 'OMP_NUM_THREADS unset'})"
    versions = ", ".join(f"{name} {info.get(name) or 'not installed'}" for name in LIBRARIES)
    return (
        f"Provenance: seed {info.get('seed')}, torch threads {threads}, revision `{info.get('revision')}`, "
        f"{versions}, Python {info.get('python')}."
    )


def write_provenance(folder: str | os.PathLike, seed: int | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write ``<folder>/provenance.json`` atomically (``info``, or :func:`provenance` of ``seed``); return its path."""
    info = provenance(seed) if info is None else info
    path = Path(folder) / PROVENANCE_FILE
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return path


__all__ = ["PROVENANCE_FILE", "code_revision", "provenance", "provenance_markdown", "write_provenance"]
