"""An outcome reward model (ORM) for best-of-N with TRL's RewardTrainer (the paper's section 6 baseline).

Two stages (``--stage data|train|all``, default all):

- data: sample ``--num_samples`` responses per TRAIN problem of ``--problems_dataset`` from ``--policy_model`` (the
  optimal-SFT model), label them with the task's strict checker, write (prompt, chosen, rejected) pairs to
  ``--preference_dataset`` (Hub layout). Problems of the test splits are never used.
- train: ``AutoModelForSequenceClassification`` (num_labels=1) from ``--model_name_or_path``, trained with
  ``trl.RewardTrainer``; model, tokenizer, model card and ``orm_metrics.json`` (pairwise accuracy before/after) go
  to ``--output_dir``.

Usage:

# CPU, tiny model (a few minutes; builds on `make data` and the optimal SFT recipe)
python recipes/reward_model.py --config recipes/countdown-tiny/reward_model/config_default.yaml

# one stage only
python recipes/reward_model.py --config recipes/countdown-tiny/reward_model/config_default.yaml --stage data

# 4 GPUs, Llama-3.2-1B (the data stage runs on the main process only: run it first, then train)
python recipes/reward_model.py --config recipes/Llama-3.2-1B/reward_model/config_default.yaml --stage data
accelerate launch --config_file accelerate_configs/zero2.yaml --num_processes 4 recipes/reward_model.py \
    --config recipes/Llama-3.2-1B/reward_model/config_default.yaml --stage train

# then best-of-N with the ORM
python recipes/evaluate_decoders.py ... --decoders "best_of_n:n=8,reward_model=models/countdown-tiny/reward-model"

The train stage, rerun, continues an interrupted run from its newest complete checkpoint and leaves a finished one
alone (a finished `--stage all` skips the data stage too); an --output_dir that holds anything else is refused unless
--overwrite_output_dir.

`python recipes/reward_model.py --help` lists every option (RewardModelScriptArguments, trl.RewardConfig,
trl.ModelConfig).
"""

from backtrack_trl.errors import run_recipe
from backtrack_trl.training.reward_model import main


if __name__ == "__main__":
    run_recipe(main)
