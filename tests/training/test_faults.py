"""Fault tests of the training recipes: a crash in the middle of a checkpoint save, then a rerun of the same command,
gives what an uninterrupted run gives (the same weights, steps and losses).

Fast: the crash is an exception raised at a point of the Trainer's save order (tests/_training_faults.py) inside this
process. Slow: ``recipes/sft.py`` / ``recipes/preference.py`` run as subprocesses and SIGKILL themselves mid-save.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training_faults import POINTS, SimulatedKill, install_crash
from _training_utils import char_tokenizer, sample_rows, save_tiny_model, write_hub_folder
from safetensors.torch import load_file
from trl import DPOConfig, ModelConfig, SFTConfig

from backtrack_trl.training.preference import PreferenceScriptArguments, train_preference
from backtrack_trl.training.sft import train
from backtrack_trl.training.sft_config import SFTScriptArguments


ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
# 64 rows, batch 8: 8 steps an epoch, so the run ends inside it; checkpoints at steps 2, 4, 6; the crash is in the
# save of step 4.
STEPS, SAVE_EVERY, CRASH_STEP = 6, 2, 4
COMMON = dict(  # noqa: C408 (keyword style reads like the YAML recipes)
    use_cpu=True, bf16=False, activation_checkpointing=False, learning_rate=3e-3, lr_scheduler_type="constant",
    max_steps=STEPS, per_device_train_batch_size=8, max_length=128, logging_steps=1, report_to="none",
    save_strategy="steps", save_steps=SAVE_EVERY, seed=0, disable_tqdm=True, dataloader_num_workers=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    model = save_tiny_model(str(root / "init"), char_tokenizer(bos=True, backtrack=False), hidden_size=32, layers=1)
    data = write_hub_folder(str(root / "data"), {"train": sample_rows(32)})
    return root, model, data


def _sft(assets, output_dir: Path) -> dict:
    _, model, data = assets
    return train(
        SFTScriptArguments(dataset_name=data),
        SFTConfig(str(output_dir), **COMMON),
        ModelConfig(model_name_or_path=model, dtype="float32"),
    )


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def _history(folder: Path) -> tuple[int, list[float]]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return state["global_step"], [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def _assert_same_run(folder: Path, reference: Path) -> None:
    first, second = _weights(folder), _weights(reference)
    assert first.keys() == second.keys()
    assert [name for name in first if not torch.equal(first[name], second[name])] == []
    assert _history(folder) == _history(reference)
    assert _history(folder)[0] == STEPS


@pytest.fixture(scope="module")
def uninterrupted_sft(assets):
    out = assets[0] / "sft_uninterrupted"
    _sft(assets, out)
    return out


@pytest.mark.parametrize("point", POINTS)
def test_sft_crash_during_a_checkpoint_save_then_rerun(assets, uninterrupted_sft, point, monkeypatch, caplog):
    out = assets[0] / f"sft_crash_{point}"
    with monkeypatch.context() as patch:
        install_crash(CRASH_STEP, point, patch=patch.setattr)
        with pytest.raises(SimulatedKill):
            _sft(assets, out)
    assert (out / f"checkpoint-{CRASH_STEP}").is_dir() and not (out / "train_results.json").exists()

    with caplog.at_level(logging.INFO):
        metrics = _sft(assets, out)  # the same command again
    assert metrics["global_step"] == STEPS
    log = caplog.text
    assert f"Resuming from checkpoint {out / f'checkpoint-{SAVE_EVERY}'}" in log
    assert f"set aside as incomplete-checkpoint-{CRASH_STEP}" in log
    assert (out / f"incomplete-checkpoint-{CRASH_STEP}").is_dir()
    _assert_same_run(out, uninterrupted_sft)


def test_a_kill_after_the_last_checkpoint_resumes_without_an_extra_step(assets, uninterrupted_sft, caplog):
    """The last checkpoint is complete but the final save was cut: the rerun saves, it trains no step past the end
    (transformers alone would add one: max_steps 6 ends inside an epoch)."""
    import shutil

    out = assets[0] / "sft_final_save_cut"
    shutil.copytree(uninterrupted_sft / f"checkpoint-{STEPS}", out / f"checkpoint-{STEPS}")
    with caplog.at_level(logging.INFO):
        metrics = _sft(assets, out)
    assert f"Resuming from checkpoint {out / f'checkpoint-{STEPS}'}" in caplog.text
    logged = _history(uninterrupted_sft)[1]
    assert metrics["global_step"] == STEPS and metrics["train_loss"] == pytest.approx(sum(logged) / len(logged))
    _assert_same_run(out, uninterrupted_sft)


# --- DPO ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def preference_assets(tmp_path_factory):
    from backtrack_trl.data.build_config import BuildDatasetArguments
    from backtrack_trl.data.builder import build_dataset
    from backtrack_trl.data.hub_layout import write_hub_dataset
    from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference
    from backtrack_trl.tasks.countdown import CountdownConfig

    root = tmp_path_factory.mktemp("preference_faults")
    args = BuildDatasetArguments(num_train_questions=24, num_test=4, num_proc=1)
    config = CountdownConfig(num_numbers=3, max_number=20, max_target=100)
    write_hub_dataset(build_dataset(args, config), root / "backtrack")
    build_and_save_preference(PreferenceDataArguments(source=str(root / "backtrack"), output_dir=str(root / "pref")))
    save_tiny_model(str(root / "init"), char_tokenizer(), hidden_size=32, layers=1)
    return root


def _dpo(root: Path, output_dir: Path) -> dict:
    values = {**COMMON, "max_length": 96, "beta": 0.1, "per_device_train_batch_size": 4}
    return train_preference(
        PreferenceScriptArguments(method="dpo", dataset_name=str(root / "pref"), max_train_samples=32),
        DPOConfig(str(output_dir), **values),
        ModelConfig(model_name_or_path=str(root / "init")),
    )


@pytest.fixture(scope="module")
def uninterrupted_dpo(preference_assets):
    out = preference_assets / "dpo_uninterrupted"
    _dpo(preference_assets, out)
    return out


@pytest.mark.parametrize("point", ["weights", "trainer_state"])
def test_dpo_crash_during_a_checkpoint_save_then_rerun(
    preference_assets, uninterrupted_dpo, point, monkeypatch, caplog
):
    out = preference_assets / f"dpo_crash_{point}"
    with monkeypatch.context() as patch:
        install_crash(CRASH_STEP, point, patch=patch.setattr)
        with pytest.raises(SimulatedKill):
            _dpo(preference_assets, out)
    with caplog.at_level(logging.INFO):
        metrics = _dpo(preference_assets, out)
    assert metrics["global_step"] == STEPS and f"incomplete-checkpoint-{CRASH_STEP}" in caplog.text
    _assert_same_run(out, uninterrupted_dpo)


# --- slow: a real kill -9 of the recipe process ----------------------------------------------------------------------


def _recipe(script: str, args: list[str], crash: str | None = None) -> subprocess.CompletedProcess:
    env = dict(ENV, BACKTRACK_TEST_CRASH=crash) if crash else ENV
    runner = [sys.executable, str(ROOT / "tests" / "_training_faults.py")] if crash else [sys.executable]
    return subprocess.run(runner + [str(ROOT / "recipes" / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def _flags(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value).lower()
            if isinstance(value, bool) else str(value))]  # fmt: skip


@pytest.mark.slow
def test_sft_recipe_killed_during_a_checkpoint_save_then_rerun(assets, uninterrupted_sft):
    _, model, data = assets
    out = assets[0] / "sft_kill9"
    args = ["--model_name_or_path", model, "--dataset_name", data, "--dtype", "float32", "--output_dir", str(out),
            *_flags(COMMON)]  # fmt: skip
    killed = _recipe("sft.py", args, crash=f"{CRASH_STEP}:weights")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (out / f"checkpoint-{CRASH_STEP}" / "model.safetensors").is_file()  # half written
    rerun = _recipe("sft.py", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = rerun.stdout + rerun.stderr
    assert f"Resuming from checkpoint {out / f'checkpoint-{SAVE_EVERY}'}" in log
    assert f"set aside as incomplete-checkpoint-{CRASH_STEP}" in log
    _assert_same_run(out, uninterrupted_sft)
    again = _recipe("sft.py", args)  # a third run: finished, nothing to do
    assert again.returncode == 0 and "already holds this finished sft run" in again.stdout + again.stderr
    _assert_same_run(out, uninterrupted_sft)


@pytest.mark.slow
def test_dpo_recipe_killed_during_a_checkpoint_save_then_rerun(preference_assets, uninterrupted_dpo):
    out = preference_assets / "dpo_kill9"
    values = {**COMMON, "max_length": 96, "beta": 0.1, "per_device_train_batch_size": 4, "max_train_samples": 32}
    args = ["--method", "dpo", "--dataset_name", str(preference_assets / "pref"), "--model_name_or_path",
            str(preference_assets / "init"), "--output_dir", str(out), *_flags(values)]  # fmt: skip
    killed = _recipe("preference.py", args, crash=f"{CRASH_STEP}:optimizer")
    assert killed.returncode == -9, killed.stderr[-3000:]
    rerun = _recipe("preference.py", args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_same_run(out, uninterrupted_dpo)
