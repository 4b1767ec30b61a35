"""One report over several finished studies of the same config, one per training seed: Table 1 and the rounds per
seed with the mean and the spread (max - min), the targets of issue 23 computed from them, and a bar plot with the
seeds' spread as error bars (``seeds.md``, ``seeds.json``, ``seeds.png``).

Usage:

```python
from backtrack_trl.study.seeds import write_seeds_report

folders = [f"results/countdown-tiny-seeds/seed_{seed}" for seed in (42, 43, 44)]
report = write_seeds_report(folders, "results/countdown-tiny-seeds/report")  # .../report/seeds.md
print(report.read_text())
```
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backtrack_trl.atomic_io import atomic_write_json, atomic_write_text
from backtrack_trl.evaluation.intervals import format_with_interval
from backtrack_trl.study.report import SPLITS, _save_figure, method_label, method_order
from backtrack_trl.study.results import collect_decoder_results, collect_round_rows


#: The round evaluation's search when a study folder does not record it (the default study config's).
DEFAULT_SEARCH = "self_backtracking:n=32,b=0"
OPT_GREEDY, OPT_BON = ("optimal", "greedy"), ("optimal", "bon_32")
SBT_B0, SBT_B1 = ("backtrack", "sbt_b0_n32"), ("backtrack", "sbt_b1_n32")
HEADLINE = (OPT_GREEDY, OPT_BON, ("backtrack", "greedy"), SBT_B0, SBT_B1)
STUDY_MINUTES = 30


@dataclass
class SeedStudy:
    """What one finished study folder holds: its seed, threads, revision, stage time and results."""

    folder: Path
    seed: Any
    threads: str | None
    revision: str | None
    seconds: float | None
    search_spec: str
    results: dict
    rounds: list[dict]

    def strict(self, key: tuple[str, str], split: str) -> float | None:
        return self.results.get(key, {}).get(split, {}).get("strict")

    def round_row(self, k: int, control: bool = False) -> dict:
        return next((r for r in self.rounds if r["round"] == k and bool(r.get("control")) == control), {})


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _joined(values: list) -> str | None:
    """The distinct values, sorted, as ``"1, 2"`` (a study resumed with other threads or code says so); None if none."""
    distinct = sorted({str(v) for v in values if v is not None})
    return ", ".join(distinct) or None


def read_seed_study(folder: str | Path) -> SeedStudy:
    """Read a finished study folder (``state.json``, ``timings.json``, the stages' ``provenance.json``: threads and
    revisions are those of the stages that ran, every distinct value listed; else ``report/provenance.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Study folder {folder} does not exist: run the study of that seed first.")
    state, provenance = _json(folder / "state.json"), _json(folder / "report" / "provenance.json")
    config = state.get("config", {})
    searches = [spec for spec in config.get("round_eval_decoders") or [DEFAULT_SEARCH] if spec != "greedy"]
    timings = _json(folder / "timings.json") or {n: i.get("seconds", 0) for n, i in state.get("stages", {}).items()}
    # The stages' own records say what ran (the report's record is only the process that wrote the report).
    stages = [_json(p) for p in folder.glob("*/**/provenance.json") if p.parent.name != "report"]
    threads = _joined([info.get("torch_threads") for info in stages]) or provenance.get("torch_threads")
    revision = _joined([info.get("revision") for info in stages]) or provenance.get("revision")
    report = folder / "report" / "report.md"
    if threads is None and report.is_file():  # reports written before provenance.json: the settings line
        match = re.search(r"threads=(.+)$", report.read_text(), re.M)
        threads = match and match.group(1).strip()
    rounds = config.get("rounds", len(list(folder.glob("rounds/round_*"))))
    return SeedStudy(
        folder=folder,
        seed=next((v for v in (provenance.get("seed"), config.get("seed")) if v is not None), folder.name),
        threads=None if threads is None else str(threads),
        revision=None if revision is None else str(revision),
        seconds=float(sum(timings.values())) if timings else None,
        search_spec=searches[0] if searches else "greedy",
        results=collect_decoder_results(folder),
        rounds=collect_round_rows(folder, rounds, searches[0] if searches else "greedy"),
    )


def seed_label(key: tuple[str, str]) -> str:
    """Table 1's label; a model Table 1 does not name (its label falls back to the optimal model's) is named."""
    label = method_label(key)
    if key[0] != "optimal" and label == method_label(("optimal", key[1])):
        return label.replace("SFT on optimal paths", f"{key[0]} model", 1)
    return label


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, max - min) of the seeds' values; (None, None) when a seed has none."""
    if not values or any(v is None for v in values):
        return None, None
    return sum(values) / len(values), max(values) - min(values)


