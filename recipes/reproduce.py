"""The default study on three training seeds and one report over them: a row per seed, the mean and the spread, the
targets of issue 23 and a plot with the seeds' spread as error bars (`make reproduce` runs the same).

Usage:

```bash
# one study per seed, sequentially (about 3 x the study's time), then results/countdown-tiny-seeds/report/seeds.md
python recipes/reproduce.py --config recipes/countdown-tiny/self_improve/config_default.yaml --seeds 42 43 44

# only the report, over the seed folders already in --output_dir
python recipes/reproduce.py --report_only true
```

`python recipes/reproduce.py --help` lists every option (backtrack_trl.study.reproduce.ReproduceArguments).
"""

from pathlib import Path

from backtrack_trl.errors import USER_ERRORS, recipe_parser, run_recipe
from backtrack_trl.study.reproduce import ReproduceArguments, SeedStudyFailedError, run_seeds


def parse_and_run():
    # --config is the study's YAML here, an option like the others: TrlParser reserves --config for a YAML of the
    # recipe's own options (and refuses a field named config), so its base class (HfArgumentParser) parses it.
    (args,) = recipe_parser((ReproduceArguments,), with_config=False).parse_args_into_dataclasses()
    return run_seeds(args, study_recipe=Path(__file__).resolve().parent / "self_improve.py")


if __name__ == "__main__":
    run_recipe(
        parse_and_run,
        (*USER_ERRORS, SeedStudyFailedError),
        interrupted="interrupted: rerun the same command to resume (finished seeds and stages are skipped).",
    )
