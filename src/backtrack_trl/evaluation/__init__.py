"""Decoder evaluation: ``specs`` (decoder specs), ``scoring`` (verdicts, metrics, tables), ``run`` (the
orchestration behind ``recipes/evaluate_decoders.py``).

Usage:

```python
from backtrack_trl.evaluation import EvaluationArguments, evaluate_decoders

args = EvaluationArguments(
    model_name_or_path="models/countdown-tiny/backtrack-sft",
    dataset_name="data/countdown-tiny/backtrack",
    decoders=["greedy", "self_backtracking:n=8,b=1"],
    max_problems=50,
    output_dir="results/countdown-tiny/eval-quick",
)
metrics = evaluate_decoders(args)
```
"""

from backtrack_trl.evaluation.run import EvaluationArguments, evaluate_decoders, load_eval_dataset
from backtrack_trl.evaluation.scoring import (
    best_decoder,
    limit_line,
    load_task_metric,
    markdown_tables,
    probe_table,
    score_results,
)
from backtrack_trl.evaluation.specs import (
    DEFAULT_DECODERS,
    RESCORABLE,
    check_decoder_specs,
    parse_decoder_spec,
    spec_file_name,
)


__all__ = [
    "DEFAULT_DECODERS",
    "RESCORABLE",
    "EvaluationArguments",
    "best_decoder",
    "check_decoder_specs",
    "evaluate_decoders",
    "limit_line",
    "load_eval_dataset",
    "load_task_metric",
    "markdown_tables",
    "parse_decoder_spec",
    "probe_table",
    "score_results",
    "spec_file_name",
]