def _aggregate(per_seed: list[dict], fields: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """``{"per_seed", "mean": {field: ...}, "spread": {...}}`` with fields named by their (split or row) keys."""
    out = {"per_seed": per_seed, "mean": {}, "spread": {}}
    for name, (outer, inner) in fields.items():
        values = [cell.get(outer, {}).get(inner) if outer else cell.get(inner) for cell in per_seed]
        out["mean"][name], out["spread"][name] = _stats(values)
    return out


def _last_round(studies: list[SeedStudy]) -> int:
    return min(max((r["round"] for r in s.rounds if not r.get("control")), default=0) for s in studies)


def _margins(studies: list[SeedStudy], margin, tag: str = "") -> list[tuple[float | None, str]]:
    """``margin(study, split)`` for every seed and split, each with where it is."""
    return [(margin(s, split), f"{tag}seed {s.seed}, {split}") for s in studies for split in SPLITS]


def _diff(a: float | None, b: float | None, offset: float = 0.0) -> float | None:
    return None if a is None or b is None else a - b - offset


def _target(tid: str, text: str, values: list, passes=lambda v: v >= 0, each: bool = False, unit: str = "points"):
    """A target's verdict: every value must pass; the line shows the smallest margin (``each``: every value)."""
    missing = [where for value, where in values if value is None]
    if missing or not values:
        line = f"({tid}) {text}: not measured (no figure for {'; '.join(missing[:3]) or 'any seed'})"
        return {"id": tid, "text": text, "measured": None, "passed": None, "line": line}
    passed = all(passes(value) for value, _ in values)
    if each:
        shown = ", ".join(f"{value:.1f} {unit} ({where})" for value, where in values)
    else:
        shown = "minimum margin {:+.1f} {} ({})".format(min(values)[0], unit, min(values)[1])
    line = f"({tid}) {text}: {shown}: **{'yes' if passed else 'no'}**"
    return {"id": tid, "text": text, "measured": [v for v, _ in values], "passed": passed, "line": line}


def targets(studies: list[SeedStudy]) -> list[dict[str, Any]]:
    """The measurable targets of issue 23, each with its figure and verdict (None: not measured)."""
    last, spec = _last_round(studies), studies[0].search_spec

    def row(s: SeedStudy, split: str, k: int, column: str, control: bool = False) -> float | None:
        return s.round_row(k, control).get(f"{column}_{split.removeprefix('test_')}")

    def mean(key: tuple[str, str], split: str) -> float | None:
        return _stats([s.strict(key, split) for s in studies])[0]

    def after(column: str, minus):  # the last round's figure minus another, per seed and split
        if not last:
            return [(None, "a round that every seed finished")]
        return _margins(studies, lambda s, sp: _diff(row(s, sp, last, column), *minus(s, sp)))

    best = _margins(studies, lambda s, sp: _diff(s.strict(SBT_B1, sp), s.strict(OPT_GREEDY, sp), 25), "greedy: ")
    best += _margins(studies, lambda s, sp: _diff(s.strict(SBT_B1, sp), s.strict(OPT_BON, sp), 10), "best-of-32: ")
    gain = [(_diff(mean(SBT_B1, sp), mean(SBT_B0, sp)), sp) for sp in SPLITS]
    spread = [(_stats([s.strict(SBT_B1, sp) for s in studies])[1], sp) for sp in SPLITS]
    minutes = [(None if s.seconds is None else s.seconds / 60, f"seed {s.seed}") for s in studies]
    return [
        _target("a", "self-backtracking b=1 N=32 >= optimal greedy + 25 and >= optimal best-of-32 + 10", best),
        _target("b", "spread (max - min) of self-backtracking b=1 N=32 <= 8 points", spread, lambda v: v <= 8, True),
        _target("c", "mean over seeds of b=1 N=32 minus b=0 N=32 > 0", gain, lambda v: v > 0, True),
        _target("d.1", f"greedy after round {last} >= self-backtracking b=1 N=32 (Table 1) - 5",
                after("greedy", lambda s, sp: (s.strict(SBT_B1, sp), -5))),
        _target("d.2", f"greedy after round {last} >= control arm greedy + 10",
                after("greedy", lambda s, sp: (row(s, sp, 1, "greedy", True), 10))),
        _target("d.3", f"search after round {last} >= round-0 search (`{spec}`)",
                after("search", lambda s, sp: (row(s, sp, 0, "search"),))),
        _target("e", f"each seed's study time <= {STUDY_MINUTES} min", minutes, lambda v: v <= STUDY_MINUTES, True,
                "min"),
    ]  # fmt: skip


def summarize(studies: list[SeedStudy]) -> dict[str, Any]:
    """The ``seeds.json`` payload: the seeds, Table 1 rows and round rows present in every seed (per seed, mean,
    spread), the headline bars of the plot and the targets."""
    splits = {split: (split, "strict") for split in SPLITS}
    common = set.intersection(*(set(s.results) for s in studies))
    table1 = []
    for key in sorted(common, key=method_order):
        row = _aggregate([s.results[key] for s in studies], splits)
        oracle = _aggregate([s.results[key] for s in studies], {sp: (sp, "oracle") for sp in SPLITS})["mean"]
        table1.append({"model": key[0], "decoder": key[1], "label": seed_label(key), **row, "oracle_mean": oracle})
    rounds = []
    for k, control in [(r["round"], bool(r.get("control"))) for r in studies[0].rounds]:
        cells = [s.round_row(k, control) for s in studies]
        if all(cells):
            fields = {f"{p}_{sp}": ("", f"{p}_{sp}") for p in ("greedy", "search") for sp in ("seen", "new")}
            name = "control arm" if control else f"round {k}"
            rounds.append({"round": k, "control": control, "name": name, **_aggregate(cells, fields)})
    last = _last_round(studies)
    headline = [(seed_label(key), [{sp: s.strict(key, sp) for sp in SPLITS} for s in studies]) for key in HEADLINE]
    for name, k, control in ((f"greedy after round {last}", last, False), ("control arm greedy", 1, True)):
        if k:
            cells = [s.round_row(k, control) for s in studies]
            headline.append((name, [{sp: c.get(f"greedy_{sp[5:]}") for sp in SPLITS} for c in cells]))
    seeds = [{"seed": s.seed, "folder": str(s.folder), "threads": s.threads, "revision": s.revision,
              "study_seconds": s.seconds, "round_search": s.search_spec} for s in studies]  # fmt: skip
    return {
        "seeds": seeds,
        "table1": table1,
        "rounds": rounds,
        "headline": [{"label": label, "per_seed": cells} for label, cells in headline],
        "targets": targets(studies),
    }


def _pair(cell: dict, first: str, second: str, with_n: bool = False) -> str:
    """``"a / b"``: two figures of ``cell``, with 95% intervals when ``with_n`` (their counts: ``<key>_n``)."""
    return " / ".join(format_with_interval(cell.get(k), with_n and cell.get(f"{k}_n")) for k in (first, second))


def seeds_markdown(summary: dict[str, Any]) -> str:
    """``seeds.md``: the seeds' settings, Table 1 and the rounds per seed with mean and spread, the targets."""
    seeds = [str(s["seed"]) for s in summary["seeds"]]
    lines = [f"# Self-backtracking study over {len(seeds)} training seeds ({', '.join(seeds)})", "",
             "| Seed | Folder | Threads | Revision | Study time (min, sum of stages) |", "|---|---|---|---|---|"]  # fmt: skip
    for s in summary["seeds"]:
        minutes = "-" if s["study_seconds"] is None else f"{s['study_seconds'] / 60:.1f}"
        lines.append(f"| {s['seed']} | {s['folder']} | {s['threads'] or '-'} | {s['revision'] or '-'} | {minutes} |")
    per_seed = " | ".join(f"Seed {seed} seen / new" for seed in seeds)
    lines += ["", "## Table 1 rows (strict accuracy %)", "",
              "Per seed: accuracy [95% Wilson interval]; rows present in every seed. Spread = max - min over seeds; "
              "oracle = the mean share of problems with a correct candidate (self-backtracking rows).", "",
              f"| Method | {per_seed} | Mean seen / new | Spread seen / new | Oracle mean seen / new |",
              "|---|" + "---|" * (len(seeds) + 3)]  # fmt: skip
    for row in summary["table1"]:
        cells = [" / ".join(format_with_interval(*(c.get(sp, {}).get(k) for k in ("strict", "n"))) for sp in SPLITS)
                 for c in row["per_seed"]]  # fmt: skip
        oracle = _pair(row["oracle_mean"], *SPLITS) if row["decoder"].startswith("sbt_") else "-"
        cells += [_pair(row["mean"], *SPLITS), _pair(row["spread"], *SPLITS), oracle]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    spec = summary["seeds"][0]["round_search"]
    lines += ["", "## Rounds (strict accuracy %)", "", f"Search: `{spec}`. Per seed: seen / new.", "",
              f"| Round | Decoder | {per_seed} | Mean seen / new | Spread seen / new |",
              "|---|---|" + "---|" * (len(seeds) + 2)]  # fmt: skip
    for row in summary["rounds"]:
        for prefix in ("greedy", "search"):
            a, b = f"{prefix}_seen", f"{prefix}_new"
            cells = [_pair(c, a, b, with_n=True) for c in row["per_seed"]]
            cells += [_pair(row["mean"], a, b), _pair(row["spread"], a, b)]
            lines.append(f"| {row['name']} | {prefix} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets of issue 23", "", "Margins: the smallest over seeds and splits (and where it is).", ""]
    lines += [f"- {t['line']}" for t in summary["targets"]]
    return "\n".join(lines) + "\n\n![seeds](seeds.png)\n"


def plot_seeds(summary: dict[str, Any], path: str | Path) -> None:
    """Grouped bars of the headline rows: the mean over seeds, the seeds' min..max as error bars, a dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, split in zip(axes, SPLITS):
        names, x = [], 0
        for index, bar in enumerate(summary["headline"]):
            values = [c.get(split) for c in bar["per_seed"] if c.get(split) is not None]
            if not values:
                continue
            mean = sum(values) / len(values)  # Table 1 rows blue, the rounds orange
            ax.bar(x, mean, color="C0" if index < len(HEADLINE) else "C1", alpha=0.7)
            ax.errorbar(x, mean, yerr=[[mean - min(values)], [max(values) - mean]], color="black", capsize=4)
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
            names.append(bar["label"])
            x += 1
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{split} (strict; bar = mean, error bar = min..max over seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy %")
    fig.tight_layout()
    _save_figure(fig, path)


def write_seeds_report(study_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Read every study folder (one per seed), write ``seeds.md``, ``seeds.json`` and ``seeds.png`` into
    ``out_dir``; return the markdown's path. A missing folder is one error naming it."""
    if not study_dirs:
        raise ValueError("No study folders given: pass one finished study folder per seed.")
    studies = [read_seed_study(folder) for folder in study_dirs]
    summary = summarize(studies)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_seeds(summary, out_dir / "seeds.png")
    atomic_write_json(out_dir / "seeds.json", summary)
    atomic_write_text(out_dir / "seeds.md", seeds_markdown(summary))
    return out_dir / "seeds.md"
