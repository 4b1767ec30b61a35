"""Scoring of decoder outputs: per-problem verdicts of the task's checkers, accuracies with failure reasons, the
oracle, selection rules replayed on the same candidates, the task's diagnosis of the chosen answers, and the markdown
tables of ``results.md``.

Usage:

```python
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.evaluation.scoring import markdown_tables, score_results
from backtrack_trl.tasks import get_task

task = get_task("countdown")
problems = [task.parse_prompt("###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n")]
results = [SearchResult(prompt=task.format_prompt(problems[0]), completion="3+5=8\\n8*2=16\\nGoal Reached!")]
metrics, verdicts = score_results(problems, results, task=task)
assert metrics["accuracy_strict"] == 1.0 and verdicts[0]["correct_strict"]
print(markdown_tables({"test_seen": {"greedy": metrics}}, "my-model", task=task))
```
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.decoding.selection import fallback_index, rescore, select_index
from backtrack_trl.tasks import get_task


def load_task_metric(task, metrics_dir: str | Path | None = "metrics"):
    """The task's ``evaluate`` metric (``<metrics_dir>/<task.metric_name>/``, loaded offline with config "all"
    modes), or None when the task has none or the folder is not there (a non-editable install: the task's checkers
    then give the figures alone)."""
    task = get_task(task)
    if not task.metric_name or metrics_dir is None:
        return None
    folder = Path(metrics_dir) / task.metric_name
    if not (folder / f"{task.metric_name}.py").is_file():
        return None
    import evaluate

    return evaluate.load(str(folder), "both" if len(task.modes) > 1 else task.modes[0])


def score_results(
    problems: list,
    results: list[SearchResult],
    rules=(),
    backtrack_weight: float = 1.0,
    metric=None,
    duplicates: str = "mean",
    task=None,
) -> tuple[dict, list[dict]]:
    """Metrics of one decoder on one split, and the per-problem verdicts (``task``: default Countdown).

    ``metric``: the task's ``evaluate`` metric (:func:`load_task_metric`), which recomputes the accuracies of every
    checker mode from the raw answers (the reference implementation of the reported figures), or None."""
    task = get_task(task or "countdown")
    modes, check = task.modes, task.check
    per_problem = []
    reasons = {mode: Counter() for mode in modes}
    oracle = 0
    replay = dict.fromkeys(rules, 0)
    # Within-problem ranking quality of each score: P(a correct answer outscores a wrong one of the same problem).
    pairs = {"likelihood": [0.0, 0], "backtrack_value": [0.0, 0]}
    for problem, result in zip(problems, results):
        verdicts = {mode: check(problem, result.completion, mode) for mode in modes}
        for mode, verdict in verdicts.items():
            reasons[mode][verdict.reason] += 1
        correct_candidates = [check(problem, c.text, "strict").correct for c in result.candidates]
        any_correct = any(ok and c.reached_goal for ok, c in zip(correct_candidates, result.candidates))
        oracle += any_correct
        if rules:
            answers = [(c, ok) for c, ok in zip(result.candidates, correct_candidates) if c.reached_goal]
            for name, attribute in (("likelihood", "mean_logprob"), ("backtrack_value", "backtrack_value")):
                for right, ok in answers:
                    for wrong, ok_wrong in answers:
                        if ok and not ok_wrong:
                            a, b = getattr(right, attribute), getattr(wrong, attribute)
                            pairs[name][0] += 1.0 if a > b else 0.5 if a == b else 0.0
                            pairs[name][1] += 1
        for rule in rules:
            scores = rescore(result.candidates, rule, duplicates, backtrack_weight)
            index = select_index(result.candidates, scores)
            index = fallback_index(result.candidates) if index is None else index
            replay[rule] += bool(index is not None and correct_candidates[index])
        row = {}
        for mode, verdict in verdicts.items():
            row.update({f"correct_{mode}": verdict.correct, f"reason_{mode}": verdict.reason})
        per_problem.append({**row, "oracle_strict": any_correct})
    count = max(len(problems), 1)
    metrics = {"num_problems": len(problems)}
    metrics.update({f"accuracy_{mode}": reasons[mode]["correct"] / count for mode in modes})
    metrics["oracle_strict"] = oracle / count
    metrics.update({f"reasons_{mode}": {r: reasons[mode][r] / count for r in task.reasons} for mode in modes})
    metrics.update(
        tokens_per_problem=sum(r.tokens_generated for r in results) / count,
        forward_passes_per_problem=sum(r.forward_passes for r in results) / count,
        rollbacks_per_problem=sum(r.rollbacks for r in results) / count,
        seconds_per_problem=sum(r.wall_time for r in results) / count,
    )
    if task.diagnosis_columns:
        metrics["diagnosis"] = task.diagnose(problems, [r.completion for r in results])
    if rules:
        metrics["selection_accuracy_strict"] = {rule: replay[rule] / count for rule in rules}
        metrics["ranking_auc"] = {name: (wins / total if total else None) for name, (wins, total) in pairs.items()}
    if metric is not None and problems:
        # The evaluate metric is the reference implementation of the reported accuracies.
        computed = metric.compute(
            predictions=[r.completion for r in results], references=[task.problem_to_row(p) for p in problems]
        )
        for mode in modes:
            metrics[f"accuracy_{mode}"] = computed[f"{mode}_accuracy"]
    return metrics, per_problem


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def best_decoder(by_decoder: dict) -> str | None:
    """The label of the decoder with the highest strict accuracy (first one on ties)."""
    return max(by_decoder, key=lambda label: by_decoder[label]["accuracy_strict"], default=None)


def limit_line(by_decoder: dict, task=None) -> str:
    """``What limits <best decoder>: ...`` for one split (see :meth:`backtrack_trl.tasks.Task.limiting_factor`)."""
    label = best_decoder(by_decoder)
    if label is None:
        return ""
    m = by_decoder[label]
    diagnosis = m.get("diagnosis", m.get("arithmetic", {}))
    return f"What limits `{label}` (best here): " + get_task(task or "countdown").limiting_factor(
        diagnosis, m["accuracy_strict"], m.get("oracle_strict")
    )


def probe_table(probe: dict) -> list[str]:
    """Markdown lines of the single-fact probe."""
    lines = [
        "",
        f"## Single-step facts a<op>b= (greedy, operands {probe['min_operand']}..{probe['max_operand']}, "
        f"context `{probe['context']}`)",
        "",
        "| Facts | Asked (of) | Right % | + | - | * | / |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, title in (("inside", "in the training steps"), ("held_out", "held out")):
        group = probe[name]
        ops = " | ".join(_pct(group["by_op"][op]) for op in ("+", "-", "*", "/"))
        lines.append(f"| {title} | {group['facts']} ({group['of']}) | {_pct(group['accuracy'])} | {ops} |")
    return lines


def markdown_tables(metrics: dict, model: str, probe: dict | None = None, task=None) -> str:
    """Markdown: one accuracy table per split (with the failure reasons, the task's diagnosis of the chosen answers
    and what limits the best decoder), then the selection-rule table where available, then the fact probe if it
    ran."""
    task = get_task(task or "countdown")
    modes = list(task.modes)
    failures = list(task.reasons[1:])
    lines = [f"# Decoder evaluation: `{model}` ({task.name})", ""]
    lines.append(
        f"Accuracy in % ({' / '.join(f'{mode} checker' for mode in modes)}); oracle = some candidate is strictly "
        "correct. Failure columns: share of problems per strict-checker reason. Time is wall-clock per problem."
        + (f" {task.diagnosis_text}" if task.diagnosis_text else "")
    )
    headers = [f"{mode.capitalize()} %" for mode in modes] + ["Oracle %"]
    headers += [task.reason_labels.get(reason, reason.replace("_", " ")) for reason in failures]
    headers += [header for _, header in task.diagnosis_columns]
    headers += ["Tokens / problem", "Rollbacks / problem", "ms / problem"]
    for split, by_decoder in metrics.items():
        lines += ["", f"## {split}", ""]
        lines.append("| Decoder | " + " | ".join(headers) + " |")
        lines.append("|---|" + "---|" * len(headers))
        for label, m in by_decoder.items():
            r = m["reasons_strict"]
            d = m.get("diagnosis", m.get("arithmetic", {}))
            cells = [_pct(m.get(f"accuracy_{mode}")) for mode in modes] + [_pct(m["oracle_strict"])]
            cells += [_pct(r.get(reason)) for reason in failures]
            cells += [_pct(d.get(key)) for key, _ in task.diagnosis_columns]
            cells += [f"{m['tokens_per_problem']:.0f}", f"{m['rollbacks_per_problem']:.2f}",
                      f"{1000 * m['seconds_per_problem']:.1f}"]  # fmt: skip
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if by_decoder:
            lines += ["", limit_line(by_decoder, task)]
        rescored = {label: m for label, m in by_decoder.items() if "selection_accuracy_strict" in m}
        if rescored:
            rules = list(next(iter(rescored.values()))["selection_accuracy_strict"])
            lines += ["", f"Selection rule replayed on the same candidates ({split}, strict %):", ""]
            lines.append("| Decoder | " + " | ".join(rules) + " | Oracle | AUC likelihood | AUC backtrack value |")
            lines.append("|---|" + "---|" * (len(rules) + 3))
            for label, m in rescored.items():
                cells = " | ".join(f"{100 * m['selection_accuracy_strict'][rule]:.1f}" for rule in rules)
                auc = m.get("ranking_auc", {})
                aucs = " | ".join(
                    "-" if auc.get(name) is None else f"{auc[name]:.2f}" for name in ("likelihood", "backtrack_value")
                )
                lines.append(f"| {label} | {cells} | {100 * m['oracle_strict']:.1f} | {aucs} |")
            lines += [
                "",
                "AUC: over pairs (correct answer, wrong answer) of the same problem, how often the score ranks the "
                "correct one higher (0.5 = no signal).",
            ]
    if probe:
        lines += probe_table(probe)
    return "\n".join(lines) + "\n"
