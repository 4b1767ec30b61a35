"""Backtrack-masked supervised fine-tuning (Self-Backtracking, arXiv 2502.04404) with TRL's SFTTrainer.

Trains on a dataset that follows the backtrack-trl row contract (prompt, completion, kind, prefix, wrong_step): the
prompt and the wrong step of backtrack rows are masked out of the loss; the correct prefix, `<backtrack>` and EOS are
trained. The same script trains the optimal-only baseline: point it at the optimal dataset.

Usage:

# CPU, one process (the default tiny model; builds on `make data init-model`)
accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
    --config recipes/countdown-tiny/sft/config_backtrack.yaml

# CPU, two processes over gloo
accelerate launch --config_file accelerate_configs/cpu_ddp.yaml recipes/sft.py \
    --config recipes/countdown-tiny/sft/config_backtrack.yaml

# 4 GPUs, DeepSpeed ZeRO-2, Llama-3.2-1B with the paper's hyperparameters
accelerate launch --config_file accelerate_configs/zero2.yaml --num_processes 4 recipes/sft.py \
    --config recipes/Llama-3.2-1B/sft/config_backtrack.yaml

# Any option can be overridden on the command line, e.g. LoRA or the no-mask ablation:
accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sft.py \
    --config recipes/countdown-tiny/sft/config_backtrack.yaml --use_peft --lora_r 16 --mask_wrong_step false

Rerunning the same command continues an interrupted run from its newest complete checkpoint and leaves a finished
one alone; an --output_dir that holds anything else is refused unless --overwrite_output_dir (docs/training.md).

`python recipes/sft.py --help` lists every option (SFTScriptArguments, trl.SFTConfig, trl.ModelConfig).
"""

from backtrack_trl.errors import run_recipe
from backtrack_trl.training.launch import run_trainer
from backtrack_trl.training.sft import train
from backtrack_trl.training.sft_config import parse_args


def main():
    run_trainer(parse_args, train)


if __name__ == "__main__":
    run_recipe(main)
