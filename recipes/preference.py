"""DPO or KTO (TRL's DPOTrainer / KTOTrainer) from the optimal-SFT model on the backtrack dataset's own pairs: the
preference baselines of Self-Backtracking (arXiv 2502.04404, Table 1).

Usage:

# the data: configs `pairwise` (DPO) and `unpaired` (KTO) of one folder
python recipes/build_preference_dataset.py --source data/countdown-tiny/backtrack \\
    --output_dir data/countdown-tiny/preference

# CPU, the tiny model (starts from models/countdown-tiny/optimal-sft)
accelerate launch --config_file accelerate_configs/cpu.yaml recipes/preference.py \\
    --config recipes/countdown-tiny/preference/config_dpo.yaml
accelerate launch --config_file accelerate_configs/cpu.yaml recipes/preference.py \\
    --config recipes/countdown-tiny/preference/config_kto.yaml

# 4 GPUs, DeepSpeed ZeRO-2, Llama-3.2-1B
accelerate launch --config_file accelerate_configs/zero2.yaml --num_processes 4 recipes/preference.py \\
    --config recipes/Llama-3.2-1B/preference/config_dpo.yaml

Rerunning the same command continues an interrupted run from its newest complete checkpoint and leaves a finished
one alone; an --output_dir that holds anything else is refused unless --overwrite_output_dir.

`--method dpo|kto` (or `method:` in the YAML) picks the trainer and its config class;
`python recipes/preference.py --method kto --help` lists every option (PreferenceScriptArguments, trl.KTOConfig,
trl.ModelConfig).
"""

from backtrack_trl.errors import run_recipe
from backtrack_trl.training.launch import run_trainer
from backtrack_trl.training.preference import parse_preference_args, train_preference


def main():
    run_trainer(parse_preference_args, train_preference)


if __name__ == "__main__":
    run_recipe(main)
