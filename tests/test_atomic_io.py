"""The one atomic writer of the package: an error in the middle of a write leaves the target and its folder as they
were (no half-written file, no temporary file behind)."""

import json
import os
from pathlib import Path

import pytest

from backtrack_trl import atomic_io
from backtrack_trl.atomic_io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
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
