"""Build a task's SFT dataset (train / test_seen / test_new) in the Hub layout, optionally pushing it.

Usage:

    python recipes/build_dataset.py --config recipes/countdown-tiny/data/config_backtrack.yaml
    python recipes/build_dataset.py --config recipes/countdown-tiny/data/config_optimal.yaml
    python recipes/build_dataset.py --config recipes/sudoku-tiny/data/config_backtrack.yaml
    python recipes/build_dataset.py --config recipes/Llama-3.2-1B/data/config_backtrack.yaml \\
        --push_to_hub --hub_dataset_id your-name/countdown-backtrack
    python recipes/build_dataset.py --task sudoku --help  # the task's generator options

The folder loads with `datasets.load_dataset(output_dir)`; the backtrack and optimal configs with the same seed share
their questions and test splits. `task:` in the YAML (or `--task`) picks the task; its generator options are YAML
keys and flags beside the builder's own.
"""

from backtrack_trl.data.build_config import parse_data_args
from backtrack_trl.data.builder import build_and_save
from backtrack_trl.errors import run_recipe


def main():
    args, config = parse_data_args()
    build_and_save(args, config)


if __name__ == "__main__":
    run_recipe(main)
