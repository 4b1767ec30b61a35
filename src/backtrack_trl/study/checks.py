"""Every check of a study before its first stage: the output folder can be one, the sub-recipes are there, the
accelerate configs load, vLLM is where the options need it, the round-0 model has ``<backtrack>``, and every
sub-recipe config parses with the overrides its stage will give it. A bad value fails at once with the option and
file it came from, before anything is written (not after the hour of stages before it).

Usage:

```python
from backtrack_trl.study.checks import check_study
from backtrack_trl.study.config import SelfImproveArguments

recipes = check_study(SelfImproveArguments())  # run from the repository root; raises ValueError on a bad config
```
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

from backtrack_trl.config_files import read_yaml
from backtrack_trl.errors import MissingDependencyError
from backtrack_trl.evaluation.specs import uses_vllm
from backtrack_trl.study.commands import cli_args, find_recipes_dir, needed_scripts
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.tasks import get_task


def check_study(args: SelfImproveArguments, default_recipes_dir: str | os.PathLike | None = None) -> Path:
    """All the checks, in order; returns the sub-recipes' folder (see :func:`find_recipes_dir`)."""
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise NotADirectoryError(f"--output_dir {args.output_dir!r} is a file: give a study folder (new or existing).")
    recipes = find_recipes_dir(args.recipes_dir, default=default_recipes_dir, scripts=needed_scripts(args))
    get_task(args.task)
    check_launch_options(args)
    if args.backtrack_model:  # before anything is written
        check_backtrack_model(args.backtrack_model)
    validate_sub_configs(args, StudyLayout(args.output_dir))
    return recipes


def check_accelerate_config(path: str, option: str) -> None:
    """``path`` is an accelerate config file that ``accelerate launch --config_file`` loads."""
    read_yaml(path, option=f"--{option}")  # missing, a folder, not YAML, not a mapping: one error naming it
    from accelerate.commands.config.config_args import load_config_from_file

    try:
        load_config_from_file(str(path))
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # accelerate's loader on a bad mapping
        raise ValueError(
            f"--{option} {path!r} is not an accelerate config ({error}): start from one in accelerate_configs/ "
            "(cpu.yaml on CPU, ddp.yaml / zero2.yaml on GPUs) or write one with `accelerate config`."
        ) from None


def check_vllm_python(python: str) -> None:
    """``--vllm_python`` runs and has vLLM (without importing it: a spec lookup answers in a Python start)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        found = subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (FileNotFoundError, PermissionError) as error:
        raise FileNotFoundError(
            f"--vllm_python {python!r} cannot run ({error.strerror}): give the Python of an environment with vLLM, "
            "e.g. .venv-vllm/bin/python (`make vllm-env` builds it)."
        ) from None
    if not found:
        raise MissingDependencyError(
            f"--vllm_python {python!r} has no vLLM: give the Python of an environment with vLLM, e.g. "
            ".venv-vllm/bin/python (`make vllm-env` builds it)."
        )


def check_launch_options(a: SelfImproveArguments) -> None:
    """The accelerate configs load; vLLM is installed where the options run it (a server from ``vllm_python``, or
    an in-process engine in this Python); the vLLM server's arguments split."""
    check_accelerate_config(a.accelerate_config, "accelerate_config")
    if a.eval_accelerate_config:
        check_accelerate_config(a.eval_accelerate_config, "eval_accelerate_config")
    try:
        shlex.split(a.vllm_server_args)
    except ValueError as error:
        raise ValueError(f"--vllm_server_args {a.vllm_server_args!r}: {error} (quote it as a shell would).") from None
    searches = []  # (option, spec) of every harvest on vLLM; a server (given or started) serves them
    if a.rounds and a.search_backend == "vllm":
        searches.append(("search_backend", "vllm"))
    if a.correction_pool_size and uses_vllm(a.correction_search):
        searches.append(("correction_search", a.correction_search))
    in_process = [] if a.vllm_server_base_url or a.vllm_serve else list(searches)
    eval_config = read_yaml(a.eval_config, option="--eval_config")
    if not eval_config.get("vllm_server_base_url"):  # the evaluations' vLLM decoders run in their process
        decoders = [("round_eval_decoders", spec) for spec in a.round_eval_decoders]
        decoders += [("synthetic_eval_decoders", spec) for spec in a.synthetic_eval_decoders]
        decoders += [(f"--eval_config {a.eval_config} decoders:", spec) for spec in eval_config.get("decoders") or []]
        in_process += [(option, spec) for option, spec in decoders if uses_vllm(str(spec))]
    if a.vllm_serve and searches:
        check_vllm_python(a.vllm_python)
    if in_process and importlib.util.find_spec("vllm") is None:
        option, spec = in_process[0]
        raise MissingDependencyError(
            f"{option} {spec!r} runs vLLM in this process, but vLLM is not installed in this environment "
            f"({sys.executable}): run the study with .venv-vllm/bin/python (`make vllm-env` builds it), start a "
            "server per round (vllm_serve: true, vllm_python: .venv-vllm/bin/python), or use backend hf."
        )


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
    sft_keys = ["backtrack_sft_config", "optimal_sft_config", "round_sft_config"]
    if a.correction_pool_size:  # the self-correction fine-tune
        sft_keys.append("correction_sft_config")
    for key in sft_keys:
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
    grpo_keys = ["grpo_config"] + (["round_grpo_config"] if a.round_trainer == "grpo" else [])
    for key in grpo_keys:
        if getattr(a, key):
            from backtrack_trl.training.grpo import parse_grpo_args

            options = {"model_name_or_path": placeholder, "dataset_name": "x", "output_dir": "x", "seed": a.seed,
                       "task": a.task}  # fmt: skip
            checks.append((key, getattr(a, key), parse_grpo_args, options))
    return checks


def validate_sub_configs(a: SelfImproveArguments, layout: StudyLayout) -> None:
    """Parse every sub-recipe config with the overrides its stage will get, as the recipe itself does, so that a
    bad value fails now with the file's name, not after the stages before it ran."""
    for key, path, parse, overrides in _sub_config_checks(a, layout):
        if not path or (key == "backtrack_sft_config" and a.backtrack_model):
            continue
        read_yaml(path, option=f"--{key}")  # a missing file or a folder: named by its study option
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
