"""backtrack_trl.training.reward_config: the options of recipes/reward_model.py, their checks and the parser."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig, RewardConfig

from backtrack_trl.training.reward_config import RewardModelScriptArguments, parse_args


ROOT = Path(__file__).resolve().parents[2]


def test_a_test_split_is_refused():
    with pytest.raises(ValueError, match="never trains on test problems"):
        RewardModelScriptArguments(problems_split="test_seen")


def test_recipes_parse_and_help_runs(tmp_path):
    script_args, training_args, _ = parse_args(
        ["--config", str(ROOT / "recipes/countdown-tiny/reward_model/config_default.yaml")]
    )
    assert script_args.stage == "all" and training_args.use_cpu and not training_args.bf16
    from dataclasses import fields

    known = {f.name for cls in (RewardModelScriptArguments, RewardConfig, ModelConfig) for f in fields(cls)}
    gpu = yaml.safe_load((ROOT / "recipes/Llama-3.2-1B/reward_model/config_default.yaml").read_text())
    assert set(gpu) <= known
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "recipes/reward_model.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--stage" in help_text and "--preference_dataset" in help_text
