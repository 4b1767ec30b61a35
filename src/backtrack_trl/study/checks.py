"""Every check of a study before its first stage: the sub-recipes are there, the round-0 model has ``<backtrack>``,
and every sub-recipe config parses with the overrides its stage will give it. A bad value fails at once with the
option and file it came from, before anything is written (not after the hour of stages before it).

Usage:

```python
from backtrack_trl.study.checks import check_study
from backtrack_trl.study.config import SelfImproveArguments

recipes = check_study(SelfImproveArguments())  # run from the repository root; raises ValueError on a bad config
```
"""

from __future__ import annotations

import os
from pathlib import Path

from backtrack_trl.study.commands import cli_args, find_recipes_dir, needed_scripts
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.tasks import get_task


def check_study(args: SelfImproveArguments, default_recipes_dir: str | os.PathLike | None = None) -> Path:
    """All the checks, in order; returns the sub-recipes' folder (see :func:`find_recipes_dir`)."""
    recipes = find_recipes_dir(args.recipes_dir, default=default_recipes_dir, scripts=needed_scripts(args))
    get_task(args.task)
    if args.backtrack_model:  # before anything is written
        check_backtrack_model(args.backtrack_model)
    validate_sub_configs(args, StudyLayout(args.output_dir))
    return recipes


def check_backtrack_model(path: str) -> None:
    """``--backtrack_model`` loads as a tokenizer with the ``<backtrack>`` token."""
    from transformers import AutoTokenizer

    from backtrack_trl.tasks.tokenizer import require_backtrack_token

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as error:
        raise FileNotFoundError(f"--backtrack_model {path!r} is not a model folder or Hub id ({error}).") from None
    require_backtrack_token(tokenizer)


def _parse_with(dataclass_type):
    from backtrack_trl.errors import recipe_parser

    def parse(argv):
        (parsed,) = recipe_parser((dataclass_type,)).parse_args_and_config(args=argv)
        return parsed

    return parse


def _sub_config_checks(a: SelfImproveArguments, layout: StudyLayout) -> list[tuple]:
    """(option, config path, the recipe's parser, the overrides its stage gives) of every sub-recipe config."""
    from backtrack_trl.data.build_config import parse_data_args
    from backtrack_trl.evaluation import EvaluationArguments
    from backtrack_trl.training.model_init import InitModelArguments
    from backtrack_trl.training.sft_config import parse_args as parse_sft_args

    placeholder = str(layout.model_dir("init"))
    checks = [
        ("backtrack_data_config", a.backtrack_data_config, parse_data_args, {"output_dir": "x"}),
        ("optimal_data_config", a.optimal_data_config, parse_data_args, {"output_dir": "x"}),
        ("init_model_config", a.init_model_config, _parse_with(InitModelArguments), {"output_dir": "x"}),
        ("eval_config", a.eval_config, _parse_with(EvaluationArguments), {"output_dir": "x"}),
    ]
    for key in ("backtrack_sft_config", "optimal_sft_config", "round_sft_config"):
        sft = {"model_name_or_path": placeholder, "dataset_name": "x", "output_dir": "x", "seed": a.seed}
        checks.append((key, getattr(a, key), parse_sft_args, sft))
    if a.dpo_config or a.kto_config:
        from backtrack_trl.training.preference import parse_preference_args

        for key in ("dpo_config", "kto_config"):
            options = {"model_name_or_path": placeholder, "dataset_name": "x", "output_dir": "x", "task": a.task}
            checks.append((key, getattr(a, key), parse_preference_args, options))
    if a.reward_model_config:
        from backtrack_trl.training.reward_config import parse_args as parse_reward_args

        options = {"policy_model": placeholder, "model_name_or_path": placeholder, "output_dir": "x", "task": a.task}
        checks.append(("reward_model_config", a.reward_model_config, parse_reward_args, options))
    return checks


def validate_sub_configs(a: SelfImproveArguments, layout: StudyLayout) -> None:
    """Parse every sub-recipe config with the overrides its stage will get, as the recipe itself does, so that a
    bad value fails now with the file's name, not after the stages before it ran."""
    for key, path, parse, overrides in _sub_config_checks(a, layout):
        if not path or (key == "backtrack_sft_config" and a.backtrack_model):
            continue
        try:
            parsed = parse(["--config", str(path), *cli_args(overrides)])
            first = parsed[0] if isinstance(parsed, tuple) else parsed
            validate = getattr(first, "validate", None)
            if callable(validate) and key not in ("backtrack_data_config", "optimal_data_config"):
                validate()
            if getattr(first, "task", a.task) != a.task:
                raise ValueError(
                    f"its task is {first.task!r} but the study's is {a.task!r}; set `task: {a.task}` in both."
                )
        except SystemExit as error:  # argparse: the message is on stderr already
            raise ValueError(f"--{key} {path}: the config does not parse (see the message above).") from error
        except ValueError as error:
            raise ValueError(f"--{key} {path}: {error}") from None
