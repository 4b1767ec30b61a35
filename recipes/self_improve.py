"""Run the whole self-backtracking study: data, tiny model, baseline + backtrack SFT, Table 1 evaluation,
self-improvement rounds and a report (markdown tables + PNG plots). Every stage is resumable.

Usage:

```bash
# the default CPU study (about 17 minutes on 2 quiet cores, 45-55 shared, measured); `make self-improve` runs the same
python recipes/self_improve.py --config recipes/countdown-tiny/self_improve/config_default.yaml

# more rounds continue a finished study; a killed run continues from the last finished stage
python recipes/self_improve.py --config recipes/countdown-tiny/self_improve/config_default.yaml --rounds 5

# GPU node: Llama-3.2-1B with DeepSpeed ZeRO-2 for training, 8 processes for evaluation
python recipes/self_improve.py --config recipes/Llama-3.2-1B/self_improve/config_default.yaml \
    --accelerate_config accelerate_configs/zero2.yaml
```
"""

from pathlib import Path

from backtrack_trl.errors import recipe_parser, run_recipe
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.runner import main


def parse_and_run():
    (args,) = recipe_parser(SelfImproveArguments).parse_args_and_config()
    return main(args, recipes_dir=Path(__file__).resolve().parent)  # the sub-recipes beside this script


if __name__ == "__main__":
    run_recipe(parse_and_run)
