"""The Gradio demo of the self-backtracking search (backtrack_trl.viz.demo): enter a problem or pick a test problem,
choose N, b and the selection rule, and see the search tree, the candidates and the chosen answer with both
checkers' verdicts. Runs on CPU, offline. Needs the demo extra: pip install -e ".[demo]" (make demo installs it).

Usage:

make demo MODEL=results/countdown-tiny/models/backtrack-sft
GRADIO_ANALYTICS_ENABLED=False python recipes/demo.py --model results/countdown-tiny/models/backtrack-sft \
    --data data/countdown-tiny/backtrack --port 7860

`python recipes/demo.py --help` lists every option (backtrack_trl.viz.demo.DemoArguments).
"""

from backtrack_trl.errors import run_options_recipe
from backtrack_trl.viz.demo import DemoArguments, serve  # sets GRADIO_ANALYTICS_ENABLED=False before gradio loads


if __name__ == "__main__":
    run_options_recipe(DemoArguments, serve)
