"""The self-correction stage: backtrack rows from the backtrack-SFT model's own mistakes, and the fine-tune on them.

``self_correct_search`` (``accelerate launch recipes/harvest.py``: the backtrack-SFT model samples
``correction_pool_size`` training problems with ``correction_search``; each wrong answer becomes a backtrack row
with the model's own prefix, its first wrong line masked, then ``<backtrack>``; plus ``replay_ratio`` times as many
rows of the backtrack dataset), written as dataset config ``self_correct``; ``self_correct_sft`` (``sft.py`` with
``correction_sft_config`` from the backtrack-SFT model: the round-0 model ``models/self-correct``); and
``eval_backtrack-synthetic`` (``synthetic_eval_decoders`` on the backtrack-SFT model, the Table 1 rows without the
stage).

Usage:

```python
from pathlib import Path

from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.correction import correction_stages

context = StudyContext.from_args(SelfImproveArguments(output_dir="results/demo"), Path("recipes"))
print([stage.name for stage in correction_stages(context)])  # self_correct_search, self_correct_sft, ...
```
"""

from __future__ import annotations

from typing import Any

from backtrack_trl.evaluation.specs import uses_vllm
from backtrack_trl.study.stages.base import Stage, StudyContext
from backtrack_trl.study.stages.rounds import launch_harvest, mistake_options, pool_problems
from backtrack_trl.study.stages.table1 import eval_stage


#: Dataset config (in the study's round datasets) of the self-correction rows.
CORRECTION_CONFIG = "self_correct"
#: Offsets the pool's shuffle from the rounds' pools (a different slice order of the same train questions).
_POOL_SEED_OFFSET = 7919


def correction_overrides(ctx: StudyContext) -> dict[str, Any]:
    """The options of the self-correction ``recipes/harvest.py`` (mistakes only, plus replayed rows)."""
    a, cdir = ctx.args, ctx.layout.correction_dir()
    return {
        **mistake_options(ctx),
        "model_name_or_path": ctx.layout.backtrack_sft_model(),
        "pool_file": cdir / "pool.jsonl",
        "test_dataset_name": ctx.layout.data_dir("backtrack"),
        "output_dir": ctx.layout.round_datasets(),
        "config_name": CORRECTION_CONFIG,
        "search": a.correction_search,
        # Its own search spec says whether it runs on vLLM (the rounds' server may serve another model).
        "vllm_server_base_url": a.vllm_server_base_url if uses_vllm(a.correction_search) else None,
        "keep": "none",
        "seed": a.seed + _POOL_SEED_OFFSET,
        "stats_file": cdir / "harvest.json",
        "task": a.task,
        "progress": False,
    }


def harvest_mistakes(ctx: StudyContext) -> None:
    a = ctx.args
    pool = pool_problems(ctx.layout, ctx.task, a.seed + _POOL_SEED_OFFSET, a.correction_pool_size, 1)
    launch_harvest(ctx, "self_correct_search", pool, correction_overrides(ctx), serve=uses_vllm(a.correction_search))


def correction_stages(ctx: StudyContext) -> list[Stage]:
    """``self_correct_search``, ``self_correct_sft`` and ``eval_backtrack-synthetic`` (none with
    ``correction_pool_size: 0``)."""
    a, layout = ctx.args, ctx.layout
    if not a.correction_pool_size:
        return []
    cdir, out = layout.correction_dir(), layout.model_dir("self-correct")
    search = Stage("self_correct_search", lambda: harvest_mistakes(ctx), (cdir / "harvest.json",),
                   dataset_config=(layout.round_datasets(), CORRECTION_CONFIG))  # fmt: skip
    overrides = {"model_name_or_path": layout.backtrack_sft_model(), "dataset_name": layout.round_datasets(),
                 "dataset_config": CORRECTION_CONFIG, "output_dir": out, "seed": a.seed}  # fmt: skip
    sft = ctx.recipe_stage("self_correct_sft", "sft.py", a.correction_sft_config, overrides, out, launch=True)
    stages = [search, sft]
    if a.synthetic_eval_decoders:
        synthetic = layout.eval_dir("backtrack-synthetic")
        model = layout.backtrack_sft_model()
        stages.append(eval_stage(ctx, model, synthetic, "eval_backtrack-synthetic", a.synthetic_eval_decoders))
    return stages
