"""The study report records where its numbers come from: a provenance line at the top of report.md and
report/provenance.json (seed, torch threads, code revision, versions)."""

import json
from pathlib import Path

import torch

from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.report import study_report


def test_the_study_report_starts_with_its_provenance_and_writes_provenance_json(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    context = StudyContext.from_args(SelfImproveArguments(output_dir=str(tmp_path), seed=7), Path(tmp_path), "python")
    report = study_report(context, {"data_backtrack": 1.0})
    info = json.loads((tmp_path / "report" / "provenance.json").read_text())
    assert info["seed"] == 7 and info["torch_threads"] == torch.get_num_threads() and info["omp_num_threads"] == "1"
    assert info["revision"] and info["torch"] == torch.__version__
    title, provenance_line = report.read_text().splitlines()[0], report.read_text().splitlines()[2]
    assert title.startswith("# Self-backtracking study report")
    assert provenance_line.startswith(f"Provenance: seed 7, torch threads {info['torch_threads']} (OMP_NUM_THREADS=1)")
    assert f"revision `{info['revision']}`" in provenance_line and f"torch {info['torch']}" in provenance_line
    assert "Settings: " in report.read_text()  # the settings line stays (older readers parse its threads=)
