"""backtrack_trl.training.launch: a trainer recipe trains on what its parser returns, then leaves the process group."""

import pytest
import torch

from backtrack_trl.training import launch


def test_run_trainer_trains_on_the_parsed_arguments_then_shuts_down(monkeypatch):
    events = []
    monkeypatch.setattr(launch, "shutdown_distributed", lambda: events.append("shutdown"))

    def train(script_args, training_args, model_args):
        events.append(("train", script_args, training_args, model_args))
        return {"train_loss": 0.5}

    assert launch.run_trainer(lambda: ("s", "t", "m"), train) == {"train_loss": 0.5}
    assert events == [("train", "s", "t", "m"), "shutdown"]


def test_a_failed_training_does_not_reach_the_shutdown(monkeypatch):
    events = []
    monkeypatch.setattr(launch, "shutdown_distributed", lambda: events.append("shutdown"))

    def train(*args):
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        launch.run_trainer(lambda: ("s", "t", "m"), train)
    assert events == []


def test_shutdown_without_a_process_group_does_nothing():
    assert not torch.distributed.is_initialized()
    launch.shutdown_distributed()
