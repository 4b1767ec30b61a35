"""GRPO in the study: Table 1's "Backtrack SFT + GRPO" rows and GRPO as the round trainer.

- ``grpo`` (``grpo_config``): ``accelerate launch recipes/grpo.py`` from the round-0 model on the backtrack data's
  train prompts into ``models/grpo``, then ``eval_grpo`` (``round_eval_decoders``, as after a round) into
  ``eval/grpo``. Its stage time sits beside the rounds' in the report, with its reward curve.
- ``round_trainer: grpo``: round k is ``round_k_pool`` (the round's slice of train questions, the pool a harvest
  would search, written as the prompt dataset ``rounds/round_<k>/prompts``), ``round_k_grpo``
  (``round_grpo_config`` from round k-1's model into ``rounds/round_<k>/model``) and ``round_k_eval``. No harvest:
  GRPO samples and scores its own completions on the pool.

Usage:

```python
from pathlib import Path

from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.grpo import grpo_round_stages, grpo_stages

args = SelfImproveArguments(output_dir="results/demo", grpo_config="recipes/countdown-tiny/grpo/config_default.yaml",
                            round_trainer="grpo")
context = StudyContext.from_args(args, Path("recipes"))
print([stage.name for stage in grpo_stages(context)])  # grpo, eval_grpo
print([stage.name for stage in grpo_round_stages(context, 1)])  # round_1_pool, round_1_grpo, round_1_eval
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backtrack_trl.atomic_io import atomic_write_json
from backtrack_trl.study.stages.base import Stage, StudyContext
from backtrack_trl.study.stages.rounds import pool_problems
from backtrack_trl.study.stages.table1 import eval_stage


#: The stage of Table 1's GRPO model, and the model / evaluation folder name it writes (models/grpo, eval/grpo).
GRPO_STAGE = "grpo"
#: The file of a GRPO round that records its pool (a harvest round writes harvest.json instead).
POOL_FILE = "pool.json"


def grpo_overrides(ctx: StudyContext, model: Path | str, dataset: Path, output_dir: Path) -> dict[str, Any]:
    """The options the study gives ``recipes/grpo.py`` (the rest comes from the GRPO config)."""
    return {"model_name_or_path": model, "dataset_name": dataset, "output_dir": output_dir, "seed": ctx.args.seed,
            "task": ctx.args.task}  # fmt: skip


def grpo_stages(ctx: StudyContext) -> list[Stage]:
    """``grpo`` and ``eval_grpo`` (none without ``grpo_config``)."""
    a, layout = ctx.args, ctx.layout
    if not a.grpo_config:
        return []
    out = layout.model_dir(GRPO_STAGE)
    overrides = grpo_overrides(ctx, layout.round_model(0), layout.data_dir("backtrack"), out)
    train = ctx.recipe_stage(GRPO_STAGE, "grpo.py", a.grpo_config, overrides, out, launch=True)
    evaluate = eval_stage(ctx, out, layout.eval_dir(GRPO_STAGE), f"eval_{GRPO_STAGE}", a.round_eval_decoders)
    return [train, evaluate]


def write_round_prompts(ctx: StudyContext, k: int) -> None:
    """Round k's pool (the slice of train questions its harvest would search) as a prompt dataset
    ``rounds/round_<k>/prompts`` (the backtrack data's train rows of those questions: ``prompt`` and the problem
    columns, one row per question), plus ``pool.jsonl`` and ``pool.json`` (its counts)."""
    from datasets import Dataset, DatasetDict, load_dataset

    from backtrack_trl.data.hub_layout import write_hub_dataset
    from backtrack_trl.study.harvest import write_pool_file

    a, task, rdir = ctx.args, ctx.task, ctx.layout.round_dir(k)
    pool = pool_problems(ctx.layout, task, a.seed, a.pool_size, k)
    columns = list(task.problem_columns)

    def key(row):
        return tuple(tuple(row[c]) if isinstance(row[c], list) else row[c] for c in columns)

    wanted = {key(problem) for problem in pool}
    train = load_dataset(str(ctx.layout.data_dir("backtrack")), split="train").select_columns(["prompt", *columns])
    rows: dict[tuple, dict] = {}
    for row in train:
        if key(row) in wanted:
            rows.setdefault(key(row), row)
    card = {"source": f"round {k}'s pool of training questions (GRPO prompts)", "questions": len(rows),
            "seed": a.seed, "pool_size": a.pool_size}  # fmt: skip
    dataset = DatasetDict({"train": Dataset.from_list(list(rows.values()))})
    write_hub_dataset(dataset, rdir / "prompts", card, overwrite=True)
    write_pool_file(pool, rdir / "pool.jsonl")
    atomic_write_json(rdir / POOL_FILE, {"pool_problems": len(rows), "trainer": "grpo"})


def grpo_round_stages(ctx: StudyContext, k: int) -> list[Stage]:
    """``round_k_pool``, ``round_k_grpo`` (from round k-1's model) and ``round_k_eval`` (``round_eval_decoders``)."""
    a, layout, rdir = ctx.args, ctx.layout, ctx.layout.round_dir(k)
    pool = Stage(f"round_{k}_pool", lambda: write_round_prompts(ctx, k), (rdir / "prompts", rdir / POOL_FILE))
    overrides = grpo_overrides(ctx, layout.round_model(k - 1), rdir / "prompts", rdir / "model")
    train = ctx.recipe_stage(f"round_{k}_grpo", "grpo.py", a.round_grpo_config, overrides, rdir / "model", True)
    evaluate = eval_stage(ctx, rdir / "model", rdir / "eval", f"round_{k}_eval", a.round_eval_decoders)
    return [pool, train, evaluate]
