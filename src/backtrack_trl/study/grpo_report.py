"""The GRPO part of a study's report: the reward curve (PNG), the first and last logged steps, and the training time
of GRPO beside the rounds' (the issue compares them at comparable training time).

The curve comes from each GRPO run's ``trainer_state.json`` (``log_history``: TRL logs ``reward``, ``reward_std`` and
``frac_reward_zero_std`` every ``logging_steps``): the Table 1 run (``models/grpo``) and, with ``round_trainer:
grpo``, every round's run, one after the other on the step axis (a reward logged every step is drawn faint, with its
10-step moving average). The Table 1 run's strict accuracy before (the round-0 model) and after (the GRPO model) is
drawn as points with 95% Wilson intervals on a second axis.

Usage:

```python
from backtrack_trl.study.grpo_report import grpo_markdown

text = grpo_markdown("results/countdown-tiny", {"grpo": 610.0, "round_1_search": 300.0, "round_1_sft": 90.0},
                     rounds=3, folder="results/countdown-tiny/report")
print(text)  # "## GRPO ..." ("" when the study ran no GRPO), with report/grpo_reward.png
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backtrack_trl.evaluation.intervals import percent_interval
from backtrack_trl.study.report import SPLITS, _fmt, _save_figure
from backtrack_trl.study.results import decoder_key, read_metrics


#: The logged columns of the steps table: (log_history key, header).
STEP_COLUMNS = (("reward", "Reward"), ("reward_std", "Reward std"), ("frac_reward_zero_std", "Groups without spread"),
                ("completions/mean_length", "Completion tokens"))  # fmt: skip
#: The stages that train a round, by round trainer (evaluations excluded: the GRPO row is evaluated too).
ROUND_TRAIN_STAGES = {"sft": ("search", "sft"), "grpo": ("pool", "grpo")}
#: Steps in the moving average drawn over a per-step reward curve.
SMOOTHING = 10


def _key(spec: str | None) -> str | None:
    """The Table 1 key of a decoder spec (``self_backtracking:n=32,b=1`` -> ``sbt_b1_n32``)."""
    if not spec:
        return None
    from backtrack_trl.evaluation import parse_decoder_spec

    _, method, options = parse_decoder_spec(spec)
    return decoder_key({"method": method, "options": options}, spec)


def read_log_history(model_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of ``<model_dir>/trainer_state.json`` that logged a reward (``[]`` without the file)."""
    path = Path(model_dir) / "trainer_state.json"
    if not path.is_file():
        return []
    history = json.loads(path.read_text()).get("log_history") or []
    return [entry for entry in history if entry.get("reward") is not None]


