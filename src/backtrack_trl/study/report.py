"""Human-readable results of a study: the paper's Table 1 shape, the per-round table and PNG plots.

Inputs are plain dicts so that any evaluation run can be reported:

- ``decoder_results``: ``{(model, decoder): {split: {"strict": acc, "official": acc, "oracle": acc, ...}}}`` with
  ``model`` in {"optimal", "backtrack"} and accuracies in percent;
- ``round_rows``: one dict per self-improvement round (see :func:`rounds_table`).

Usage:

```python
from backtrack_trl.study.report import table1_markdown

results = {("optimal", "greedy"): {"test_seen": {"strict": 40.0, "official": 41.0},
                                   "test_new": {"strict": 30.0, "official": 31.0}}}
print(table1_markdown(results))
```
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from backtrack_trl.atomic_io import atomic_path, atomic_write_text
from backtrack_trl.evaluation.intervals import format_with_interval, percent_interval
from backtrack_trl.tasks import get_task


METHOD_LABELS = {
    ("optimal", "greedy"): "SFT on optimal paths + greedy",
    ("optimal", "beam_16"): "SFT on optimal paths + beam search (16)",
    ("optimal", "bon_8"): "SFT on optimal paths + best-of-8 (likelihood)",
    ("optimal", "bon_32"): "SFT on optimal paths + best-of-32 (likelihood)",
    ("backtrack", "greedy"): "Backtrack SFT + greedy",
    ("backtrack", "beam_16"): "Backtrack SFT + beam search (16)",
    ("backtrack", "sbt_b0_n8"): "Self-backtracking b=0, N=8",
    ("backtrack", "sbt_b0_n32"): "Self-backtracking b=0, N=32",
    ("backtrack", "sbt_b1_n8"): "Self-backtracking b=1, N=8",
    ("backtrack", "sbt_b1_n32"): "Self-backtracking b=1, N=32",
    ("dpo", "greedy"): "DPO on the same pairs + greedy",
    ("kto", "greedy"): "KTO on the same pairs + greedy",
}

SPLITS = ("test_seen", "test_new")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_KEY_RE = re.compile(r"^(?:(?P<kind>beam|bon|orm)_(?P<n>\d+)|sbt_b(?P<b>\d+)_n(?P<sn>\d+))$")
# Table 1 order of the models: the paper's rows top to bottom.
_MODEL_ORDER = {"optimal": 0, "dpo": 1, "kto": 2, "backtrack-synthetic": 3, "backtrack": 4, "grpo": 5}
_MODEL_BASES = {"backtrack": "Backtrack SFT", "backtrack-synthetic": "Backtrack SFT, synthetic errors only",
                "grpo": "Backtrack SFT + GRPO"}  # fmt: skip


def _label(key: tuple[str, str]) -> str:
    if key in METHOD_LABELS:
        return METHOD_LABELS[key]
    model, decoder = key
    base = _MODEL_BASES.get(model, "SFT on optimal paths")
    match = _KEY_RE.match(decoder)
    if model == "backtrack-synthetic" and match and match["sn"]:
        return f"{base}: self-backtracking b={match['b']}, N={match['sn']}"
    if match and match["sn"]:
        return f"{'Self-backtracking' if model == 'backtrack' else base + ' + self-backtracking'} b={match['b']}, N={match['sn']}"
    if match and match["kind"] == "beam":
        return f"{base} + beam search ({match['n']})"
    if match and match["kind"] == "orm":
        return f"{base} + best-of-{match['n']} (outcome reward model)"
    if match:
        return f"{base} + best-of-{match['n']} (likelihood)"
    return f"{base} + {decoder}"


def _sort_key(key: tuple[str, str]) -> tuple:
    """Paper order: optimal-only model first, then greedy, beam, best-of-N, self-backtracking by (b, N)."""
    model, decoder = key
    match = _KEY_RE.match(decoder)
    if decoder == "greedy":
        rank = (0, 0, 0)
    elif match and match["kind"] == "beam":
        rank = (1, 0, int(match["n"]))
    elif match and match["kind"] == "bon":
        rank = (2, 0, int(match["n"]))
    elif match and match["kind"] == "orm":
        rank = (2, 1, int(match["n"]))
    elif match:
        rank = (3, int(match["b"]), int(match["sn"]))
    else:
        rank = (4, 0, 0)
    return (_MODEL_ORDER.get(model, 6), rank, decoder)


# Public names of the Table 1 label and order, for other reports of the same results (study/seeds.py).
method_label = _label
method_order = _sort_key


def _with_ci(result: dict[str, Any], column: str) -> str:
    """A percentage with its 95% Wilson interval when the result knows its number of problems."""
    return format_with_interval(result.get(column), result.get("n"))


def table1_markdown(decoder_results: dict[tuple[str, str], dict[str, dict[str, float]]], task=None) -> str:
    """Table 1 in the paper's shape: one row per method, strict (with 95% intervals) and official accuracy on both
    test splits, the oracle, and the tokens sampled per problem (the search's cost), beside the task's published
    figures (:attr:`backtrack_trl.tasks.Task.reference_results`) where it has any."""
    reference = get_task(task or "countdown").reference_results
    header = (
        "| Method | Seen strict | New strict | Seen official | New official | Seen oracle | New oracle "
        f"| Tokens / problem | {reference.get('label', 'Published')} |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for key in sorted(decoder_results, key=_sort_key):
        res = decoder_results[key]
        cells = [_with_ci(res.get(s, {}), "strict") for s in SPLITS]
        cells += [_fmt(res.get(s, {}).get(c)) for c in ("official", "oracle") for s in SPLITS]
        tokens = [res.get(s, {}).get("tokens") for s in SPLITS]
        tokens = [t for t in tokens if t is not None]
        cells.append(_fmt(float(sum(tokens) / len(tokens)), 0) if tokens else "-")
        paper = reference.get("table", {}).get(key)
        paper_cell = f"{paper[0]:.2f} / {paper[1]:.2f}" if paper else "-"
        lines.append(f"| {_label(key)} | " + " | ".join(cells) + f" | {paper_cell} |")
    return header + "\n".join(lines) + "\n"


def limits_markdown(
    decoder_results: dict[tuple[str, str], dict[str, dict[str, float]]],
    probes: dict[str, dict] | None = None,
    task=None,
) -> str:
    """What limits the models: the task's diagnosis of the chosen answers (Countdown: their arithmetic) and the
    strict checker's failure reasons per method (seen / new), one line per split naming the limit of the best
    decoder, and the single-fact probe of each model (Countdown)."""
    task = get_task(task or "countdown")
    columns = [(key, header) for key, header in task.diagnosis_columns]
    columns += [(f"reason_{r}", f"{task.reason_labels.get(r, r.replace('_', ' '))} %") for r in task.reasons[1:]]
    header = "| Method | " + " | ".join(h for _, h in columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    lines = []
    for key in sorted(decoder_results, key=_sort_key):
        res = decoder_results[key]
        cells = [" / ".join(_fmt(res.get(s, {}).get(column)) for s in SPLITS) for column, _ in columns]
        lines.append(f"| {_label(key)} | " + " | ".join(cells) + " |")
    text = "Each cell: seen / new test split, over the chosen answers.\n\n" + header + "\n".join(lines) + "\n"
    for split in SPLITS:
        ranked = [(res[split]["strict"], key) for key, res in decoder_results.items() if split in res]
        if not ranked:
            continue
        _, best = max(ranked, key=lambda item: (item[0], -_sort_key(item[1])[0]))
        res = decoder_results[best][split]
        diagnosis = {k: None if res.get(k) is None else res[k] / 100 for k, _ in task.diagnosis_columns}
        oracle = res.get("oracle")
        verdict = task.limiting_factor(diagnosis, res["strict"] / 100, None if oracle is None else oracle / 100)
        text += f"\n- {split}, best method {_label(best)} ({res['strict']:.1f}%): {verdict}."
    if probes:
        text += (
            "\n\nSingle-step facts `a<op>b=` asked greedily (`recipes/evaluate_decoders.py --probe_facts true`), "
            "inside vs held out from the facts of the training solutions:\n\n"
            "| Model | Operands | Inside: right % (asked) | Held out: right % (asked) |\n|---|---|---|---|\n"
        )
        for model, probe in probes.items():
            cells = []
            for group in ("inside", "held_out"):
                accuracy = probe[group]["accuracy"]
                cells.append(f"{_fmt(None if accuracy is None else 100 * accuracy)} ({probe[group]['facts']})")
            text += f"| {model} | {probe['min_operand']}..{probe['max_operand']} | " + " | ".join(cells) + " |\n"
    return text + "\n"


def rounds_table(round_rows: list[dict[str, Any]], task=None) -> str:
    """Per-round table: round, pool size, kept paths, search and greedy accuracy (strict) on both test splits."""
    header = (
        "| Round | Model | Pool problems | Kept paths | Pool search acc. | Greedy seen | Greedy new "
        "| Search seen | Search new | Paper 1B greedy seen / new |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in round_rows:
        k = row["round"]
        published = get_task(task or "countdown").reference_results.get("rounds", {})
        # The paper's rounds are expert iteration: no published figure beside the control arm or a GRPO round.
        has_paper = k < len(published.get("seen", ())) and not row.get("control") and row.get("trainer") != "grpo"
        paper = f"{published['seen'][k]:.1f} / {published['new'][k]:.1f}" if has_paper else "-"
        lines.append(
            f"| {k} | {row.get('model', '-')} | {_fmt(row.get('pool_problems'))} | {_fmt(row.get('kept'))} "
            f"| {_fmt(row.get('pool_search_accuracy'))} | "
            + " | ".join(
                format_with_interval(row.get(key), row.get(f"{key}_n"))
                for key in ("greedy_seen", "greedy_new", "search_seen", "search_new")
            )
            + f" | {paper} |"
        )
    return header + "\n".join(lines) + "\n"


def _error_bar(percent: float | None, n: int | None) -> tuple[float, float]:
    """(below, above) distances of the 95% Wilson interval from ``percent``; zero when n is unknown."""
    if percent is None or not n:
        return 0.0, 0.0
    low, high = percent_interval(percent, n)
    return max(0.0, percent - low), max(0.0, high - percent)


def _errorbar(ax, xs, results: list[dict], style: str, label: str, **kwargs) -> None:
    values = [r.get("strict") if r else None for r in results]
    keep = [i for i, v in enumerate(values) if v is not None]
    if not keep:
        return
    bars = [_error_bar(values[i], results[i].get("n")) for i in keep]
    ax.errorbar(
        [xs[i] for i in keep],
        [values[i] for i in keep],
        yerr=[[b[0] for b in bars], [b[1] for b in bars]],
        fmt=style,
        capsize=3,
        label=label,
        **kwargs,
    )


def plot_accuracy_vs_n(decoder_results: dict[tuple[str, str], dict[str, dict[str, float]]], path: str | Path) -> None:
    """Accuracy (strict) against the number of samples N for b=0, b=1, best-of-N and greedy, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, split in zip(axes, SPLITS):
        series = {
            "self-backtracking b=0": ("backtrack", "sbt_b0_n"),
            "self-backtracking b=1": ("backtrack", "sbt_b1_n"),
            "optimal SFT best-of-N": ("optimal", "bon_"),
            "optimal SFT best-of-N (outcome reward model)": ("optimal", "orm_"),
        }
        for label, (model, prefix) in series.items():
            points = sorted(
                (int(dec[len(prefix) :]), res[split])
                for (m, dec), res in decoder_results.items()
                if m == model and dec.startswith(prefix) and dec[len(prefix) :].isdigit() and split in res
            )
            if points:
                _errorbar(ax, [n for n, _ in points], [r for _, r in points], "-o", label)
        for model, style in (("optimal", "--"), ("backtrack", ":")):
            res = decoder_results.get((model, "greedy"), {}).get(split)
            if res:
                ax.axhline(res["strict"], linestyle=style, color="gray", label=f"{model} SFT greedy")
                below, above = _error_bar(res["strict"], res.get("n"))
                if below or above:
                    ax.axhspan(res["strict"] - below, res["strict"] + above, color="gray", alpha=0.12)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples per expansion)")
        ax.set_title(f"{split} (strict checker)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy % (95% intervals)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_rounds(round_rows: list[dict[str, Any]], path: str | Path) -> None:
    """Greedy and search accuracy (strict) per self-improvement round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    main = [r for r in round_rows if not r.get("control")]
    rounds = [r["round"] for r in main]
    for key, label, style in (
        ("greedy_seen", "greedy, seen targets", "-o"),
        ("greedy_new", "greedy, new targets", "-s"),
        ("search_seen", "search, seen targets", "--o"),
        ("search_new", "search, new targets", "--s"),
    ):
        results = [{"strict": r.get(key), "n": r.get(f"{key}_n")} for r in main]
        _errorbar(ax, rounds, results, style, label)
    for row in round_rows:  # the control arm: same SFT budget on solver paths instead of the search's own
        if row.get("control"):
            for key, marker in (("greedy_seen", "x"), ("greedy_new", "+")):
                if row.get(key) is not None:
                    ax.scatter([row["round"]], [row[key]], marker=marker, color="black", s=60,
                               label=f"control (solver paths), greedy {key.split('_')[1]}")  # fmt: skip
    ax.set_xlabel("self-improvement round")
    ax.set_ylabel("accuracy % (strict, 95% intervals)")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:  # the temporary name ends in .tmp: the format comes from the target's
            fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


def search_generations(eval_dir: str | Path, split: str) -> tuple[str, Path] | None:
    """(label, generations file) of the self-backtracking search with the most rounds, then the most samples, in an
    evaluation folder's ``metrics.json`` (None when it ran no such search or its file is missing)."""
    from backtrack_trl.evaluation.specs import spec_file_name

    path = Path(eval_dir) / "metrics.json"
    if not path.is_file():
        return None
    by_label = json.loads(path.read_text()).get(split, {})
    searches = [
        (entry.get("options", {}).get("b", 1), entry.get("options", {}).get("n", 8), label)
        for label, entry in by_label.items()
        if entry.get("method") == "self_backtracking"
    ]
    for _, _, label in sorted(searches, reverse=True):
        file = Path(eval_dir) / "generations" / split / f"{spec_file_name(label)}.jsonl"
        if file.is_file():
            return label, file
    return None


def search_trees_markdown(eval_dir: str | Path, folder: str | Path, task=None) -> str:
    """Draw a solved and an unsolved problem (strict checker) of each test split, as searched by the self-backtracking
    search of ``eval_dir`` (:func:`search_generations`), into ``folder/trees/`` (PNG + HTML,
    :mod:`backtrack_trl.viz.search_tree`); returns the report's markdown for them ("" when there is no search to draw)."""
    from backtrack_trl.viz.search_tree import load_generation, pick_examples, write_search_view

    lines = []
    for split in SPLITS:
        found = search_generations(eval_dir, split)
        if found is None:
            continue
        label, file = found
        for kind, index in pick_examples(file).items():
            name = f"trees/{split}_{kind}_{index}"
            view = write_search_view(
                load_generation(file, index),
                Path(folder) / f"{name}.html",
                png=Path(folder) / f"{name}.png",
                task=task,
            )
            lines.append(
                f"**{split}, {kind}** (problem {index}, `{label}`): `{view.question}`, {view.result.rollbacks} "
                f"rollback(s); [interactive page]({name}.html)\n\n![{split} {kind}]({name}.png)\n"
            )
    if not lines:
        return ""
    return (
        "## The search, seen as trees\n\n"
        "One solved and one unsolved problem per test split (preferring searches that rolled back). Nodes are steps; "
        "a path from the prompt is a sample, coloured by how it ended: green = goal and strictly correct, orange = "
        "goal but wrong, red = `<backtrack>`, grey = length limit, purple = stopped without the goal; S<id> = an "
        "expanded state, dashed red arcs = rollbacks, blue = the chosen answer (`recipes/visualize_search.py`).\n\n"
        + "\n".join(lines)
        + "\n"
    )


def write_report(
    folder: str | Path,
    decoder_results: dict[tuple[str, str], dict[str, dict[str, float]]],
    round_rows: list[dict[str, Any]],
    stage_seconds: dict[str, float],
    settings_md: str = "",
    probes: dict[str, dict] | None = None,
    task=None,
    study_dir: str | Path | None = None,
    sections: str = "",
) -> Path:
    """Write ``report.md`` (tables + timings) and the two PNG plots into ``folder``; returns the report path.
    ``sections``: more markdown after the per-round table (the GRPO section, :mod:`backtrack_trl.study.grpo_report`).

    ``probes``: the single-fact probe of each model (``{model: run_fact_probe(...)}``), shown with the arithmetic of
    the answers. ``study_dir``: the study folder; its backtrack model's search is drawn as trees
    (:func:`search_trees_markdown`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_accuracy_vs_n(decoder_results, folder / "accuracy_vs_n.png")
    if round_rows:
        plot_rounds(round_rows, folder / "rounds.png")
    total = sum(stage_seconds.values())
    timings = "| Stage | Wall time (s) |\n|---|---|\n" + "".join(
        f"| {name} | {sec:.0f} |\n" for name, sec in stage_seconds.items()
    )
    timings += f"| **total** | **{total:.0f}** |\n"
    task = get_task(task or "countdown")
    published = task.reference_results.get("note", "no published figures for this task")
    trees = search_trees_markdown(Path(study_dir) / "eval" / "backtrack", folder, task) if study_dir else ""
    text = (
        f"# Self-backtracking study report ({task.name})\n\n"
        + (settings_md + "\n\n" if settings_md else "")
        + f"## Table 1 (accuracy %, checkers: {', '.join(task.modes)})\n\n"
        + f"Strict cells: accuracy [95% Wilson interval]. Last column: {published}.\n\n"
        + table1_markdown(decoder_results, task)
        + "\n![accuracy vs N](accuracy_vs_n.png)\n\n"
        + "## What limits the models\n\n"
        + limits_markdown(decoder_results, probes, task)
        + "\n"
        + "## Self-improvement rounds (accuracy %, strict checker)\n\n"
        + (rounds_table(round_rows, task) if round_rows else "No rounds run.\n")
        + ("\n![rounds](rounds.png)\n" if round_rows else "")
        + ("\n" + sections if sections else "")
        + ("\n" + trees if trees else "")
        + "\n## Wall time per stage\n\n"
        + timings
    )
    report = folder / "report.md"
    atomic_write_text(report, text)
    return report
