"""backtrack_trl.training.sft_config: every SFT recipe parses; unknown keys, bad files and contradicting flags give one
clear error each."""

import glob
import os

import pytest
import torch
from trl import SFTConfig

from backtrack_trl.training.sft_config import configure_training_args, parse_args


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "sft", "config_*.yaml"))))
def test_every_sft_recipe_parses(path):
    # GPU recipes ask for bf16, which TrainingArguments refuses without a GPU unless use_cpu is set.
    cpu = [] if torch.cuda.is_available() or "countdown-tiny" in path else ["--use_cpu", "true"]
    script_args, training_args, model_args = parse_args(["--config", path, *cpu])
    configure_training_args(training_args)
    assert training_args.remove_unused_columns is False
    assert training_args.dataset_kwargs["skip_prepare_dataset"] is True
    assert script_args.mask_wrong_step is True and training_args.max_length == 128
    kind = os.path.basename(path)[len("config_") : -len(".yaml")]
    if kind in ("backtrack", "optimal"):
        assert kind in script_args.dataset_name and kind in training_args.output_dir
    if "countdown-tiny" in path:
        assert training_args.use_cpu and not training_args.bf16 and not training_args.activation_checkpointing
    if "Llama-3.2" in path:  # the paper's hyperparameters
        assert training_args.learning_rate == 1e-5 and training_args.weight_decay == 0.01
        assert str(training_args.lr_scheduler_type.value) == "cosine" and training_args.warmup_steps == 1
        assert training_args.per_device_train_batch_size == 16 and training_args.num_train_epochs == 3
        assert training_args.bf16 == ("3B" in path)
        if kind in ("backtrack", "optimal"):  # round configs start from the previous model
            assert model_args.model_name_or_path == f"meta-llama/{path.split(os.sep)[-3]}"


def test_unknown_recipe_key_is_named(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: m\ndataset_name: d\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"recipe.yaml' has unknown key\(s\) \['learning_rat'\].*--help"):
        parse_args(["--config", str(recipe)])
    flags = ["--model_name_or_path", "m", "--use_cpu", "true", "--bf16", "false", "--mask_wrong_stepp", "false"]
    with pytest.raises(ValueError, match=r"unknown option --mask_wrong_stepp: did you mean --mask_wrong_step\?.*help"):
        parse_args(flags)


@pytest.mark.parametrize(
    "flag, value, fix",
    [
        ("packing", True, "packing: false"),
        ("padding_free", True, "padding_free: false"),
        ("eval_packing", True, "eval_packing: false"),
        ("assistant_only_loss", True, "assistant_only_loss: false"),
        ("truncation_mode", "keep_end", "truncation_mode: keep_start"),
    ],
)
def test_contradicting_flags_are_refused(flag, value, fix):
    args = SFTConfig("out", use_cpu=True, bf16=False)
    setattr(args, flag, value)
    with pytest.raises(ValueError, match=f"`{flag}: {value}` cannot be used.*{fix}"):
        configure_training_args(args)


def test_collator_flags_are_set_for_the_user():
    args = SFTConfig("out", use_cpu=True, bf16=False, dataset_kwargs={"foo": 1})
    assert args.remove_unused_columns is True  # TRL's default would drop the raw columns
    configure_training_args(args)
    assert args.remove_unused_columns is False and args.completion_only_loss is False
    assert args.dataset_kwargs == {"foo": 1, "skip_prepare_dataset": True}
    args.dataset_kwargs = {"skip_prepare_dataset": False}
    with pytest.raises(ValueError, match="skip_prepare_dataset"):
        configure_training_args(args)


def test_a_missing_or_malformed_recipe_is_named(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError) as error:
        parse_args(["--config", missing])
    assert str(error.value).startswith(f"--config {missing!r} does not exist: give the recipe's YAML file")
    with pytest.raises(IsADirectoryError, match=r"--config '.*' is a folder, not a file"):  # a folder: which option
        parse_args(["--config", str(tmp_path)])
    listed = tmp_path / "list.yaml"
    listed.write_text("- learning_rate\n")
    with pytest.raises(ValueError) as error:
        parse_args(["--config", str(listed)])
    assert str(error.value) == f"Recipe {str(listed)!r} must be a YAML mapping of option: value."
