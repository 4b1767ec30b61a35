"""Draw one self-backtracking search as a tree: a self-contained HTML page and a PNG (backtrack_trl.viz.search_tree).

Usage:

# search a problem with a model folder and draw it (CPU)
python recipes/visualize_search.py --model results/countdown-tiny/models/backtrack-sft --numbers 3 5 2 --target 16 \
    --n 8 --b 1 --output search_tree.html     # also writes search_tree.png

# draw a recorded search: problem 3 of an evaluation's generations file
python recipes/visualize_search.py \
    --generations results/countdown-tiny/eval/backtrack/generations/test_seen/sbt_b1_n32.jsonl --index 3

`python recipes/visualize_search.py --help` lists every option (backtrack_trl.viz.search_tree.VisualizeArguments).
"""

from backtrack_trl.errors import run_options_recipe
from backtrack_trl.viz.search_tree import VisualizeArguments, visualize_search


if __name__ == "__main__":
    run_options_recipe(VisualizeArguments, visualize_search)
