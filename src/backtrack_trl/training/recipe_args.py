"""Parse a trainer recipe's command line (``--config recipe.yaml`` + flags) with one clear error for unknown options.

``TrlParser`` reports a misspelled YAML key or flag as a long ``ValueError`` ending in a generic "Please ..." hint;
:func:`parse_recipe_args` keeps its first sentence (which names the option) and appends the recipe's own hint.

Usage:

```python
from trl import ModelConfig, RewardConfig, TrlParser

from backtrack_trl.training.recipe_args import parse_recipe_args
from backtrack_trl.training.reward_config import RewardModelScriptArguments

parser = TrlParser((RewardModelScriptArguments, RewardConfig, ModelConfig))
argv = ["--config", "recipes/countdown-tiny/reward_model/config_default.yaml", "--stage", "data"]
script_args, training_args, model_args = parse_recipe_args(
    parser, argv, hint="List the options with `python recipes/reward_model.py --help`."
)
```
"""

from __future__ import annotations

from collections.abc import Sequence


# TrlParser's words for a YAML key (first) or a flag (second) that no dataclass of the recipe declares.
_UNKNOWN_OPTION = ("Unknown arguments from config file", "not used by the HfArgumentParser")


def parse_recipe_args(parser, argv: Sequence[str] | None, hint: str):
    """``parser.parse_args_and_config(args=argv)``; an unknown option raises ``ValueError("<which option>. <hint>")``."""
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as error:
        message = str(error)
        if any(words in message for words in _UNKNOWN_OPTION):
            raise ValueError(f"{message.split('. Please')[0]}. {hint}") from None
        raise
