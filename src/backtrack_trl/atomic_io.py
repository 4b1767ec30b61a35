"""Write files and whole output folders atomically: build them in a temporary sibling, then rename into place.

A crash or an exception never leaves a half-written file, dataset or model folder behind: either the old one (or
nothing) or the complete new one is at the destination, and the temporary sibling is deleted on an error. Every
writer of the package goes through here: :func:`atomic_write_text` / :func:`atomic_write_json` for text,
:func:`atomic_path` for writers that need a file name (``savefig``, ``to_parquet``) and :func:`atomic_directory`
for folders. Temporary files are named ``.<name>.<random>.tmp`` beside the target.

Usage:

```python
import tempfile
from pathlib import Path

from backtrack_trl.atomic_io import atomic_directory, atomic_path, atomic_write_json, atomic_write_text

root = Path(tempfile.mkdtemp())
atomic_write_text(root / "notes.md", "hello\n")
atomic_write_json(root / "metrics.json", {"accuracy": 0.5})
with atomic_path(root / "table.csv") as tmp:  # a temporary file in the same folder; renamed on success
    tmp.write_text("a,b\n1,2\n")
with atomic_directory(root / "my_output") as tmp:  # FileExistsError if it exists and overwrite=False
    (tmp / "file.txt").write_text("hello")
assert (root / "my_output" / "file.txt").read_text() == "hello"
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


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``, on an exception it is deleted.

    For writers that take a file name (``fig.savefig(tmp, format="png")``, ``frame.to_parquet(tmp)``): the temporary
    name ends in ``.tmp``, so pass the format explicitly to writers that guess it from the extension. The file gets
    the permissions of a plain ``open(path, "w")`` (not mkstemp's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (sorted keys, ``str`` for other types) to ``path`` atomically."""
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
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
