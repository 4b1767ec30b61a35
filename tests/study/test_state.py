"""The study state: stages recorded atomically, reopened, and a folder of another configuration refused."""

import json

import pytest

from backtrack_trl.study.state import ConfigMismatchError, StudyState


def test_state_records_stages_and_reopens(tmp_path):
    state = StudyState.open(tmp_path / "s", {"seed": 1, "rounds": 2}, ignore_keys=("rounds",))
    state.mark_done("data", 1.234)
    again = StudyState.open(tmp_path / "s", {"seed": 1, "rounds": 5}, ignore_keys=("rounds",))
    assert again.is_done("data") and not again.is_done("sft")
    assert again.stages["data"]["seconds"] == 1.23


def test_state_refuses_other_configuration(tmp_path):
    StudyState.open(tmp_path / "s", {"seed": 1, "pool_size": 10})
    with pytest.raises(ConfigMismatchError, match=r"pool_size: 10 -> 20"):
        StudyState.open(tmp_path / "s", {"seed": 1, "pool_size": 20})
    fresh = StudyState.open(tmp_path / "s", {"seed": 1, "pool_size": 20}, overwrite=True)
    assert fresh.stages == {}


def test_state_refuses_foreign_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "something.txt").write_text("x")
    with pytest.raises(ConfigMismatchError, match="not created by this tool"):
        StudyState.open(tmp_path / "s", {"seed": 1})


def test_state_file_is_valid_json_after_each_stage(tmp_path):
    state = StudyState.open(tmp_path / "s", {"a": 1})
    for name in ("x", "y"):
        state.mark_done(name, 0.5)
        saved = json.loads((tmp_path / "s" / "state.json").read_text())
        assert name in saved["stages"]
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")]
