"""Run one stage command so that nothing it starts outlives the study that started it.

``recipes/self_improve.py`` starts every stage (``accelerate launch`` and the training process under it) through
this guard. The guard starts the command in a session of its own, so the command and all its descendants form one
process group, and stops that whole group (SIGTERM, then SIGKILL after a grace period) when

- the command ends (stragglers such as data-loader workers are stopped too),
- the guard receives SIGTERM, SIGINT or SIGHUP (Ctrl-C in the terminal reaches the guard, not the new session),
- the orchestrator dies, even by ``kill -9``: on Linux the kernel sends the guard SIGTERM (``PR_SET_PDEATHSIG``);
  elsewhere the guard notices that its parent changed within half a second.

The guard exits with the command's exit code, or 128 + the signal number when it stopped the command.

Usage:

```bash
python -m backtrack_trl.study.stage_guard --parent $$ -- python -c "import time; time.sleep(60)"
```
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time


GRACE_SECONDS = 10.0
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the getppid() poll below still catches a dead parent


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, child: subprocess.Popen | None = None, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process group ``pgid``, wait up to ``grace`` seconds, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None:
            child.poll()  # reap the direct child, or it stays a zombie member of the group
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if child is not None:
        child.wait()


def run(cmd: list[str], parent: int, grace: float = GRACE_SECONDS) -> int:
    _set_parent_death_signal(signal.SIGTERM)
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if os.getppid() != parent:  # the orchestrator died before the death signal was armed
        return 128 + signal.SIGTERM
    child = subprocess.Popen(cmd, start_new_session=True)
    while True:
        if received or os.getppid() != parent:
            stop_group(child.pid, child, grace)
            return 128 + (received[0] if received else signal.SIGTERM)
        try:
            code = child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        stop_group(child.pid, None, grace=1.0)  # stragglers the command left in its group
        return code


def guarded(cmd: list[str]) -> list[str]:
    """``cmd`` wrapped in this guard, for a subprocess started by the current process."""
    return [sys.executable, "-m", "backtrack_trl.study.stage_guard", "--parent", str(os.getpid()), "--", *cmd]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent", type=int, required=True, help="PID whose death stops the command.")
    parser.add_argument("--grace", type=float, default=GRACE_SECONDS, help="Seconds between SIGTERM and SIGKILL.")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="The command, after `--`.")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given after `--`")
    return run(cmd, args.parent, args.grace)


if __name__ == "__main__":
    sys.exit(main())
