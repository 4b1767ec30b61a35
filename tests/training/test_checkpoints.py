"""backtrack_trl.training.checkpoints: which checkpoint a run resumes from."""

from types import SimpleNamespace

import pytest

from backtrack_trl.training.checkpoints import resume_checkpoint


def args(output_dir, requested=None):
    return SimpleNamespace(output_dir=str(output_dir), resume_from_checkpoint=requested)


def test_an_interrupted_run_continues_from_its_last_checkpoint(tmp_path):
    assert resume_checkpoint(args(tmp_path / "missing")) is None
    assert resume_checkpoint(args(tmp_path)) is None
    for step in (5, 40, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert resume_checkpoint(args(tmp_path)) == str(tmp_path / "checkpoint-40")
    assert resume_checkpoint(args(tmp_path, "false")) == str(tmp_path / "checkpoint-40")
    assert resume_checkpoint(args(tmp_path, "last")) == str(tmp_path / "checkpoint-40")


def test_asking_for_the_last_checkpoint_of_an_empty_folder_fails(tmp_path):
    with pytest.raises(ValueError, match="asks for the last checkpoint but .* has none"):
        resume_checkpoint(args(tmp_path, "true"))


def test_a_named_checkpoint_is_used_as_given(tmp_path):
    (tmp_path / "checkpoint-40").mkdir()
    assert resume_checkpoint(args(tmp_path, "elsewhere/checkpoint-7")) == "elsewhere/checkpoint-7"
