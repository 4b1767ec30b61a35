"""Every recipe folder's data, model, evaluation and study YAML parses with its dataclass (SFT recipes: see
test_training_sft.py), and a study config points at files that exist and at its own folder."""

import glob
import os

import pytest
import yaml
from trl import TrlParser

from backtrack_trl.data.build_config import parse_data_args
from backtrack_trl.evaluation import EvaluationArguments
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.training.model_init import InitModelArguments


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(cls, path):
    (args,) = TrlParser((cls,)).parse_args_and_config(["--config", path])
    return args


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "data", "config_*.yaml"))))
def test_data_recipes_parse_and_validate(path):
    args, config = parse_data_args(["--config", path])
    assert args.mode in os.path.basename(path) and args.mode in args.output_dir
    assert args.task == yaml.safe_load(open(path))["task"] and config.seed == yaml.safe_load(open(path))["seed"]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "eval", "config_*.yaml"))))
def test_eval_recipes_parse(path):
    args = _parse(EvaluationArguments, path)
    assert args.decoders and args.splits == ["test_seen", "test_new"]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "init_model.yaml"))))
def test_init_model_recipes_parse(path):
    args = _parse(InitModelArguments, path)
    assert args.tokenizer.removesuffix("-numbers") in ("countdown", "sudoku") or args.model_name_or_path


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "self_improve", "config_*.yaml")))
)
def test_study_recipes_point_at_their_own_existing_configs(path):
    args = _parse(SelfImproveArguments, path)
    folder = path.split(os.sep)[-3]
    for key in ("backtrack_data_config", "optimal_data_config", "init_model_config", "backtrack_sft_config",
                "optimal_sft_config", "eval_config", "round_sft_config"):  # fmt: skip
        value = getattr(args, key)
        if value:
            assert os.path.isfile(os.path.join(ROOT, value)), f"{path}: {key} {value} does not exist"
            assert value.startswith(f"recipes/{folder}/"), f"{path}: {key} {value} is another recipe folder's"
    data = yaml.safe_load(open(os.path.join(ROOT, args.backtrack_data_config)))
    optimal = yaml.safe_load(open(os.path.join(ROOT, args.optimal_data_config)))
    # The baseline and the backtrack data must share questions and test splits (a paired comparison).
    shared = ("num_train_questions", "num_test", "num_numbers", "min_number", "max_number", "min_target",
              "max_target", "new_target_fraction", "seed", "solution_order")  # fmt: skip
    assert {k: data.get(k) for k in shared} == {k: optimal.get(k) for k in shared}


def test_make_self_improve_uses_the_countdown_tiny_default():
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert "SCALE ?= countdown-tiny\n" in makefile
    assert os.path.isfile(os.path.join(ROOT, "recipes", "countdown-tiny", "self_improve", "config_default.yaml"))
