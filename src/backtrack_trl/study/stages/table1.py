"""The study's stages up to Table 1: datasets, the initial model, the two SFT models, their evaluations and the
optional baselines (DPO / KTO on the backtrack data's pairs, best-of-N selected by an outcome reward model).

Each function returns the stages of one step, in order, built from a
:class:`~backtrack_trl.study.stages.base.StudyContext`.

Usage:

```python
from pathlib import Path

from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.table1 import data_stages, sft_stages

context = StudyContext.from_args(SelfImproveArguments(output_dir="results/demo"), Path("recipes"))
for stage in data_stages(context) + sft_stages(context):
    print(stage.name, stage.outputs)  # data_backtrack (results/demo/data/backtrack,) ...
```
"""

from __future__ import annotations

from pathlib import Path

from backtrack_trl.config_files import read_yaml
from backtrack_trl.study.stages.base import Stage, StudyContext


def data_stages(ctx: StudyContext) -> list[Stage]:
    """``data_backtrack`` / ``data_optimal``: ``recipes/build_dataset.py`` (same questions and test splits)."""
    stages = []
    for kind, cfg in (("backtrack", ctx.args.backtrack_data_config), ("optimal", ctx.args.optimal_data_config)):
        if cfg:
            out = ctx.layout.data_dir(kind)
            overrides = {"output_dir": out, "overwrite": True}
            stages.append(ctx.recipe_stage(f"data_{kind}", "build_dataset.py", cfg, overrides, out))
    return stages


def init_model_stages(ctx: StudyContext) -> list[Stage]:
    """``init_model``: ``recipes/init_model.py`` (none when the SFT recipes start from a pretrained model or
    ``backtrack_model`` replaces the SFT)."""
    if ctx.args.backtrack_model or not ctx.args.init_model_config:
        return []
    out = ctx.layout.model_dir("init")
    overrides = {"output_dir": out, "seed": ctx.args.seed}
    return [ctx.recipe_stage("init_model", "init_model.py", ctx.args.init_model_config, overrides, out)]


def base_model(ctx: StudyContext, kind: str, sft_config: str) -> str:
    """The model the ``kind`` SFT stage starts from: the study's initial model, else the SFT config's own."""
    if ctx.args.init_model_config:
        return str(ctx.layout.model_dir("init"))
    return read_yaml(sft_config, option=f"--{kind}_sft_config")["model_name_or_path"]


def sft_stages(ctx: StudyContext) -> list[Stage]:
    """``sft_optimal`` / ``sft_backtrack``: ``accelerate launch recipes/sft.py`` (so GPU users get DeepSpeed)."""
    a, stages = ctx.args, []
    for kind, cfg in (("optimal", a.optimal_sft_config), ("backtrack", a.backtrack_sft_config)):
        if not cfg or (kind == "optimal" and not a.optimal_data_config):
            continue
        if kind == "backtrack" and a.backtrack_model:
            continue
        out = ctx.layout.model_dir(f"{kind}-sft")
        overrides = {"model_name_or_path": base_model(ctx, kind, cfg), "dataset_name": ctx.layout.data_dir(kind),
                     "output_dir": out, "seed": a.seed}  # fmt: skip
        stages.append(ctx.recipe_stage(f"sft_{kind}", "sft.py", cfg, overrides, out, launch=True))
    return stages


def eval_stage(ctx: StudyContext, model: Path | str, out: Path, name: str, decoders: list[str] | None = None) -> Stage:
    """``accelerate launch recipes/evaluate_decoders.py`` of ``model`` on the backtrack data's test splits (the eval
    config's decoders, or ``decoders``), written to ``out``."""
    overrides = {"model_name_or_path": model, "dataset_name": ctx.layout.data_dir("backtrack"), "output_dir": out,
                 "seed": ctx.args.seed, "task": ctx.args.task}  # fmt: skip
    if decoders:
        overrides["decoders"] = decoders
    return ctx.recipe_stage(name, "evaluate_decoders.py", ctx.args.eval_config, overrides, out, launch=True)


def table1_eval_stages(ctx: StudyContext) -> list[Stage]:
    """``eval_optimal`` / ``eval_backtrack``: the Table 1 decoders on the round-0 models."""
    a, stages = ctx.args, []
    for kind in ("optimal", "backtrack"):
        model = ctx.layout.round_model(0) if kind == "backtrack" else ctx.layout.model_dir("optimal-sft")
        if kind == "optimal" and not (a.optimal_sft_config and a.optimal_data_config):
            continue
        decoders = None
        if kind == "optimal":  # a model that never saw <backtrack> gets the baselines only
            specs = read_yaml(a.eval_config, option="--eval_config").get("decoders") or []
            decoders = [s for s in specs if s.split(":")[0].strip() not in ("self_backtracking", "released")]
        stages.append(eval_stage(ctx, model, ctx.layout.eval_dir(kind), f"eval_{kind}", decoders))
    return stages


def baseline_stages(ctx: StudyContext) -> list[Stage]:
    """The paper's other Table 1 rows, when configured: DPO / KTO on the backtrack data's own pairs (from the
    optimal-SFT model, greedy evaluation) and best-of-N selected by an outcome reward model."""
    a, layout = ctx.args, ctx.layout
    optimal = layout.model_dir("optimal-sft")
    if (a.dpo_config or a.kto_config or a.reward_model_config) and not a.optimal_sft_config:
        raise ValueError("dpo_config / kto_config / reward_model_config start from the optimal-SFT model: set "
                         "optimal_sft_config and optimal_data_config too.")  # fmt: skip
    stages = []
    if a.dpo_config or a.kto_config:
        pairs = layout.data_dir("preference")
        overrides = {"source": layout.data_dir("backtrack"), "output_dir": pairs, "task": a.task, "overwrite": True}
        stages.append(ctx.recipe_stage("data_preference", "build_preference_dataset.py", None, overrides, pairs))
        for method, cfg in (("dpo", a.dpo_config), ("kto", a.kto_config)):
            if not cfg:
                continue
            out = layout.model_dir(method)
            options = {"model_name_or_path": optimal, "dataset_name": pairs, "output_dir": out, "seed": a.seed,
                       "task": a.task}  # fmt: skip
            stages.append(ctx.recipe_stage(method, "preference.py", cfg, options, out, launch=True))
            stages.append(eval_stage(ctx, out, layout.eval_dir(method), f"eval_{method}", ["greedy"]))
    if a.reward_model_config:
        out = layout.model_dir("reward-model")
        options = {"stage": "all", "task": a.task, "policy_model": optimal, "model_name_or_path": optimal,
                   "problems_dataset": layout.data_dir("optimal"), "preference_dataset": layout.data_dir("orm-pairs"),
                   "overwrite_dataset": True, "output_dir": out, "seed": a.seed}  # fmt: skip
        stages.append(ctx.recipe_stage("reward_model", "reward_model.py", a.reward_model_config, options, out))
        specs = [f"best_of_n:n={n},reward_model={out}" for n in a.orm_n]
        stages.append(eval_stage(ctx, optimal, layout.eval_dir("optimal-orm"), "eval_orm", specs))
    return stages
