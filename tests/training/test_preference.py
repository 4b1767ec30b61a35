"""DPO and KTO through TRL's trainers on a tiny model: the preference margin on the training pairs grows, the model
card is written, and a dataset in the wrong format gives one clear error naming the column and the converter."""

import glob
import os
import re
import time

import pytest
import torch
from _training_utils import char_tokenizer, save_tiny_model
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, KTOConfig, ModelConfig

from backtrack_trl.data.build_config import BuildDatasetArguments
from backtrack_trl.data.builder import build_dataset
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference
from backtrack_trl.tasks.countdown import CountdownConfig
from backtrack_trl.training.preference import (
    PreferenceScriptArguments,
    parse_preference_args,
    preference_margin,
    train_preference,
)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"dpo": DPOConfig, "kto": KTOConfig}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("preference")
    args = BuildDatasetArguments(num_train_questions=16, num_test=4, num_proc=1)
    write_hub_dataset(build_dataset(args, CountdownConfig(num_numbers=3, max_number=20, max_target=100)),
                      root / "backtrack")  # fmt: skip
    build_and_save_preference(PreferenceDataArguments(source=str(root / "backtrack"), output_dir=str(root / "pref")))
    save_tiny_model(str(root / "init"), char_tokenizer(), hidden_size=32)
    return root


def _args(method, folders, output_dir, **overrides):
    values = dict(  # noqa: C408 (keyword style reads like the YAML recipes)
        use_cpu=True, bf16=False, activation_checkpointing=False, learning_rate=3e-3, lr_scheduler_type="constant",
        max_steps=30, per_device_train_batch_size=8, max_length=96, beta=0.1, report_to="none",
        save_strategy="no", logging_steps=10, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    values.update(overrides)
    script_args = PreferenceScriptArguments(method=method, dataset_name=str(folders / "pref"))
    return (
        script_args,
        CONFIGS[method](str(output_dir), **values),
        ModelConfig(model_name_or_path=str(folders / "init")),
    )


def _margin(folder, pairs):
    return preference_margin(
        AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), pairs
    )


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_training_moves_the_margin_the_right_way(method, folders, tmp_path):
    pairs = load_dataset(str(folders / "pref"), "pairwise")["train"]
    before = _margin(str(folders / "init"), pairs)
    start = time.time()
    metrics = train_preference(*_args(method, folders, tmp_path / method))
    seconds = time.time() - start
    after = _margin(str(tmp_path / method), pairs)
    print(f"{method}: margin {before:.3f} -> {after:.3f} in {metrics['global_step']} steps, {seconds:.1f} s")
    assert metrics["global_step"] == 30 and after > before + 1.0
    card = open(tmp_path / method / "README.md").read()
    assert f"**{method.upper()}**" in card and "beta 0.1" in card and str(folders / "init") in card
    assert str(folders / "pref") in card and os.path.isfile(tmp_path / method / "tokenizer_config.json")


def test_wrong_format_names_the_column_and_the_converter(folders, tmp_path):
    script_args, training_args, model_args = _args("dpo", folders, tmp_path / "dpo")
    script_args.dataset_config = "unpaired"
    with pytest.raises(ValueError, match="no column 'chosen'.*build_preference_dataset.py.*dataset_config: pairwise"):
        train_preference(script_args, training_args, model_args)
    script_args, training_args, model_args = _args("kto", folders, tmp_path / "kto")
    script_args.dataset_config = "pairwise"
    with pytest.raises(
        ValueError, match="no column 'completion'.*build_preference_dataset.py.*dataset_config: unpaired"
    ):
        train_preference(script_args, training_args, model_args)


def test_kto_without_label(folders, tmp_path):
    data = load_dataset(str(folders / "pref"), "unpaired")
    from datasets import DatasetDict

    write_hub_dataset(DatasetDict({k: v.remove_columns("label") for k, v in data.items()}), tmp_path / "nolabel")
    script_args, training_args, model_args = _args("kto", folders, tmp_path / "kto")
    script_args.dataset_name, script_args.dataset_config = str(tmp_path / "nolabel"), "default"
    with pytest.raises(ValueError, match="no column 'label'.*build_preference_dataset.py"):
        train_preference(script_args, training_args, model_args)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "preference", "config_*.yaml"))))
def test_preference_recipes_parse(path):
    # GPU recipes ask for bf16, which TrainingArguments refuses without a GPU unless use_cpu is set.
    cpu = [] if torch.cuda.is_available() or "countdown-tiny" in path else ["--use_cpu", "true"]
    script_args, training_args, model_args = parse_preference_args(["--config", path, *cpu])
    method = os.path.basename(path)[len("config_") : -len(".yaml")]
    assert script_args.method == method and isinstance(training_args, CONFIGS[method])
    assert script_args.dataset_config == {"dpo": "pairwise", "kto": "unpaired"}[method]
    assert "optimal-sft" in model_args.model_name_or_path and training_args.beta == 0.1
    assert training_args.max_length == 128 and not training_args.activation_checkpointing
    if "countdown-tiny" in path:
        assert training_args.use_cpu and not training_args.bf16
    else:  # GPU recipes: 16 per device (x 4 GPUs), the usual preference learning rates, bf16 for 3B only
        assert training_args.per_device_train_batch_size == 16 and 5e-7 <= training_args.learning_rate <= 1e-6
        assert training_args.bf16 == ("3B" in path)


def test_method_flag_picks_the_config_class():
    script_args, training_args, _ = parse_preference_args(
        ["--method", "kto", "--output_dir", "x", "--use_cpu", "true"]
    )
    assert isinstance(training_args, KTOConfig) and script_args.dataset_config == "unpaired"
    with pytest.raises(ValueError, match="--method must be one of"):
        parse_preference_args(["--method", "ppo", "--output_dir", "x"])


