"""One run per study folder: an exclusive lock on ``<output_dir>/.study.lock``, which holds the owner's PID.

The lock is an ``flock`` on the file, so the kernel releases it when the owner dies, even by ``kill -9``: a lock
file left behind by a dead run is stale and is taken over (with a note). While the lock is held by a live process,
a second run on the same folder stops at once with one message naming that process. Stage guards inherit the lock,
so a killed study's folder stays locked until its stopping stages are gone.

Usage:

```python
import tempfile

from backtrack_trl.study.lock import StudyLockedError, study_lock

folder = tempfile.mkdtemp()
with study_lock(folder) as fd:
    try:
        with study_lock(folder, wait=0):
            pass
    except StudyLockedError as error:
        print(error)  # ... is in use by PID ...
```
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


try:
    import fcntl
except ImportError:  # Windows: no advisory locks, runs are not guarded
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_FILE = ".study.lock"


class StudyLockedError(RuntimeError):
    """Another live process runs a study in this folder."""


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {"pid": raw}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    parts = [f"PID {holder.get('pid', '?')}"]
    if holder.get("host") and holder["host"] != socket.gethostname():
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    if holder.get("command"):
        parts.append(f"running `{holder['command']}`")
    return ", ".join(parts)


@contextmanager
def study_lock(folder: str | os.PathLike, wait: float = 20.0) -> Iterator[int]:
    """Hold the study lock of ``folder`` (created if needed) for the ``with`` block; yield the lock's fd.

    If the lock is held, wait up to ``wait`` seconds only while its recorded owner is already dead (its stages are
    still stopping); a live owner raises :class:`StudyLockedError` at once.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield -1
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if _alive(holder.get("pid")) or time.monotonic() >= deadline:
                    stopping = "" if _alive(holder.get("pid")) else " (that process is gone; its stages are stopping)"
                    raise StudyLockedError(
                        f"The study folder {str(folder)!r} is in use by {_describe(holder)}{stopping}. Wait for it to "
                        f"finish or stop it (`kill {holder.get('pid', '<pid>')}`), or use another --output_dir: two "
                        f"runs on one folder would interleave their stages."
                    ) from None
                time.sleep(0.5)
        stale = _read_holder(fd)
        if stale.get("pid") and str(stale["pid"]) != str(os.getpid()):
            logger.warning("Took over the stale lock of %s left by %s (no longer running).", folder, _describe(stale))
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        try:
            yield fd
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no stale owner behind
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
