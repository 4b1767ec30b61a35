"""Evaluate a model folder on the Countdown test splits with a list of decoders (greedy, beam, best-of-N,
self-backtracking, the released-style decoder); writes per-problem generations, metrics.json and results.md.

Usage:

# CPU, one process (the default CPU study; after `make sft`)
accelerate launch --config_file accelerate_configs/cpu.yaml recipes/evaluate_decoders.py \
    --config recipes/countdown-tiny/eval/config_default.yaml

# two processes share the problems (one result set, identical to one process)
accelerate launch --config_file accelerate_configs/cpu_ddp.yaml recipes/evaluate_decoders.py \
    --config recipes/countdown-tiny/eval/config_default.yaml

# override anything, e.g. a quick check with two decoders
python recipes/evaluate_decoders.py --config recipes/countdown-tiny/eval/config_default.yaml \
    --max_problems 50 --decoders greedy self_backtracking:n=32,b=1,selection=combined

`python recipes/evaluate_decoders.py --help` lists every option (backtrack_trl.evaluation.EvaluationArguments).
"""

from backtrack_trl.errors import run_options_recipe
from backtrack_trl.evaluation import EvaluationArguments, evaluate_decoders


if __name__ == "__main__":
    run_options_recipe(EvaluationArguments, evaluate_decoders)
