"""The options of ``recipes/sft.py``: ``SFTScriptArguments``, the command-line parser and the checks of its values.

``parse_args`` reads ``--config recipe.yaml`` plus command-line overrides into ``(SFTScriptArguments, trl.SFTConfig,
trl.ModelConfig)``, naming any unknown recipe key or flag in one clear error; ``configure_training_args`` then sets
the ``SFTConfig`` flags the backtrack collator needs and refuses the ones that contradict it.

Usage:

```python
from backtrack_trl.training.sft_config import configure_training_args, parse_args

script_args, training_args, model_args = parse_args(["--config", "recipes/countdown-tiny/sft/config_backtrack.yaml"])
configure_training_args(training_args)
assert training_args.remove_unused_columns is False and script_args.mask_wrong_step
```
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from backtrack_trl.config_files import read_yaml
from backtrack_trl.errors import check_file
from backtrack_trl.training.recipe_args import parse_recipe_args
from backtrack_trl.training.run_folder import OVERWRITE_HELP


@dataclass
class SFTScriptArguments(ScriptArguments):
    """Script arguments of ``recipes/sft.py`` (dataset selection and the backtrack loss options).

    Inherits ``dataset_name`` (a local Hub-layout folder or a Hub id), ``dataset_config``, ``dataset_train_split``,
    ``dataset_test_split`` and ``dataset_streaming`` from TRL's ``ScriptArguments``.
    """

    dataset_test_split: str = field(
        default="test_seen",
        metadata={"help": "Split used for evaluation when `eval_strategy` is not 'no' (test_seen / test_new)."},
    )
    mask_wrong_step: bool = field(
        default=True,
        metadata={
            "help": "Mask the wrong step of backtrack rows out of the loss (the paper's choice). False trains it "
            "too (the 'Physics of Language Models 2.2' choice)."
        },
    )
    trained_error_types: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Error types whose wrong step is trained even with mask_wrong_step (a subset of exploration, "
            "computational, rule_violation). [exploration] trains legal steps with right arithmetic that miss the "
            "target, then <backtrack>: the model practises honest last steps instead of copying the target."
        },
    )
    on_untrained_example: str = field(
        default="warn",
        metadata={
            "help": "What to do with an example that truncation leaves with no trained token: 'warn' (counted and "
            "logged) or 'raise'.",
            "choices": ["warn", "raise"],
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows of the train split only (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N rows of the test split only."}
    )
    task: str = field(default="countdown", metadata={"help": "Registered task of the dataset (backtrack_trl.tasks)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})


# SFTConfig options that contradict raw-row collation: name -> (bad value test, why, fix)
_CONTRADICTIONS = {
    "packing": (lambda v: bool(v), "packing concatenates pre-tokenized rows, but the backtrack collator needs the raw "
                "rows (prompt/prefix/wrong_step) of every example", "packing: false"),
    "eval_packing": (lambda v: bool(v), "packing needs pre-tokenized rows; the collator builds them", "eval_packing: false"),
    "padding_free": (lambda v: bool(v), "padding-free batches are built by TRL's own collator, which cannot mask the "
                     "wrong step", "padding_free: false"),
    "assistant_only_loss": (lambda v: bool(v), "the loss mask comes from the row contract (prompt, wrong step), not "
                            "from a chat template", "assistant_only_loss: false"),
    "truncation_mode": (lambda v: v != "keep_start", "the collator truncates from the end, keeping the prompt",
                        "truncation_mode: keep_start"),
}  # fmt: skip


def configure_training_args(training_args: SFTConfig) -> SFTConfig:
    """Set the SFTConfig flags the collator needs and refuse the ones that contradict it (one clear error each).

    - ``remove_unused_columns=False``: the raw columns must reach the collator (TRL would drop them).
    - ``dataset_kwargs={"skip_prepare_dataset": True}``: TRL must not tokenize the rows itself.
    - ``completion_only_loss`` is irrelevant (the collator builds the labels); it is set to False.
    """
    for name, (is_bad, why, fix) in _CONTRADICTIONS.items():
        value = getattr(training_args, name, None)
        if value is not None and is_bad(value):
            raise ValueError(f"`{name}: {value}` cannot be used with backtrack-masked SFT: {why}. Set `{fix}`.")
    dataset_kwargs = dict(training_args.dataset_kwargs or {})
    if dataset_kwargs.get("skip_prepare_dataset") is False:
        raise ValueError(
            "`dataset_kwargs: {skip_prepare_dataset: false}` would let TRL tokenize the rows and drop the columns the "
            "backtrack collator needs. Remove it (recipes/sft.py sets skip_prepare_dataset: true)."
        )
    dataset_kwargs["skip_prepare_dataset"] = True
    training_args.dataset_kwargs = dataset_kwargs
    training_args.remove_unused_columns = False
    training_args.completion_only_loss = False
    return training_args


# Appended to every unknown-option error of recipes/sft.py.
_UNKNOWN_HINT = (
    "These are not options of recipes/sft.py (SFTScriptArguments, trl.SFTConfig or trl.ModelConfig): check the "
    "spelling, or list every option with `python recipes/sft.py --help`."
)


def make_parser() -> TrlParser:
    from backtrack_trl.errors import recipe_parser  # one-line command-line errors

    return recipe_parser((SFTScriptArguments, SFTConfig, ModelConfig))


def _check_recipe_keys(argv: list[str]) -> None:
    """Name unknown keys of the ``--config`` YAML before any dataclass is built (their own errors would come first)."""
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return
    path = argv[argv.index("--config") + 1]
    check_file(path, "--config", "give the recipe's YAML file, e.g. recipes/countdown-tiny/sft/config_backtrack.yaml")
    recipe = read_yaml(path, option="Recipe")
    known = {f.name for cls in (SFTScriptArguments, SFTConfig, ModelConfig) for f in dataclasses.fields(cls)}
    unknown = sorted(set(recipe) - known - {"env"})
    if unknown:
        raise ValueError(f"Recipe {path!r} has unknown key(s) {unknown}. {_UNKNOWN_HINT}")


def parse_args(argv: list[str] | None = None) -> tuple[SFTScriptArguments, SFTConfig, ModelConfig]:
    """Parse ``--config recipe.yaml`` + CLI overrides; an unknown recipe key or flag gives one clear error naming it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _check_recipe_keys(argv)
    parsed = parse_recipe_args(make_parser(), argv, _UNKNOWN_HINT)
    check_training_values(parsed[1])
    return parsed


def check_training_values(args: SFTConfig) -> None:
    """The training values transformers accepts silently but that cannot train (e.g. a negative learning rate)."""
    if not args.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {args.learning_rate!r}.")
    if not (args.max_steps and args.max_steps > 0) and not args.num_train_epochs > 0:
        raise ValueError(f"--num_train_epochs must be > 0 (or set --max_steps), got {args.num_train_epochs!r}.")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)!r}.")
    max_length = getattr(args, "max_length", None)  # GRPOConfig has max_completion_length instead
    if max_length is not None and max_length < 1:
        raise ValueError(f"--max_length must be >= 1 (or unset), got {max_length!r}.")
    if args.weight_decay < 0 or args.warmup_steps < 0:
        raise ValueError(f"--weight_decay and --warmup_steps must be >= 0, got {args.weight_decay!r} and "
                         f"{args.warmup_steps!r}.")  # fmt: skip
