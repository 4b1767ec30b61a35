"""GRPO from the task's checker: TRL's GRPOTrainer with rewards from backtrack_trl.training.rewards.

Usage:

accelerate launch --config_file accelerate_configs/cpu.yaml recipes/grpo.py \\
    --config recipes/countdown-tiny/grpo/config_default.yaml

python recipes/grpo.py --config recipes/countdown-tiny/grpo/config_default.yaml --reward_funcs strict

Rerunning the same command continues an interrupted run from its newest complete checkpoint and leaves a finished
one alone; an --output_dir that holds anything else is refused unless --overwrite_output_dir (docs/training.md).

`python recipes/grpo.py --help` lists every option (GRPOScriptArguments, trl.GRPOConfig, trl.ModelConfig).
"""

from backtrack_trl.errors import run_recipe
from backtrack_trl.training.grpo import parse_grpo_args, train_grpo
from backtrack_trl.training.launch import run_trainer


def main():
    run_trainer(parse_grpo_args, train_grpo)


if __name__ == "__main__":
    run_recipe(main)
