"""backtrack_trl.provenance: the code revision (clean, dirty, untracked, outside a checkout, no git), the record's
fields and its markdown line."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from backtrack_trl.provenance import code_revision, provenance, provenance_markdown, write_provenance


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**GIT_ENV, "PATH": "/usr/bin:/bin"}).stdout.strip()  # fmt: skip


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "pkg/__init__.py")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_revision_of_a_clean_checkout_is_its_short_head(repo):
    head = _git(repo, "rev-parse", "--short", "HEAD")
    assert len(head) >= 7 and code_revision(repo / "pkg" / "__init__.py") == head
    assert code_revision(repo / "pkg") == head  # a folder holding tracked files


def test_a_changed_or_untracked_file_marks_the_revision_dirty(repo):
    head = _git(repo, "rev-parse", "--short", "HEAD")
    (repo / "pkg" / "__init__.py").write_text("x = 2\n")
    assert code_revision(repo / "pkg" / "__init__.py") == f"{head}-dirty"
    _git(repo, "commit", "-q", "-am", "second")
    new_head = _git(repo, "rev-parse", "--short", "HEAD")
    assert new_head != head and code_revision(repo / "pkg" / "__init__.py") == new_head
    (repo / "notes.py").write_text("")  # untracked code can change the numbers too
    assert code_revision(repo / "pkg" / "__init__.py") == f"{new_head}-dirty"


def test_unknown_outside_a_checkout_for_untracked_code_and_without_git(repo, tmp_path, monkeypatch):
    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "mod.py").write_text("")
    assert code_revision(outside / "mod.py") == "unknown"
    assert code_revision(tmp_path / "missing" / "mod.py") == "unknown"
    # A package installed into a folder of some checkout (a venv inside a repo) is not that checkout's code.
    (repo / "venv").mkdir()
    (repo / "venv" / "installed.py").write_text("")
    assert code_revision(repo / "venv" / "installed.py") == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert code_revision(repo / "pkg" / "__init__.py") == "unknown"


def test_this_package_reports_this_checkout():
    root = Path(__file__).resolve().parents[1]
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("not a git checkout")
    assert code_revision() in (head, f"{head}-dirty")


def test_the_record_holds_seed_threads_and_versions_and_is_written_as_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = torch.get_num_threads()
    info = provenance(seed=42)
    assert info["seed"] == 42 and info["torch_threads"] == threads and info["omp_num_threads"] == "3"
    assert info["torch"] == torch.__version__ and info["transformers"] and info["trl"] and info["python"]
    assert info["revision"]
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert provenance()["omp_num_threads"] is None and provenance()["seed"] is None

    path = write_provenance(tmp_path / "new" / "folder", seed=5)
    assert path.name == "provenance.json" and json.loads(path.read_text())["seed"] == 5
    given = {**info, "seed": 9}
    assert json.loads(write_provenance(tmp_path, info=given).read_text()) == given


def test_markdown_line_names_seed_threads_revision_and_versions():
    info = {"seed": 42, "torch_threads": 2, "omp_num_threads": "2", "revision": "abc1234-dirty", "torch": "2.13.0",
            "transformers": "5.23.0", "trl": None, "python": "3.11.7"}  # fmt: skip
    line = provenance_markdown(info)
    assert line == (
        "Provenance: seed 42, torch threads 2 (OMP_NUM_THREADS=2), revision `abc1234-dirty`, torch 2.13.0, "
        "transformers 5.23.0, trl not installed, Python 3.11.7."
    )
    assert "(OMP_NUM_THREADS unset)" in provenance_markdown({**info, "omp_num_threads": None})
