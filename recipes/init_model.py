"""Create the initial model and tokenizer (random tiny Llama + task tokenizer, or a pretrained LM + <backtrack>).

Usage:

    python recipes/init_model.py --config recipes/countdown-tiny/init_model.yaml
    python recipes/init_model.py --config recipes/countdown-tiny/init_model.yaml --hidden_size 256 --overwrite
    python recipes/init_model.py --tokenizer meta-llama/Llama-3.2-1B --model_name_or_path meta-llama/Llama-3.2-1B \\
        --output_dir models/Llama-3.2-1B-backtrack
"""

from backtrack_trl.errors import run_options_recipe
from backtrack_trl.training.model_init import InitModelArguments, init_model


if __name__ == "__main__":
    run_options_recipe(InitModelArguments, init_model)