def steps_markdown(history: list[dict[str, Any]], first: int = 3, last: int = 3) -> str:
    """The ``first`` and ``last`` logged steps of a run (all of them when there are no more than ``first + last``)."""
    shown = history if len(history) <= first + last else [*history[:first], None, *history[-last:]]
    columns = [(key, header) for key, header in STEP_COLUMNS if any(key in entry for entry in history)]
    lines = ["| Step | " + " | ".join(header for _, header in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for entry in shown:
        if entry is None:
            lines.append("| ... |" + " |" * len(columns))
            continue
        cells = [_fmt(entry.get(key), 1 if key.startswith("completions/") else 3) for key, _ in columns]
        lines.append(f"| {entry.get('step', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def accuracy_points(before_dir: str | Path, after_dir: str | Path, search_key: str | None) -> dict[str, tuple]:
    """``{label: (before, after)}`` strict accuracy (%) of greedy and ``search_key`` on both test splits; with the
    problem counts, ``{label: ((before, n), (after, n))}``-shaped pairs are accepted by :func:`plot_reward_curve`."""
    before, after = read_metrics(before_dir), read_metrics(after_dir)
    points = {}
    for key in ("greedy", search_key):
        for split in SPLITS:
            entries = [metrics.get(key, {}).get(split, {}) for metrics in (before, after)]
            if key and all(entry.get("strict") is not None for entry in entries):
                label = f"{'greedy' if key == 'greedy' else 'search'}, {split.removeprefix('test_')}"
                points[label] = tuple((entry["strict"], entry.get("n")) for entry in entries)
    return points


def _point(value) -> tuple[float, list[float]]:
    """(accuracy %, [lower, upper] error) of a point given as a percent or as (percent, problems)."""
    percent, n = value if isinstance(value, tuple) else (value, None)
    if not n:
        return percent, [0.0, 0.0]
    low, high = percent_interval(percent, n)
    return percent, [percent - low, high - percent]


def _moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value - (values[index - window] if index >= window else 0.0)
        out.append(total / min(index + 1, window))
    return out


def plot_reward_curve(
    runs: list[tuple[str, list[dict[str, Any]]]], path: str | Path, points: dict[str, tuple] | None = None
) -> None:
    """The mean reward per logged step of each run in ``runs`` (``(label, log history)``; a run labelled ``round
    ...`` continues the previous round's steps) and, on a second axis, ``points``' accuracy before (step 0) and after
    (the first run's last step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    for label, history in runs:
        start = offset if label.startswith("round") else 0
        steps = [start + entry.get("step", i) for i, entry in enumerate(history)]
        rewards = [entry["reward"] for entry in history]
        if len(rewards) > 2 * SMOOTHING:  # a reward every step is noisy: the steps faint, their moving average drawn
            line = ax.plot(steps, rewards, "-", alpha=0.25, linewidth=0.8)[0]
            ax.plot(steps, _moving_average(rewards, SMOOTHING), "-", color=line.get_color(),
                    label=f"{label}: reward ({SMOOTHING}-step mean)")  # fmt: skip
        else:
            ax.plot(steps, rewards, "-", label=f"{label}: reward")
        offset = steps[-1] if steps and label.startswith("round") else offset
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if points and runs and runs[0][1]:
        last = runs[0][1][-1].get("step", len(runs[0][1]))
        right = ax.twinx()
        for (label, (before, after)), marker in zip(points.items(), "osD^"):
            (y0, e0), (y1, e1) = _point(before), _point(after)
            right.errorbar([0, last], [y0, y1], yerr=[[e0[0], e1[0]], [e0[1], e1[1]]], linestyle=":", marker=marker,
                           capsize=3, label=f"{label} (strict %)")  # fmt: skip
        right.set_ylabel("strict % before / after [95% Wilson]")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize=7, loc="best")
    fig.tight_layout()
    _save_figure(fig, path)


def time_markdown(stage_seconds: dict[str, float], rounds: int, round_trainer: str) -> str:
    """The training wall time of the GRPO row (stage ``grpo``) beside the rounds' (each round's stages that train:
    search + SFT, or pool + GRPO), evaluations excluded."""
    lines = ["| Training | Stages | Wall time (s) |", "|---|---|---|"]
    if "grpo" in stage_seconds:
        lines.append(f"| Backtrack SFT + GRPO (Table 1) | grpo | {stage_seconds['grpo']:.0f} |")
    total, done = 0.0, 0
    for k in range(1, rounds + 1):
        stages = [f"round_{k}_{part}" for part in ROUND_TRAIN_STAGES[round_trainer]]
        if not all(stage in stage_seconds for stage in stages):
            break
        seconds = sum(stage_seconds[stage] for stage in stages)
        total, done = total + seconds, k
        lines.append(f"| Round {k} ({round_trainer}) | {' + '.join(stages)} | {seconds:.0f} |")
    if done > 1:
        lines.append(f"| **Rounds 1-{done}** | the rounds above | **{total:.0f}** |")
    return "\n".join(lines) + "\n"


def grpo_markdown(
    study_dir: str | Path,
    stage_seconds: dict[str, float],
    rounds: int,
    folder: str | Path,
    round_trainer: str = "sft",
    search_spec: str | None = None,
) -> str:
    """The report's GRPO section (``""`` when the study ran no GRPO); draws ``<folder>/grpo_reward.png`` with the
    accuracy of greedy and of ``search_spec`` (a decoder spec) before and after the Table 1 run."""
    study_dir = Path(study_dir)
    runs = [("Backtrack SFT + GRPO", read_log_history(study_dir / "models" / "grpo"))]
    if round_trainer == "grpo":
        runs += [(f"round {k}", read_log_history(study_dir / "rounds" / f"round_{k}" / "model")) for k in
                 range(1, rounds + 1)]  # fmt: skip
    runs = [(label, history) for label, history in runs if history]
    if not runs and "grpo" not in stage_seconds and round_trainer != "grpo":
        return ""
    text = "## GRPO (reinforcement learning from the strict checker)\n\n"
    if round_trainer == "grpo":
        text += (
            "Rounds trained with GRPO (`round_trainer: grpo`): each round's model is GRPO of the previous one on the "
            "round's pool of training prompts, so no search harvests the pool (no kept paths, no control arm).\n\n"
        )
    text += "Training time (evaluations excluded):\n\n" + time_markdown(stage_seconds, rounds, round_trainer)
    if not runs:
        return text + "\nNo GRPO run logged a reward (no `trainer_state.json`).\n"
    points = {}
    if runs[0][0] == "Backtrack SFT + GRPO":
        points = accuracy_points(study_dir / "eval" / "backtrack", study_dir / "eval" / "grpo", _key(search_spec))
    Path(folder).mkdir(parents=True, exist_ok=True)
    plot_reward_curve(runs, Path(folder) / "grpo_reward.png", points)
    text += "\n![GRPO reward](grpo_reward.png)\n"
    for label, history in runs:
        text += f"\n{label}: the first and last logged steps (reward: mean over the step's completions)\n\n"
        text += steps_markdown(history)
    return text
