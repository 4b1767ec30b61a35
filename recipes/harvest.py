"""One self-improvement harvest: search a pool of problems with a model, keep the paths the strict checker accepts,
write them as a config of a Hub-layout dataset folder. ``accelerate launch`` shards the pool over processes (problem
i is searched with seed + i, so any number of processes writes the same dataset).

Usage:

# one process
python recipes/harvest.py --model_name_or_path results/countdown-tiny/models/backtrack-sft \\
    --dataset_name results/countdown-tiny/data/backtrack --pool_size 200 \\
    --output_dir results/countdown-tiny/harvest --config_name round_1 --search "self_backtracking:n=16,b=1"

# two CPU processes (or one per GPU with accelerate_configs/ddp.yaml)
accelerate launch --config_file accelerate_configs/cpu_ddp.yaml recipes/harvest.py \\
    --model_name_or_path results/countdown-tiny/models/backtrack-sft \\
    --dataset_name results/countdown-tiny/data/backtrack --pool_size 200 \\
    --output_dir results/countdown-tiny/harvest --config_name round_1

# many processes sharing one vLLM server
accelerate launch --config_file accelerate_configs/ddp.yaml recipes/harvest.py ... \\
    --search "self_backtracking:n=16,b=1,backend=vllm" --vllm_server_base_url http://localhost:8000

`python recipes/harvest.py --help` lists every option (backtrack_trl.study.harvest.HarvestArguments).
"""

from backtrack_trl.errors import run_options_recipe
from backtrack_trl.study.harvest import HarvestArguments, run_harvest


if __name__ == "__main__":
    run_options_recipe(HarvestArguments, run_harvest)
