"""Stage processes never outlive the study (kill -9 included), and one study folder has one run at a time."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backtrack_trl.study.lock import LOCK_FILE, StudyLockedError, study_lock
from backtrack_trl.study.state import StudyState


# A stage that starts a grandchild (as `accelerate launch` starts the training process) and records both PIDs.
STAGE = textwrap.dedent(
    """
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(sys.argv[1], "w") as handle:
        handle.write(f"{__import__('os').getpid()} {grandchild.pid}")
    time.sleep(120)
    """
)

ORCHESTRATOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from backtrack_trl.study.commands import run_logged
    run_logged([sys.executable, sys.argv[1], sys.argv[2]], Path(sys.argv[3]))
    """
)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():  # a zombie (dead, not yet reaped by a container's PID 1) is not running
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False
    return True


def _wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "kill"])
def test_stage_processes_die_with_the_orchestrator(tmp_path, how):
    stage, orchestrator, pids = tmp_path / "stage.py", tmp_path / "orchestrator.py", tmp_path / "pids"
    stage.write_text(STAGE)
    orchestrator.write_text(ORCHESTRATOR)
    proc = subprocess.Popen(
        [sys.executable, str(orchestrator), str(stage), str(pids), str(tmp_path / "stage.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(lambda: pids.is_file() and len(pids.read_text().split()) == 2, 60), "stage never started"
        child, grandchild = map(int, pids.read_text().split())
        assert _running(child) and _running(grandchild)
        proc.send_signal(how)
        proc.wait(timeout=30)
        assert _wait_for(lambda: not _running(child) and not _running(grandchild), 20), "stage processes survived"
    finally:
        proc.kill()
        for pid in map(int, pids.read_text().split()) if pids.is_file() else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_second_run_on_the_same_folder_is_refused_with_the_holder(tmp_path):
    with study_lock(tmp_path / "study"):
        with pytest.raises(StudyLockedError, match=rf"in use by PID {os.getpid()}.*another --output_dir"):
            with study_lock(tmp_path / "study", wait=0):
                pass
    with study_lock(tmp_path / "study", wait=0):  # released on exit
        pass


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    folder = tmp_path / "study"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from backtrack_trl.study.lock import study_lock\nimport time\n"
         f"with study_lock({str(folder)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyLockedError, match=f"PID {holder.pid}"):
            with study_lock(folder, wait=0):
                pass
        holder.kill()  # kill -9: the kernel drops the flock, the file (with the dead PID) stays
        holder.wait()
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
        with study_lock(folder, wait=0):  # the stale lock is taken over
            assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        holder.kill()


def test_the_lock_file_does_not_make_a_folder_foreign(tmp_path):
    folder = tmp_path / "study"
    with study_lock(folder):
        StudyState.open(folder, {"seed": 1})
        (folder / "data").mkdir()
        state = StudyState.open(folder, {"seed": 2}, overwrite=True)  # overwrite keeps the lock file
        assert state.stages == {} and sorted(p.name for p in folder.iterdir()) == [LOCK_FILE, "state.json"]
