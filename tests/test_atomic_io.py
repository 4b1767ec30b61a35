"""The one atomic writer of the package: an error in the middle of a write leaves the target and its folder as they
were (no half-written file, no temporary file behind)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backtrack_trl import atomic_io
from backtrack_trl.atomic_io import (
    atomic_directory,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from backtrack_trl.study import report


def _plain_mode(tmp_path: Path) -> int:
    probe = tmp_path / "probe"
    probe.write_text("x")
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    return mode


def test_writers_write_and_replace(tmp_path):
    mode = _plain_mode(tmp_path)
    atomic_write_text(tmp_path / "sub" / "a.md", "héllo\n")
    atomic_write_text(tmp_path / "sub" / "a.md", "second\n")
    atomic_write_json(tmp_path / "b.json", {"z": 1, "a": Path("p")})
    atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.md").read_text(encoding="utf-8") == "second\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": "p", "z": 1}
    assert (tmp_path / "b.json").read_text().index('"a"') < (tmp_path / "b.json").read_text().index('"z"')
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    for name in ("sub/a.md", "b.json", "c.bin"):  # the permissions of a plain open(), not mkstemp's 0600
        assert (tmp_path / name).stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "c.bin", "sub"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_error_mid_write_leaves_target_and_no_temporary(tmp_path, monkeypatch, error):
    target = tmp_path / "out.md"
    target.write_text("old\n")
    real_write_text = Path.write_text

    def write_half_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise error("disk full")

    monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    with pytest.raises(error):
        atomic_write_text(target, "a new, longer text\n")
    with pytest.raises(error):
        atomic_write_json(target, {"new": True})
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.md"]

    with pytest.raises(error):  # atomic_path: the writer fails after writing part of the file
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.md.") and tmp.name.endswith(".tmp")
            tmp.write_text("partial")
            raise error("writer crashed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.md"]


def test_error_at_the_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError("rename refused")

    monkeypatch.setattr(atomic_io.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_text(tmp_path / "new.txt", "text")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_with_a_writer_that_needs_a_file_name(tmp_path):
    pd = pytest.importorskip("pandas")
    target = tmp_path / "generations.parquet"
    frame = pd.DataFrame({"x": [1, 2, 3]})
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    assert pd.read_parquet(target)["x"].tolist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["generations.parquet"]


def test_report_plot_is_atomic(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = tmp_path / "plot.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    report._save_figure(fig, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = target.read_bytes()

    fig, _ = plt.subplots()
    real_savefig = fig.savefig

    def savefig_then_fail(path, **kwargs):
        real_savefig(path, **kwargs)
        raise RuntimeError("crashed after writing")

    fig.savefig = savefig_then_fail
    with pytest.raises(RuntimeError):
        report._save_figure(fig, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert not plt.get_fignums() or fig.number not in plt.get_fignums()  # closed on the error too
    assert os.path.getsize(target) > 0


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _leftover(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "part.bin").write_bytes(b"half")
    return folder


def test_a_write_removes_the_stale_temporaries_of_its_target_only(tmp_path, caplog):
    host, dead = atomic_io.writer_tag().rpartition("-")[0], _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = _leftover(tmp_path, f".out.tmp-{host}-{dead}-abc123")
        stale_backup = _leftover(tmp_path, f".out.old-{host}-{dead}-def456")
        kept = [
            _leftover(tmp_path, f".out.tmp-{host}-{sleeper.pid}-live1"),  # a concurrent writer, still running
            _leftover(tmp_path, f".out.tmp-{host}-{os.getpid()}-live2"),  # this process (another thread)
            _leftover(tmp_path, f".out.tmp-otherhost-{dead}-remote"),  # another machine: cannot be checked
            _leftover(tmp_path, ".out.tmp-k2j4h5g6"),  # an older version's: names no writer
            _leftover(tmp_path, f".output.tmp-{host}-{dead}-other"),  # another target
        ]
        (tmp_path / "out").mkdir()
        with caplog.at_level("WARNING"), atomic_directory(tmp_path / "out", overwrite=True) as tmp:
            assert tmp.name.startswith(f".out.tmp-{atomic_io.writer_tag()}-")
            (tmp / "result.txt").write_text("done")
        assert not stale.exists() and not stale_backup.exists()
        assert all((folder / "part.bin").exists() for folder in kept)
        assert (tmp_path / "out" / "result.txt").read_text() == "done"
        assert "Left" in caplog.text and ".out.tmp-k2j4h5g6" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_backup_left_between_the_two_renames_is_put_back(tmp_path):
    host, dead = atomic_io.writer_tag().rpartition("-")[0], _dead_pid()
    _leftover(tmp_path, f".out.old-{host}-{dead}-abc123")  # the previous folder; `out` itself is gone
    _leftover(tmp_path, f".out.tmp-{host}-{dead}-def456")  # the new one, complete or not: cannot tell
    assert atomic_io.clean_stale_temporaries(tmp_path / "out") == [
        f"restored out from .out.old-{host}-{dead}-abc123",
        f"removed the leftover .out.tmp-{host}-{dead}-def456",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "part.bin").read_bytes() == b"half"


_KILLED_WRITE = """
import sys
from pathlib import Path
from backtrack_trl.atomic_io import atomic_directory
with atomic_directory(Path(sys.argv[1]), overwrite=True) as tmp:
    (tmp / "a.txt").write_text(sys.argv[2])
    (tmp / "b.txt").write_text(sys.argv[2])
"""


@pytest.mark.parametrize("step", ["directory staged", "old folder moved aside"])
def test_kill_9_mid_write_then_rerun(tmp_path, step):
    # A real SIGKILL (the test hook kills the writer at `step`), then the next write of the same target.
    target = tmp_path / "out"
    run = [sys.executable, "-c", _KILLED_WRITE, str(target)]
    assert subprocess.run([*run, "first"]).returncode == 0
    killed = subprocess.run([*run, "second"], env={**os.environ, atomic_io.KILL_AT_ENV: step})
    assert killed.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert leftovers and all(name.startswith((".out.tmp-", ".out.old-")) for name in leftovers)
    assert (target / "a.txt").read_text() == "first" if step == "directory staged" else not target.exists()
    # the rerun tidies the leftovers first (here: puts the moved-aside folder back), then writes
    assert subprocess.run([*run, "third"]).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "third", "b.txt": "third"}
