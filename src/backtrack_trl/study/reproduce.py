"""Run one study per training seed, one after another, then write the report over the seeds
(:mod:`backtrack_trl.study.seeds`): ``<output_dir>/seed_<S>/`` per seed, ``<output_dir>/report/seeds.{md,json,png}``.

Each seed's study is ``recipes/self_improve.py --config <config> --seed S --output_dir <output_dir>/seed_S`` in a
subprocess, so a rerun skips the finished seeds and stages (the study is resumable). The seeds run sequentially:
the study's wall times are for 2 quiet cores.

Usage (``make reproduce`` runs the same):

```bash
python recipes/reproduce.py --config recipes/countdown-tiny/self_improve/config_default.yaml --seeds 42 43 44
python recipes/reproduce.py --report_only true  # the report over finished seed folders only
```
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from backtrack_trl.errors import check_file
from backtrack_trl.study.seeds import write_seeds_report


DEFAULT_CONFIG = "recipes/countdown-tiny/self_improve/config_default.yaml"


class SeedStudyFailedError(RuntimeError):
    """A seed's study exited with an error (its own message is in the streamed output above)."""


@dataclass
class ReproduceArguments:
    """Options of ``recipes/reproduce.py``. ``--config`` is the study's YAML (passed to every seed's study), not a
    YAML of these options."""

    config: str = field(default=DEFAULT_CONFIG, metadata={"help": "The study's YAML (recipes/self_improve.py)."})
    seeds: list[int] = field(
        default_factory=lambda: [42, 43, 44], metadata={"help": "Training seeds: one study per seed (--seed S)."}
    )
    output_dir: str = field(
        default="results/countdown-tiny-seeds",
        metadata={
            "help": "Seed S's study goes to <output_dir>/seed_S, the report over the seeds to <output_dir>/report."
        },
    )
    accelerate_config: str | None = field(
        default=None, metadata={"help": "Passed to every study as --accelerate_config (default: the study YAML's)."}
    )
    report_only: bool = field(
        default=False, metadata={"help": "Only write the report, from the seed folders already in output_dir."}
    )

    def __post_init__(self):
        if isinstance(self.accelerate_config, str) and self.accelerate_config.strip().lower() in ("", "none", "null"):
            self.accelerate_config = None
        if not self.seeds:
            raise ValueError("seeds: give at least one training seed, e.g. --seeds 42 43 44.")
        repeated = sorted({seed for seed in self.seeds if self.seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seeds={self.seeds}: seed {repeated[0]} is given twice; list each seed once.")

    def seed_dir(self, seed: int) -> Path:
        return Path(self.output_dir) / f"seed_{seed}"


def study_command(args: ReproduceArguments, seed: int, study_recipe: str | Path) -> list[str]:
    """The command line of seed ``seed``'s study."""
    command = [sys.executable, str(study_recipe), "--config", args.config, "--seed", str(seed)]
    command += ["--output_dir", str(args.seed_dir(seed))]
    return command + (["--accelerate_config", args.accelerate_config] if args.accelerate_config else [])


def run_seeds(args: ReproduceArguments, study_recipe: str | Path = "recipes/self_improve.py") -> Path:
    """Run every seed's study (unless ``args.report_only``), then write the report over the seeds; print where it
    is and the targets' lines; return the markdown's path."""
    folders = [args.seed_dir(seed) for seed in args.seeds]
    if args.report_only:
        missing = [(seed, folder) for seed, folder in zip(args.seeds, folders) if not folder.is_dir()]
        if missing:
            seed, folder = missing[0]
            raise FileNotFoundError(
                f"--report_only true: seed {seed} has no study folder {folder}. Run without --report_only to run its "
                f"study, or leave {seed} out of --seeds."
            )
    else:
        check_file(args.config, "--config", f"give the study's YAML, e.g. {DEFAULT_CONFIG}")
        for index, seed in enumerate(args.seeds, 1):
            command = study_command(args, seed, study_recipe)
            print(f"\n##### seed {seed} ({index} of {len(args.seeds)}): {shlex.join(command)}", flush=True)
            start = time.time()
            code = subprocess.run(command).returncode
            print(f"##### seed {seed}: {(time.time() - start) / 60:.1f} min, exit code {code}", flush=True)
            if code:
                raise SeedStudyFailedError(
                    f"the study of seed {seed} failed (exit code {code}; its error is above). Rerun the same command: "
                    "finished seeds and stages are skipped."
                )
    report = write_seeds_report(folders, Path(args.output_dir) / "report")
    print(f"\nReport over seeds {', '.join(map(str, args.seeds))}: {report}", flush=True)
    for target in json.loads((report.parent / "seeds.json").read_text())["targets"]:
        print(f"  {target['line']}", flush=True)
    return report
