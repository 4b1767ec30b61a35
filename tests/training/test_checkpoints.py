"""backtrack_trl.training.checkpoints: which checkpoint a run resumes from; incomplete ones are set aside, never used."""

import json
import logging
from types import SimpleNamespace

import pytest

from backtrack_trl.training.checkpoints import checkpoint_problem, resume_checkpoint


def args(output_dir, requested=None, local_process_index=0):
    return SimpleNamespace(
        output_dir=str(output_dir), resume_from_checkpoint=requested, local_process_index=local_process_index
    )


def checkpoint(folder, step, state=True, weights=True, state_text=None):
    """A checkpoint folder as Trainer._save_checkpoint leaves it (``state``/``weights``: whether it got that far)."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"weights")
    if state:
        (path / "trainer_state.json").write_text(state_text or json.dumps({"global_step": step, "log_history": []}))
    return path


def test_an_interrupted_run_continues_from_its_last_checkpoint(tmp_path):
    assert resume_checkpoint(args(tmp_path / "missing")) is None
    assert resume_checkpoint(args(tmp_path)) is None
    for step in (5, 40, 10):
        checkpoint(tmp_path, step)
    assert resume_checkpoint(args(tmp_path)) == str(tmp_path / "checkpoint-40")
    assert resume_checkpoint(args(tmp_path, "false")) == str(tmp_path / "checkpoint-40")
    assert resume_checkpoint(args(tmp_path, "last")) == str(tmp_path / "checkpoint-40")
    assert resume_checkpoint(args(tmp_path), fresh=True) is None  # --overwrite_output_dir


@pytest.mark.parametrize(
    "cut",
    [
        {"weights": False, "state": False},  # killed while writing the weights: "Can't find a valid checkpoint"
        {"state": False},  # killed after the weights: the Trainer would restart at step 0 with them
        {"state_text": '{"global_step": 40, "log_hist'},  # killed while writing trainer_state.json
        {"state_text": json.dumps({"global_step": 39})},  # not this folder's state
    ],
)
def test_an_incomplete_newest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, cut, caplog):
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 40, **cut)
    assert checkpoint_problem(tmp_path / "checkpoint-40") is not None
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(args(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "incomplete-checkpoint-40"]
    lines = [r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()]
    assert len(lines) == 1 and "set aside as incomplete-checkpoint-40" in lines[0] and "checkpoint-40:" in lines[0]
    # The rerun's own save of step 40 later: an older set-aside folder of the same step is replaced, not kept twice.
    checkpoint(tmp_path, 40, state=False)
    assert resume_checkpoint(args(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "incomplete-checkpoint-40"]


def test_only_the_first_process_renames_but_every_process_skips(tmp_path):
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 20, weights=False, state=False)
    assert resume_checkpoint(args(tmp_path, local_process_index=1)) == str(tmp_path / "checkpoint-10")
    assert (tmp_path / "checkpoint-20").is_dir()  # left for process 0
    assert resume_checkpoint(args(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert (tmp_path / "incomplete-checkpoint-20").is_dir() and not (tmp_path / "checkpoint-20").exists()


def test_asking_for_the_last_checkpoint_without_a_complete_one_fails(tmp_path):
    with pytest.raises(ValueError, match="asks for the last checkpoint but --output_dir .* has no complete one"):
        resume_checkpoint(args(tmp_path, "true"))
    checkpoint(tmp_path, 3, state=False)
    with pytest.raises(ValueError, match="has no complete one. Leave resume_from_checkpoint unset"):
        resume_checkpoint(args(tmp_path, "last"))


def test_a_named_checkpoint_is_used_as_given_when_complete(tmp_path):
    checkpoint(tmp_path, 40)
    other = checkpoint(tmp_path / "elsewhere", 7)
    assert resume_checkpoint(args(tmp_path, str(other))) == str(other)
    broken = checkpoint(tmp_path / "elsewhere", 8, state=False)
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint .*checkpoint-8' is not a complete checkpoint \(no "
                       r"trainer_state.json"):  # fmt: skip
        resume_checkpoint(args(tmp_path, str(broken)))
    with pytest.raises(ValueError, match="is not a complete checkpoint .no such folder"):
        resume_checkpoint(args(tmp_path, str(tmp_path / "nowhere")))


def test_deepspeed_and_adapter_checkpoints_count_as_complete(tmp_path):
    deepspeed = checkpoint(tmp_path, 4, weights=False)
    (deepspeed / "global_step4").mkdir()
    lora = checkpoint(tmp_path, 8, weights=False)
    (lora / "adapter_model.safetensors").write_bytes(b"lora")
    assert checkpoint_problem(deepspeed) is None and checkpoint_problem(lora) is None
    assert "no model weights" in checkpoint_problem(checkpoint(tmp_path, 12, weights=False))
