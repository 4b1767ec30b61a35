"""The self-improvement rounds (expert iteration) and the control arm.

Round k: ``round_k_search`` (``accelerate launch recipes/harvest.py``: the self-backtracking search, sharded over
processes, on a fresh pool of TRAINING problems, on the HF model or on vLLM; the paths the strict checker accepts
become dataset config ``round_k``), ``round_k_sft`` (fine-tune round k-1's model on it) and ``round_k_eval``.
The control arm fine-tunes the round-0 model on the solver's optimal paths for the problems round 1 kept (same
count, same recipe): it tells the gain from the search's own paths apart from more SFT.

Usage:

```python
from pathlib import Path

from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.rounds import harvest_overrides, round_stages

context = StudyContext.from_args(SelfImproveArguments(output_dir="results/demo"), Path("recipes"))
print([stage.name for stage in round_stages(context, 2)])  # round_2_search, round_2_sft, round_2_eval
print(harvest_overrides(context, 2)["search"])  # the harvest's search spec
```
"""

from __future__ import annotations

import contextlib
import random
import shlex
from typing import Any

from backtrack_trl.atomic_io import atomic_write_json
from backtrack_trl.study.layout import StudyLayout
from backtrack_trl.study.stages.base import Stage, StudyContext
from backtrack_trl.study.stages.table1 import eval_stage


def pool_problems(layout: StudyLayout, task, seed: int, pool_size: int, k: int) -> list[dict[str, Any]]:
    """Round k's pool: the k-th slice of a seeded shuffle of the distinct TRAIN questions (never test ones)."""
    from datasets import load_dataset

    columns = list(task.problem_columns)
    train = load_dataset(str(layout.data_dir("backtrack")), split="train").select_columns(columns)
    seen, questions = set(), []
    for row in train:
        key = tuple(tuple(row[c]) if isinstance(row[c], list) else row[c] for c in columns)
        if key not in seen:
            seen.add(key)
            questions.append(key)
    random.Random(seed).shuffle(questions)
    start = ((k - 1) * pool_size) % max(1, len(questions))
    picked = (questions[start:] + questions[:start])[: min(pool_size, len(questions))]
    return [dict(zip(columns, key)) for key in picked]


def mistake_options(ctx: StudyContext) -> dict[str, Any]:
    """The harvest options that add mistake rows of the search and replayed rows of the backtrack data."""
    a = ctx.args
    return {"mistakes_per_problem": a.mistakes_per_problem, "forged_weight": a.forged_weight,
            "replay_dataset": ctx.layout.data_dir("backtrack"), "replay_ratio": a.replay_ratio}  # fmt: skip


def harvest_overrides(ctx: StudyContext, k: int) -> dict[str, Any]:
    """The options of round k's ``recipes/harvest.py`` (the search of round k-1's model on the pool file)."""
    a, rdir = ctx.args, ctx.layout.round_dir(k)
    options = {"n": a.search_n, "b": a.search_b, "temperature": a.search_temperature,
               "batch_size": a.search_batch_size, "max_new_tokens": a.search_max_new_tokens}  # fmt: skip
    if a.search_backend != "hf":
        options["backend"] = a.search_backend
    return {
        **(mistake_options(ctx) if a.round_mistakes else {}),
        "model_name_or_path": ctx.layout.round_model(k - 1),
        "pool_file": rdir / "pool.jsonl",
        "test_dataset_name": ctx.layout.data_dir("backtrack"),
        "output_dir": ctx.layout.round_datasets(),
        "config_name": f"round_{k}",
        "search": "self_backtracking:" + ",".join(f"{key}={value}" for key, value in options.items()),
        "vllm_server_base_url": a.vllm_server_base_url,
        "keep": a.keep,
        "seed": a.seed + 1000 * k,
        "stats_file": rdir / "harvest.json",
        "task": a.task,
        "progress": False,
    }


