"""backtrack_trl.training.recipe_args: an unknown option is named with the recipe's hint; other errors pass through."""

import pytest
from trl import TrlParser

from backtrack_trl.training.recipe_args import parse_recipe_args
from backtrack_trl.training.reward_config import RewardModelScriptArguments


HINT = "List the options with `python recipes/reward_model.py --help`."


def parser():
    return TrlParser((RewardModelScriptArguments,))


def test_an_unknown_flag_is_named_with_the_hint():
    with pytest.raises(ValueError) as error:
        parse_recipe_args(parser(), ["--bogus", "1"], HINT)
    assert (
        str(error.value) == f"Some specified arguments are not used by the HfArgumentParser: ['--bogus', '1']. {HINT}"
    )


def test_an_unknown_yaml_key_is_named_with_the_hint(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: data\nnum_sample: 3\n")
    with pytest.raises(ValueError, match=r"num_sample.*List the options with") as error:
        parse_recipe_args(parser(), ["--config", str(recipe)], HINT)
    assert "Please" not in str(error.value)


def test_other_value_errors_pass_through_unchanged():
    with pytest.raises(ValueError) as error:
        parse_recipe_args(parser(), ["--max_problems", "0"], HINT)
    assert str(error.value) == "--max_problems must be >= 1, got 0."


def test_a_valid_command_line_parses():
    (args,) = parse_recipe_args(parser(), ["--stage", "data", "--num_samples", "3"], HINT)
    assert (args.stage, args.num_samples) == ("data", 3)
