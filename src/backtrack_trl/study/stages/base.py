"""What a study stage is: a name (the key in ``state.json`` and the log file), the work, and the outputs that prove
it finished; plus what every stage is built from.

Usage:

```python
from pathlib import Path

from backtrack_trl.study.stages.base import Stage

stage = Stage("hello", lambda: Path("hello.txt").write_text("hi"), (Path("hello.txt"),))
stage.run()
```
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backtrack_trl.study.commands import RecipeLauncher
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.tasks import get_task


@dataclass(frozen=True)
class Stage:
    """One resumable step. ``outputs``: written by ``run`` (removed before it starts again); ``dataset_config``:
    ``(folder, config name)`` of a Hub-layout dataset config the stage writes; a finished stage whose config is
    gone (e.g. deleted by hand) runs again."""

    name: str
    run: Callable[[], object]
    outputs: tuple[Path, ...]
    dataset_config: tuple[Path, str] | None = None


@dataclass(frozen=True)
class StudyContext:
    """What the stages are built from: the options, the folder layout, the task and the sub-recipe launcher."""

    args: SelfImproveArguments
    layout: StudyLayout
    task: object
    recipes: RecipeLauncher

    @classmethod
    def from_args(
        cls, args: SelfImproveArguments, recipes: Path, python: str = sys.executable, lock_fds: tuple[int, ...] = ()
    ) -> StudyContext:
        """The context of the study ``args``, its sub-recipes in ``recipes`` (``lock_fds``: the study's lock)."""
        launcher = RecipeLauncher.from_args(args, recipes, python, lock_fds)
        return cls(args, StudyLayout.of_study(args), get_task(args.task), launcher)

    def recipe_stage(
        self, name: str, script: str, config: str | None, overrides: dict, output: Path, launch: bool = False
    ) -> Stage:
        """The stage that runs one sub-recipe (its log: ``logs/<name>.log``) and writes ``output``."""
        log_file = self.layout.log_file(name)
        return Stage(name, lambda: self.recipes.run(script, config, overrides, log_file, launch), (output,))
