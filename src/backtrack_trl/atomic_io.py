"""Write whole output folders atomically: build them in a temporary sibling folder, then rename into place.

A crash or an exception never leaves a half-written dataset or model folder behind: either the old folder (or
nothing) or the complete new one is at the destination.

Usage:

```python
import tempfile
from pathlib import Path
from typing import Any

from backtrack_trl.atomic_io import atomic_directory

out = Path(tempfile.mkdtemp()) / "my_output"
with atomic_directory(out) as tmp:  # FileExistsError if `out` exists and overwrite=False
    (tmp / "file.txt").write_text("hello")
assert (out / "file.txt").read_text() == "hello"
```
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def check_output_dir(path: str | os.PathLike, overwrite: bool, what: str = "output folder") -> Path:
    """Raise a FileExistsError naming ``path`` and the fix if it exists and ``overwrite`` is False."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            f"The {what} {str(path)!r} exists and is not a folder; remove it or choose another path."
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"The {what} {str(path)!r} already exists. Pass --overwrite (overwrite=True) to replace it, or choose "
            f"another path."
        )
    return path


def replace_directory(source: Path, destination: Path) -> None:
    """Move the folder ``source`` to ``destination``, replacing an existing ``destination`` with two renames."""
    backup = None
    if destination.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old-", dir=destination.parent))
        os.rmdir(backup)
        os.rename(destination, backup)
    try:
        os.rename(source, destination)
    except BaseException:
        if backup is not None:  # put the old folder back so the destination never disappears
            os.rename(backup, destination)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path``, on an exception it is deleted."""
    path = check_output_dir(path, overwrite, what).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    # mkdtemp creates the folder with mode 0700; give the final folder the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
