"""Write files and whole output folders atomically: build them in a temporary sibling, then rename into place.

A crash or an exception never leaves a half-written file, dataset or model folder behind: either the old one (or
nothing) or the complete new one is at the destination, and the temporary sibling is deleted on an error. Every
writer of the package goes through here: :func:`atomic_write_text` / :func:`atomic_write_json` for text,
:func:`atomic_path` for writers that need a file name (``savefig``, ``to_parquet``) and :func:`atomic_directory`
for folders. Temporary files are named ``.<name>.<random>.tmp`` beside the target; temporary folders
``.<name>.tmp-<host>-<pid>-<random>`` (the writing process), so that the next write of the same target deletes those
a killed writer left (:func:`clean_stale_temporaries`) and never those of a writer still running.

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
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

#: Fault tests set this to a step name (e.g. ``directory staged``): the process SIGKILLs itself there.
KILL_AT_ENV = "BACKTRACK_TRL_TEST_KILL_AT"


def crash_point(step: str) -> None:
    """Test hook between the steps of a write: ``kill -9`` this process at ``step`` when :data:`KILL_AT_ENV` names
    it, leaving the disk exactly as a real kill there would."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def writer_tag() -> str:
    """``<host>-<pid>`` of this process, part of the name of its temporary folders."""
    return f"{_host()}-{os.getpid()}"


def writer_alive(tag: str) -> bool:
    """Whether the process a :func:`writer_tag` names may still run: True for another host (it cannot be checked
    from here) and for a pid that exists (possibly reused: keeping a stale folder is the safe mistake)."""
    host, _, pid = tag.rpartition("-")
    if host != _host() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _temporary_folder(path: Path, kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}-{writer_tag()}-", dir=path.parent))


def clean_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Tidy what killed writers of the folder ``path`` left beside it; return what was done.

    A temporary ``.<name>.tmp-<host>-<pid>-*`` whose process is gone is deleted; a backup ``.<name>.old-...`` (the
    previous folder, moved aside for the last rename) is put back if ``path`` is missing, else deleted. Those of a
    live process (or another host) are kept, and so are untagged ones of older versions (with a warning).
    """
    path = Path(path).absolute()
    if not path.parent.is_dir():
        return []
    actions = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)-(?:(?P<tag>[A-Za-z0-9_]+-\d+)-)?[^/]*$")
    for entry in sorted(path.parent.iterdir(), key=lambda entry: entry.name):
        found = pattern.match(entry.name)
        if found is None or not entry.is_dir():
            continue
        if found["tag"] is None:
            logger.warning("Left %s alone: it names no writer process; delete it if no run writes %s.", entry, path)
        elif writer_alive(found["tag"]):
            continue
        elif found[1] == "old" and not path.exists():
            os.rename(entry, path)
            actions.append(f"restored {path.name} from {entry.name}")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            actions.append(f"removed the leftover {entry.name}")
    return actions


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
        backup = _temporary_folder(destination, "old")
        os.rmdir(backup)
        os.rename(destination, backup)
        crash_point("old folder moved aside")
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
    """Yield a temporary folder next to ``path``; on success it replaces ``path``, on an exception it is deleted.

    First the leftovers of killed writers of ``path`` are tidied (:func:`clean_stale_temporaries`)."""
    for action in clean_stale_temporaries(path):
        logger.warning("Tidied an interrupted write of %s: %s", path, action)
    path = check_output_dir(path, overwrite, what).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_folder(path, "tmp")
    # mkdtemp creates the folder with mode 0700; give the final folder the usual permissions instead.
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        crash_point("directory staged")
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
