"""The whole study and the self-improvement loop (expert iteration), resumable stage by stage.

Stages, each recorded in ``<output_dir>/state.json`` once all its outputs are written atomically:

1. ``data_backtrack`` / ``data_optimal``: ``recipes/build_dataset.py`` (same questions and test splits);
2. ``init_model``: ``recipes/init_model.py`` (skipped when the SFT recipes start from a pretrained model);
3. ``sft_optimal`` / ``sft_backtrack``: ``accelerate launch recipes/sft.py`` (so GPU users get DeepSpeed);
4. ``eval_optimal`` / ``eval_backtrack``: ``accelerate launch recipes/evaluate_decoders.py`` (Table 1 decoders),
   then the optional DPO / KTO / outcome-reward-model baselines and ``grpo`` / ``eval_grpo`` (``recipes/grpo.py``
   from the round-0 model, :mod:`backtrack_trl.study.stages.grpo`);
5. for every round k = 1..R: ``round_k_search`` (``accelerate launch recipes/harvest.py``: the self-backtracking
   search, sharded over processes, on a pool of TRAINING problems, on the HF model or on vLLM; the paths the strict
   checker accepts become round k's Hub-layout dataset), ``round_k_sft`` (fine-tune round k-1's model
   on it through ``recipes/sft.py``) and ``round_k_eval`` (greedy and search on the held-out test splits);
   after round 1 the control arm (``control_1_data`` / ``_sft`` / ``_eval``); with ``round_trainer: grpo`` a round
   is ``round_k_pool``, ``round_k_grpo`` (GRPO on the pool's prompts) and ``round_k_eval``, with no control arm;
6. ``report``: ``report.md`` with Table 1 (both checkers) and the per-round table, plus PNG plots.

The stages themselves are built in :mod:`backtrack_trl.study.stages`; this module runs them in order: it skips a
finished stage, clears an interrupted one's outputs and runs it again, and records each with its wall time. A killed
run started again with the same command skips the finished stages and redoes the interrupted one from
scratch (training included, so the datasets match an uninterrupted run exactly); asking for more rounds continues
a finished study. A folder created by a different configuration is refused.

Usage (the default CPU study; ``make self-improve`` runs the same):

```bash
python recipes/self_improve.py --config recipes/countdown-tiny/self_improve/config_default.yaml
```
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from backtrack_trl.atomic_io import atomic_write_json
from backtrack_trl.errors import USER_ERRORS, run_recipe
from backtrack_trl.study.checks import check_study
from backtrack_trl.study.commands import StageFailedError
from backtrack_trl.study.config import RESUMABLE_OPTIONS, SelfImproveArguments, study_config
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.study.lock import StudyLockedError, study_lock
from backtrack_trl.study.stages.base import Stage, StudyContext
from backtrack_trl.study.stages.correction import correction_stages
from backtrack_trl.study.stages.grpo import grpo_round_stages, grpo_stages
from backtrack_trl.study.stages.report import study_report
from backtrack_trl.study.stages.rounds import control_stages, round_stages
from backtrack_trl.study.stages.table1 import (
    baseline_stages,
    data_stages,
    init_model_stages,
    sft_stages,
    table1_eval_stages,
)
from backtrack_trl.study.state import StudyState


logger = logging.getLogger(__name__)

#: The study's user errors: one ``error: ...`` line, exit code 1 (the failing recipe's traceback was streamed above);
#: USER_ERRORS holds EmptyHarvestError and the vLLM server's errors (a round's server that does not start).
STUDY_ERRORS = (StageFailedError, *USER_ERRORS, StudyLockedError)
INTERRUPTED = "interrupted: rerun the same command to resume from the last finished stage."
#: Test hook: ``BACKTRACK_TRL_STOP_AFTER=<stage>`` exits right after that stage is recorded (a simulated kill).
STOP_AFTER = "BACKTRACK_TRL_STOP_AFTER"


def study_stages(ctx: StudyContext) -> Iterator[Stage]:
    """Every stage of the study, in order. Lazy: a step's stages are built when the ones before it finished."""
    yield from data_stages(ctx)
    yield from init_model_stages(ctx)
    yield from sft_stages(ctx)
    yield from correction_stages(ctx)
    yield from table1_eval_stages(ctx)
    yield from baseline_stages(ctx)
    yield from grpo_stages(ctx)
    grpo_rounds = ctx.args.round_trainer == "grpo"
    for k in range(1, ctx.args.rounds + 1):
        yield from grpo_round_stages(ctx, k) if grpo_rounds else round_stages(ctx, k)
        if k == 1 and ctx.args.control and not grpo_rounds:  # the control arm replaces round 1's harvested paths
            yield from control_stages(ctx)


