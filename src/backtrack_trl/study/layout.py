"""Where a study writes what: the one map of a study folder's layout.

    <output_dir>/state.json, timings.json          the finished stages (backtrack_trl.study.state)
    <output_dir>/data/<kind>/                      datasets (backtrack, optimal, preference, orm-pairs)
    <output_dir>/models/<name>/                    models (init, optimal-sft, backtrack-sft, dpo, kto, reward-model,
                                                   grpo)
    <output_dir>/eval/<name>/                      Table 1 evaluations
    <output_dir>/round_datasets/                   every round's kept paths, one dataset config per round
    <output_dir>/rounds/round_<k>/                 a round's pool, harvest counts, model and evaluation (a GRPO
                                                   round: its pool as a prompt dataset prompts/ and pool.json)
    <output_dir>/rounds/control_1/                 the control arm (round 1's problems, the solver's paths)
    <output_dir>/logs/<stage>.log                  each stage's output
    <output_dir>/report/                           report.md and its plots

Usage:

```python
from backtrack_trl.study.layout import StudyLayout

layout = StudyLayout("results/countdown-tiny")
print(layout.round_model(0), layout.round_model(2), layout.log_file("round_2_sft"))
```
"""

from __future__ import annotations

import os
from pathlib import Path


class StudyLayout:
    """The paths of a study folder. ``backtrack_model``: an already trained backtrack model (instead of the study's
    own backtrack SFT); ``self_correct``: round 0 is that model after the self-correction fine-tune."""

    def __init__(self, root: str | os.PathLike, backtrack_model: str | None = None, self_correct: bool = False):
        self.root = Path(root)
        self.backtrack_model = backtrack_model
        self.self_correct = self_correct

    def data_dir(self, kind: str) -> Path:
        return self.root / "data" / kind

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def eval_dir(self, name: str) -> Path:
        return self.root / "eval" / name

    def round_dir(self, k: int) -> Path:
        return self.root / "rounds" / f"round_{k}"

    def control_dir(self) -> Path:
        return self.root / "rounds" / "control_1"

    @classmethod
    def of_study(cls, args) -> StudyLayout:
        """The layout of the study ``args`` (a :class:`~backtrack_trl.study.config.SelfImproveArguments`)."""
        return cls(args.output_dir, args.backtrack_model, self_correct=args.correction_pool_size > 0)

    def backtrack_sft_model(self) -> Path | str:
        """The backtrack model trained on the dataset's synthetic errors (or ``backtrack_model``)."""
        return self.backtrack_model or self.model_dir("backtrack-sft")

    def round_model(self, k: int) -> Path | str:
        """The model round ``k`` trained (round 0: the self-corrected model, else the backtrack SFT model)."""
        if k == 0:
            return self.model_dir("self-correct") if self.self_correct else self.backtrack_sft_model()
        return self.round_dir(k) / "model"

    def correction_dir(self) -> Path:
        return self.root / "rounds" / "self_correct"

    def round_datasets(self) -> Path:
        return self.root / "round_datasets"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def report_dir(self) -> Path:
        return self.root / "report"