def test_recipe_help_lists_the_method_s_config():
    import subprocess
    import sys

    run = lambda *flags: subprocess.run([sys.executable, "recipes/preference.py", *flags], capture_output=True,  # noqa: E731
                                        text=True, cwd=ROOT)  # fmt: skip
    dpo = run("--help")
    assert dpo.returncode == 0 and "--method {dpo,kto}" in dpo.stdout and "--ld_alpha" in dpo.stdout
    kto = run("--method", "kto", "--help")
    assert kto.returncode == 0 and "--desirable_weight" in kto.stdout and "--ld_alpha" not in kto.stdout


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_is_left_alone_and_other_folders_are_refused(folders, tmp_path, caplog):
    import logging

    out = tmp_path / "dpo"
    first = train_preference(*_args("dpo", folders, out, max_steps=3))
    before = _files(out)
    with caplog.at_level(logging.INFO):
        again = train_preference(*_args("dpo", folders, out, max_steps=3))
    assert again["global_step"] == first["global_step"] == 3 and _files(out) == before
    assert "already holds this finished dpo run" in caplog.text
    with pytest.raises(FileExistsError, match=r"holds the output of a dpo run \(training_run.json\)"):
        train_preference(*_args("kto", folders, out, max_steps=3))
    data = folders / "pref"
    snapshot = _files(data)
    with pytest.raises(FileExistsError, match=r"holds README.md, .*pairwise/.*\(it looks like a dataset folder\)"):
        train_preference(*_args("dpo", folders, data, max_steps=3))
    assert _files(data) == snapshot


def test_a_dataset_of_another_task_is_refused(folders, tmp_path):
    script_args, training_args, model_args = _args("dpo", folders, tmp_path / "dpo")
    script_args.task = "sudoku"
    with pytest.raises(
        ValueError, match=r"--dataset_name '.*pref' holds countdown problems .* but --task is 'sudoku'"
    ):
        train_preference(script_args, training_args, model_args)
    assert not (tmp_path / "dpo").exists()


# (method, option, value, what the one error says): numbers DPOConfig/KTOConfig take silently but that cannot train.
BAD_VALUES = [
    ("dpo", "beta", -1.0, "--beta must be > 0, got -1.0"),
    ("kto", "beta", 0.0, "--beta must be > 0, got 0.0"),
    ("dpo", "label_smoothing", 0.5, "--label_smoothing must be in [0, 0.5), got 0.5"),
    ("dpo", "label_smoothing", -0.1, "--label_smoothing must be in [0, 0.5), got -0.1"),
    ("dpo", "ld_alpha", 1.5, "--ld_alpha must be in [0, 1] (or unset), got 1.5"),
    ("dpo", "discopop_tau", 0.0, "--discopop_tau must be > 0, got 0.0"),
    ("dpo", "loss_weights", [-1.0], "--loss_weights must be >= 0 with a positive sum, got [-1.0]"),
    ("kto", "desirable_weight", -1.0, "--desirable_weight must be > 0, got -1.0"),
    ("kto", "undesirable_weight", 0.0, "--undesirable_weight must be > 0, got 0.0"),
    ("dpo", "ref_model_mixup_alpha", 1.5, "--ref_model_mixup_alpha must be in [0, 1], got 1.5"),
    ("kto", "ref_model_sync_steps", 0, "--ref_model_sync_steps must be >= 1, got 0"),
    ("dpo", "precompute_ref_batch_size", 0, "--precompute_ref_batch_size must be >= 1 (or unset), got 0"),
    ("dpo", "per_device_train_batch_size", 0, "--per_device_train_batch_size must be >= 1, got 0"),
    ("kto", "gradient_accumulation_steps", 0, "--gradient_accumulation_steps must be >= 1, got 0"),
    ("dpo", "num_train_epochs", 0.0, "--num_train_epochs must be > 0"),
    ("dpo", "max_length", 0, "--max_length must be >= 1"),
    ("kto", "weight_decay", -0.1, "--weight_decay and --warmup_steps must be >= 0"),
    ("dpo", "max_train_samples", 0, "--max_train_samples must be >= 1 (or unset), got 0"),
]


@pytest.mark.parametrize(
    ("method", "option", "value", "message"), BAD_VALUES, ids=[f"{m}-{o}" for m, o, *_ in BAD_VALUES]
)
def test_senseless_numbers_are_refused_before_any_work(method, option, value, message, tmp_path):
    # Nothing exists at the dataset and model paths: the check must come before anything is read or written.
    overrides = {"max_steps": -1} if option == "num_train_epochs" else {}
    training = CONFIGS[method](str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", **overrides)
    script_args = PreferenceScriptArguments(method=method, dataset_name=str(tmp_path / "nowhere"))
    setattr(script_args if option == "max_train_samples" else training, option, value)
    model_args = ModelConfig(model_name_or_path=str(tmp_path / "nomodel"))
    with pytest.raises(ValueError, match=re.escape(message)):
        train_preference(script_args, training, model_args)
    assert not (tmp_path / "out").exists()


def test_sensible_numbers_pass_the_check():
    from backtrack_trl.training.preference import check_preference_values

    dpo = DPOConfig("x", use_cpu=True, beta=0.5, label_smoothing=0.1, ld_alpha=0.0, loss_weights=[0.0, 1.0],
                    loss_type=["sigmoid", "sft"])  # fmt: skip
    check_preference_values(PreferenceScriptArguments(method="dpo", max_train_samples=1), dpo)
    kto = KTOConfig("x", use_cpu=True, beta=2.0, desirable_weight=1.33, undesirable_weight=0.5)
    check_preference_values(PreferenceScriptArguments(method="kto"), kto)