def forget_if_config_missing(state: StudyState, stage: Stage) -> None:
    """Redo a finished stage whose round dataset config is gone (e.g. deleted by hand)."""
    from backtrack_trl.data.hub_layout import dataset_configs

    folder, config_name = stage.dataset_config
    if state.is_done(stage.name) and config_name not in dataset_configs(folder):
        logger.warning("%s: the config %s is missing from %s; running the stage again", stage.name, config_name,
                       folder)  # fmt: skip
        state.forget(stage.name)


def run_stage(stage: Stage, state: StudyState, started: float) -> None:
    """Run ``stage`` unless ``state`` records it and its outputs exist; an interrupted stage's outputs are removed
    first (it starts again from scratch); record it with its wall time once all its outputs exist. ``started``:
    the study's start (``time.time()``), for the progress line."""
    if stage.dataset_config is not None:
        forget_if_config_missing(state, stage)
    if state.is_done(stage.name) and all(p.exists() for p in stage.outputs):
        logger.info("[%s] already done, skipping", stage.name)
        return
    for path in stage.outputs:  # an interrupted stage starts again from scratch
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    elapsed = time.time() - started
    print(f"\n=== [{time.strftime('%H:%M:%S')}] stage {stage.name} (study time so far {elapsed:.0f}s) ===", flush=True)
    start = time.time()
    stage.run()
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"Stage {stage.name} finished without writing {missing}.")
    state.mark_done(stage.name, time.time() - start)
    if os.environ.get(STOP_AFTER) == stage.name:  # test hook: simulate a kill after a stage
        raise SystemExit(f"stopping after {stage.name} ({STOP_AFTER})")


class Study:
    """A study folder opened for a run: every check passed, the folder locked (one run at a time) and its
    ``state.json`` opened (a folder made by another configuration is refused). :meth:`run` runs the stages.

    ``recipes_dir`` is the sub-recipes' folder used when ``args.recipes_dir`` is None (see
    :func:`~backtrack_trl.study.commands.find_recipes_dir`).
    """

    def __init__(self, args: SelfImproveArguments, python: str = sys.executable, recipes_dir: Path | None = None):
        self.args = args
        self._lock = None
        recipes = check_study(args, recipes_dir)
        self.layout = StudyLayout.of_study(args)
        config = study_config(args)
        # Checks done, nothing written yet: take the folder (one run at a time), then open its state.
        self._lock = study_lock(self.layout.root)
        lock_fd = self._lock.__enter__()
        try:
            self.state = StudyState.open(
                self.layout.root, config, ignore_keys=RESUMABLE_OPTIONS, overwrite=args.overwrite
            )
        except BaseException:
            self.close()
            raise
        self.started = time.time()
        lock_fds = (lock_fd,) if lock_fd >= 0 else ()
        self.context = StudyContext.from_args(args, recipes, python, lock_fds)

    def close(self) -> None:
        """Release the study folder's lock (the end of :meth:`run`, or an error before it)."""
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    def run(self, stages: Iterable[Stage] | None = None) -> Path:
        """Run ``stages`` (default: :func:`study_stages`), then write the report; return its path."""
        from backtrack_trl.data.hub_layout import recover_hub_dataset

        layout = self.layout
        for folder in (layout.round_datasets(), layout.data_dir("backtrack"), layout.data_dir("optimal")):
            for action in recover_hub_dataset(folder):  # a kill in the middle of a dataset write
                logger.warning("Recovered an interrupted write in %s: %s", folder, action)
        for stage in study_stages(self.context) if stages is None else stages:
            run_stage(stage, self.state, self.started)
        start = time.time()
        seconds = {name: info["seconds"] for name, info in self.state.stages.items() if name != "report"}
        report = study_report(self.context, seconds)
        self.state.mark_done("report", time.time() - start)
        total = sum(info["seconds"] for info in self.state.stages.values())
        atomic_write_json(layout.root / "timings.json", {n: i["seconds"] for n, i in self.state.stages.items()})
        print(f"\nStudy finished: {report} (stage time in total {total:.0f}s)", flush=True)
        print(report.read_text(), flush=True)
        return report


def _run_study(args: SelfImproveArguments, recipes_dir: str | os.PathLike | None) -> Path:
    study = Study(args, recipes_dir=recipes_dir)
    try:
        return study.run()
    finally:
        study.close()


def main(args: SelfImproveArguments, recipes_dir: str | os.PathLike | None = None) -> Path:
    """Run the study of ``args``; ``recipes_dir`` is the sub-recipes' folder when ``args.recipes_dir`` is None
    (``recipes/self_improve.py`` passes its own folder)."""
    from backtrack_trl.logs import setup_logging

    setup_logging()
    # SIGTERM unwinds like Ctrl-C, so the running stage is stopped and the lock released on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # One readable message instead of a traceback: the failing recipe's own traceback was streamed above.
    return run_recipe(lambda: _run_study(args, recipes_dir), STUDY_ERRORS, lead="\n", interrupted=INTERRUPTED)


def _exit_on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)
