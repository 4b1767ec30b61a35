"""The study's last step: ``report/report.md`` (Table 1 with both checkers, the per-round table, the wall time of
every stage, the settings, a provenance line: seed, threads, code revision, versions) and its PNG plots, from the
evaluations the stages wrote; ``report/provenance.json`` holds the same provenance.

Usage:

```python
from pathlib import Path

from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.stages.base import StudyContext
from backtrack_trl.study.stages.report import study_report

context = StudyContext.from_args(SelfImproveArguments(output_dir="results/countdown-tiny"), Path("recipes"))
path = study_report(context, {"data_backtrack": 12.0, "sft_backtrack": 300.0})  # results/countdown-tiny/report
print(path.read_text())
```
"""

from __future__ import annotations

from pathlib import Path

from backtrack_trl.provenance import provenance, provenance_markdown, write_provenance
from backtrack_trl.study.config import thread_setting
from backtrack_trl.study.stages.base import StudyContext


def study_report(ctx: StudyContext, stage_seconds: dict[str, float]) -> Path:
    """Write the report of the study in ``ctx.layout.root``; ``stage_seconds``: the wall time of each stage."""
    from backtrack_trl.study.grpo_report import grpo_markdown
    from backtrack_trl.study.report import write_report
    from backtrack_trl.study.results import collect_decoder_results, collect_round_rows, read_fact_probes

    a, root = ctx.args, ctx.layout.root
    decoder_results = collect_decoder_results(root)
    searches = [spec for spec in a.round_eval_decoders if spec != "greedy"]
    round_rows = collect_round_rows(root, a.rounds, searches[0] if searches else "greedy")
    settings = "Settings: " + ", ".join(
        f"{k}={v}" for k, v in (("rounds", a.rounds), ("pool_size", a.pool_size),
                                ("search", f"b={a.search_b}, N={a.search_n}"), ("keep", a.keep),
                                ("round_trainer", a.round_trainer), ("seed", a.seed),
                                ("threads", thread_setting()))
    )  # fmt: skip
    # The seed, threads, code revision and versions of the process that writes the report (the stages it launched
    # inherit its environment): at the top of report.md and in report/provenance.json.
    info = provenance(seed=a.seed)
    write_provenance(ctx.layout.report_dir(), info=info)
    grpo = grpo_markdown(root, stage_seconds, a.rounds, ctx.layout.report_dir(), a.round_trainer,
                         searches[0] if searches else None)  # fmt: skip
    return write_report(
        ctx.layout.report_dir(),
        decoder_results,
        round_rows,
        stage_seconds,
        provenance_markdown(info) + "\n\n" + settings,
        read_fact_probes(root),
        task=ctx.task,
        study_dir=root,  # the search trees of the backtrack model's evaluation
        sections=grpo,
    )
