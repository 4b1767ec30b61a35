"""Build the DPO / KTO preference data of a backtrack dataset: the same questions and pairs (configs `pairwise`
and `unpaired` of one Hub-layout folder; the pairing rule is in src/backtrack_trl/data/preference_pairs.py).

Usage:

    python recipes/build_preference_dataset.py --source data/countdown-tiny/backtrack \\
        --output_dir data/countdown-tiny/preference
    python recipes/build_preference_dataset.py --source data/Llama-3.2-1B/backtrack \\
        --output_dir data/Llama-3.2-1B/preference

The folder loads with `datasets.load_dataset(output_dir, "pairwise")` (DPO) or `load_dataset(output_dir,
"unpaired")` (KTO); `python recipes/build_preference_dataset.py --help` lists every option.
"""

from backtrack_trl.data.preference_pairs import PreferenceDataArguments, build_and_save_preference
from backtrack_trl.errors import recipe_parser, run_recipe
from backtrack_trl.logs import setup_logging


def main():
    setup_logging()
    (args,) = recipe_parser((PreferenceDataArguments,)).parse_args_and_config()
    build_and_save_preference(args)


if __name__ == "__main__":
    run_recipe(main)
