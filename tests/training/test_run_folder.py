"""backtrack_trl.training.run_folder: what a training recipe does with its output folder (refuse, skip, continue)."""

import json
import logging

import pytest
from trl import ModelConfig, SFTConfig

from backtrack_trl.training.run_folder import RUN_RECORD, config_differences, plan_run, run_config
from backtrack_trl.training.sft_config import SFTScriptArguments


CONFIG = {"script": {"dataset_name": "/data/x"}, "training": {"learning_rate": 0.002, "max_steps": 30}}


def finished_run(folder, config=CONFIG, recipe="sft", checkpoint_step=None):
    """A folder as a finished run leaves it (the model, metrics, card and run record)."""
    plan = plan_run(recipe, config, folder, overwrite=False)
    plan.record()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_results.json", "trainer_state.json"):
        (folder / name).write_text("{}")
    (folder / "README.md").write_text("---\ntags:\n- trl\n- sft\n- self-backtracking\n- countdown\n---\n# card\n")
    if checkpoint_step is not None:
        step = folder / f"checkpoint-{checkpoint_step}"
        step.mkdir()
        (step / "model.safetensors").write_text("w")
        (step / "trainer_state.json").write_text(json.dumps({"global_step": checkpoint_step}))
    plan.record(metrics={"global_step": 30, "train_loss": 0.5})
    return folder


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_missing_or_empty_folder_is_a_fresh_run(tmp_path):
    assert plan_run("sft", CONFIG, tmp_path / "new", overwrite=False).finished is None
    assert plan_run("sft", CONFIG, tmp_path, overwrite=False).finished is None


def test_a_dataset_folder_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-00000-of-00001.parquet").write_bytes(b"rows")
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n# A dataset\n")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError) as error:
        plan_run("sft", CONFIG, tmp_path, overwrite=False)
    message = str(error.value)
    assert f"--output_dir {str(tmp_path)!r} holds README.md, data/" in message
    assert "it looks like a dataset folder" in message and "--overwrite_output_dir" in message
    assert "new or empty --output_dir" in message
    assert snapshot(tmp_path) == before
    # With --overwrite_output_dir it is the user's call: a fresh run, nothing deleted but checkpoints.
    assert plan_run("sft", CONFIG, tmp_path, overwrite=True).finished is None
    assert snapshot(tmp_path) == before


def test_files_a_run_does_not_write_are_refused(tmp_path):
    finished_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds notes.txt, which a sft run does not write\. Choose a new"):
        plan_run("sft", CONFIG, tmp_path, overwrite=False)


def test_a_readme_that_is_not_our_model_card_is_refused(tmp_path):
    (tmp_path / "README.md").write_text("# My notes\n")
    with pytest.raises(FileExistsError, match="holds README.md, which a sft run does not write"):
        plan_run("sft", CONFIG, tmp_path, overwrite=False)


def test_a_model_no_run_trained_is_refused(tmp_path):
    start = tmp_path / "init"
    start.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        (start / name).write_text("{}")
    with pytest.raises(
        FileExistsError, match=r"holds a model \(config.json, model.safetensors\) that no training run"
    ):
        plan_run("sft", CONFIG, start, overwrite=False)
    with pytest.raises(FileExistsError, match=r"is the starting model \(--model_name_or_path\)"):
        plan_run("sft", CONFIG, start, overwrite=False, model_name_or_path=str(tmp_path / "." / "init"))


def test_a_finished_run_of_the_same_settings_is_left_alone(tmp_path, caplog):
    finished_run(tmp_path)
    before = snapshot(tmp_path)
    with caplog.at_level(logging.INFO):
        plan = plan_run("sft", CONFIG, tmp_path, overwrite=False)
    assert plan.finished == {"global_step": 30, "train_loss": 0.5}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "already holds this finished sft run" in lines[0]
    assert "new --output_dir or --overwrite_output_dir" in lines[0]
    assert snapshot(tmp_path) == before
    # Without its final weights (deleted by hand) it is not finished: the run continues and saves them again.
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "config.json").unlink()
    assert plan_run("sft", CONFIG, tmp_path, overwrite=False).finished is None


def test_other_settings_are_refused_with_the_differences(tmp_path):
    finished_run(tmp_path, checkpoint_step=30)
    other = {**CONFIG, "training": {**CONFIG["training"], "learning_rate": 0.001}}
    with pytest.raises(FileExistsError, match=r"holds a finished sft run with other settings \(learning_rate: 0.002 "
                       r"-> 0.001\)\. Choose a new or empty --output_dir, or pass --overwrite_output_dir"):  # fmt: skip
        plan_run("sft", other, tmp_path, overwrite=False)
    with pytest.raises(FileExistsError, match=r"holds the output of a sft run \(training_run.json\)"):
        plan_run("dpo", CONFIG, tmp_path, overwrite=False)


def test_more_steps_continue_a_run_from_its_checkpoint(tmp_path, caplog):
    longer = {**CONFIG, "training": {**CONFIG["training"], "max_steps": 34}}
    with pytest.raises(FileExistsError, match="max_steps: 30 -> 34"):  # no checkpoint to continue from
        plan_run("sft", longer, finished_run(tmp_path / "a"), overwrite=False)
    folder = finished_run(tmp_path / "b", checkpoint_step=30)
    with caplog.at_level(logging.INFO):
        assert plan_run("sft", longer, folder, overwrite=False).finished is None
    assert "continuing the finished sft run from checkpoint-30 (max_steps: 30 -> 34)" in caplog.text


def test_an_interrupted_run_without_checkpoints_starts_afresh_with_new_settings(tmp_path):
    plan_run("sft", CONFIG, tmp_path, overwrite=False).record()  # killed before its first checkpoint
    other = {**CONFIG, "training": {**CONFIG["training"], "learning_rate": 0.001}}
    assert plan_run("sft", other, tmp_path, overwrite=False).finished is None


def test_overwrite_removes_the_earlier_run_s_checkpoints_and_record(tmp_path):
    folder = finished_run(tmp_path, checkpoint_step=30)
    (folder / "incomplete-checkpoint-40").mkdir()
    assert plan_run("sft", CONFIG, folder, overwrite=True).finished is None
    assert not (folder / "checkpoint-30").exists() and not (folder / "incomplete-checkpoint-40").exists()
    assert not (folder / RUN_RECORD).exists() and (folder / "model.safetensors").exists()
    # Another process of the same launch removes nothing.
    finished_run(tmp_path / "other", checkpoint_step=30)
    plan_run("sft", CONFIG, tmp_path / "other", overwrite=True, main_process=False)
    assert (tmp_path / "other" / "checkpoint-30").is_dir()


def test_run_config_keeps_what_changes_the_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()

    def config(dataset, **training):
        values = dict(use_cpu=True, bf16=False, report_to="none", **training)  # noqa: C408
        return run_config(SFTScriptArguments(dataset_name=dataset), SFTConfig("out", **values), ModelConfig("m"))

    base = config("data", learning_rate=0.002)
    assert base["training"]["world_size"] == 1 and base["script"]["dataset_name"] == str(tmp_path / "data")
    assert "output_dir" not in base["training"] and "overwrite_output_dir" not in base["script"]
    # Logging, saving and a relative spelling of the same path do not make another run ...
    same = config("./data/", learning_rate=0.002, logging_steps=7, save_strategy="no", disable_tqdm=True)
    assert config_differences(base, same) == {}
    # ... the learning rate does.
    assert config_differences(base, config("data", learning_rate=0.001)) == {"learning_rate": (0.002, 0.001)}
