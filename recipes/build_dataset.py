"""Build a Countdown SFT dataset (train / test_seen / test_new) in the Hub layout, optionally pushing it.

Usage:

    python recipes/build_dataset.py --config recipes/countdown-tiny/data/config_backtrack.yaml
    python recipes/build_dataset.py --config recipes/countdown-tiny/data/config_optimal.yaml
    python recipes/build_dataset.py --config recipes/Llama-3.2-1B/data/config_backtrack.yaml \\
        --push_to_hub --hub_dataset_id your-name/countdown-backtrack

The folder loads with `datasets.load_dataset(output_dir)`; the backtrack and optimal configs with the same seed share
their questions and test splits.
"""

from trl import TrlParser

from backtrack_trl.cli import run_recipe
from backtrack_trl.data import BuildDatasetArguments, build_and_save


def main():
    parser = TrlParser((BuildDatasetArguments,))
    (args,) = parser.parse_args_and_config()
    build_and_save(args)


if __name__ == "__main__":
    run_recipe(main)