def launch_harvest(
    ctx: StudyContext, name: str, pool: list[dict[str, Any]], overrides: dict[str, Any], serve: bool = True
) -> None:
    """``accelerate launch recipes/harvest.py`` (the eval accelerate config: the pool is sharded over its
    processes) with ``overrides`` on ``pool``, written to ``<pool_file>``; with ``vllm_serve`` (and ``serve``) under a
    vLLM server started on the searching model. Its log: ``logs/<name>.log``."""
    from backtrack_trl.study.harvest import write_pool_file

    a = ctx.args
    write_pool_file(pool, overrides["pool_file"])
    server = contextlib.nullcontext(overrides.get("vllm_server_base_url"))
    if a.vllm_serve and serve:
        from backtrack_trl.decoding.vllm_launch import launch_vllm_server

        server = launch_vllm_server(
            overrides["model_name_or_path"],
            python=a.vllm_python,
            extra_args=shlex.split(a.vllm_server_args),
            env=dict(item.split("=", 1) for item in a.vllm_server_env),
            log_file=ctx.layout.log_file(name.removesuffix("_search") + "_vllm_server"),  # round_<k>_vllm_server.log
        )
    with server as url:
        overrides = {**overrides, "vllm_server_base_url": url}
        ctx.recipes.run("harvest.py", None, overrides, ctx.layout.log_file(name), launch=True)
    if a.push_to_hub:
        from backtrack_trl.data.hub_layout import push_hub_dataset

        push_hub_dataset(ctx.layout.round_datasets(), a.hub_dataset_id, config_name=overrides["config_name"])


def harvest_round(ctx: StudyContext, k: int) -> None:
    """Round k's harvest: round k-1's model searches the k-th pool (``rounds/round_<k>/pool.jsonl``)."""
    a = ctx.args
    pool = pool_problems(ctx.layout, ctx.task, a.seed, a.pool_size, k)
    launch_harvest(ctx, f"round_{k}_search", pool, harvest_overrides(ctx, k))


def _train_and_evaluate(ctx: StudyContext, name: str, start_model, dataset_config: str, folder) -> list[Stage]:
    """``<name>_sft`` (``round_sft_config`` from ``start_model`` on ``dataset_config`` of the round datasets) and
    ``<name>_eval`` (the round decoders), written under ``folder``."""
    overrides = {"model_name_or_path": start_model, "dataset_name": ctx.layout.round_datasets(),
                 "dataset_config": dataset_config, "output_dir": folder / "model", "seed": ctx.args.seed}  # fmt: skip
    sft = ctx.recipe_stage(f"{name}_sft", "sft.py", ctx.args.round_sft_config, overrides, folder / "model", True)
    evaluate = eval_stage(ctx, folder / "model", folder / "eval", f"{name}_eval", ctx.args.round_eval_decoders)
    return [sft, evaluate]


def round_stages(ctx: StudyContext, k: int) -> list[Stage]:
    """``round_k_search``, ``round_k_sft``, ``round_k_eval``."""
    rdir = ctx.layout.round_dir(k)
    search = Stage(f"round_{k}_search", lambda: harvest_round(ctx, k), (rdir / "harvest.json",),
                   dataset_config=(ctx.layout.round_datasets(), f"round_{k}"))  # fmt: skip
    return [search, *_train_and_evaluate(ctx, f"round_{k}", ctx.layout.round_model(k - 1), f"round_{k}", rdir)]


def control_data(ctx: StudyContext) -> None:
    """Dataset config ``control_1``: round 1's rows with the solver's optimal path in place of every path the search
    kept (its mistake and replayed rows, if any, unchanged)."""
    from datasets import Dataset, DatasetDict, load_dataset

    from backtrack_trl.data.hub_layout import write_hub_dataset

    task, folder = ctx.task, ctx.layout.round_datasets()
    round_1 = load_dataset(str(folder), "round_1", split="train")
    rows, kept = [], 0
    for row in round_1:
        if row.get("source", "search") != "search":
            rows.append(row)
            continue
        problem = task.problem_from_row(row)
        rows.append(
            {**task.optimal_row(problem, task.solve(problem)), **({"source": "solver"} if "source" in row else {})}
        )
        kept += 1
    card = {"source": "exact solver (control arm)", "problems": "those kept by round_1", "rows": len(rows),
            "solver paths": kept}  # fmt: skip
    write_hub_dataset(DatasetDict({"train": Dataset.from_list(rows)}), folder, card, True, config_name="control_1")
    atomic_write_json(ctx.layout.control_dir() / "harvest.json", {"kept": kept, "rows": len(rows)})


def control_stages(ctx: StudyContext) -> list[Stage]:
    """``control_1_data``, ``control_1_sft`` (from the round-0 model), ``control_1_eval``."""
    cdir = ctx.layout.control_dir()
    data = Stage("control_1_data", lambda: control_data(ctx), (cdir / "harvest.json",),
                 dataset_config=(ctx.layout.round_datasets(), "control_1"))  # fmt: skip
    return [data, *_train_and_evaluate(ctx, "control_1", ctx.layout.round_model(0), "control_1", cdir)]
