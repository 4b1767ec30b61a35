"""The options of ``recipes/reward_model.py``: ``RewardModelScriptArguments`` (both stages) and the parser.

Usage:

```python
from backtrack_trl.training.reward_config import parse_args

script_args, training_args, model_args = parse_args(
    ["--config", "recipes/countdown-tiny/reward_model/config_default.yaml", "--stage", "data"]
)
print(script_args.policy_model, script_args.num_samples)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backtrack_trl.training.recipe_args import parse_recipe_args
from backtrack_trl.training.run_folder import OVERWRITE_HELP


STAGES = ("data", "train", "all")


@dataclass
class RewardModelScriptArguments:
    """Options of ``recipes/reward_model.py`` besides ``trl.RewardConfig`` (training) and ``trl.ModelConfig``."""

    stage: str = field(
        default="all",
        metadata={
            "help": "'data' builds the preference pairs, 'train' trains the reward model on them, 'all' does both.",
            "choices": list(STAGES),
        },
    )
    task: str = field(default="countdown", metadata={"help": "Registered task (backtrack_trl.tasks)."})
    policy_model: str = field(
        default="models/countdown-tiny/optimal-sft",
        metadata={"help": "Model folder that samples the candidates (stage data): the optimal-SFT model."},
    )
    problems_dataset: str = field(
        default="data/countdown-tiny/optimal",
        metadata={"help": "Hub-layout dataset folder with the problems; its test splits are excluded."},
    )
    problems_split: str = field(
        default="train", metadata={"help": "Split whose problems are sampled (not a test one)."}
    )
    max_problems: int = field(default=1000, metadata={"help": "Distinct train problems to sample (first ones)."})
    eval_problems: int = field(
        default=50,
        metadata={"help": "Of those, the last ones whose pairs form the 'eval' split (pairwise accuracy held out)."},
    )
    num_samples: int = field(default=8, metadata={"help": "Samples per problem (N of best-of-N)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=64, metadata={"help": "Response length limit in tokens."})
    sampling_batch_size: int | None = field(
        default=None, metadata={"help": "Problems decoded together (default: about 512 rows / N)."}
    )
    pairs_per_problem: int = field(
        default=4, metadata={"help": "At most this many (correct, wrong) pairs per problem (balanced round robin)."}
    )
    preference_dataset: str = field(
        default="data/countdown-tiny/orm-pairs",
        metadata={"help": "Hub-layout folder of the pairs: written by stage data, read by stage train."},
    )
    overwrite_dataset: bool = field(default=False, metadata={"help": "Replace an existing preference_dataset."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})
    sampling_seed: int = field(default=0, metadata={"help": "Base seed of the sampling (problem i gets seed + i)."})
    device: str | None = field(default=None, metadata={"help": "Sampling device (default: cuda if available)."})

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}.")
        for name in ("max_problems", "num_samples", "pairs_per_problem"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)!r}.")
        if not 0 <= self.eval_problems < self.max_problems:
            raise ValueError(f"--eval_problems must be in [0, max_problems), got {self.eval_problems!r}.")
        if self.problems_split.startswith("test"):
            raise ValueError(f"--problems_split {self.problems_split!r}: the ORM never trains on test problems.")


def parse_args(argv: list[str] | None = None):
    """``--config recipe.yaml`` + CLI overrides -> (RewardModelScriptArguments, RewardConfig, ModelConfig)."""
    from trl import ModelConfig, RewardConfig

    from backtrack_trl.errors import recipe_parser  # one-line command-line errors

    parser = recipe_parser((RewardModelScriptArguments, RewardConfig, ModelConfig))
    return parse_recipe_args(parser, argv, "List the options with `python recipes/reward_model.py --help`.")
