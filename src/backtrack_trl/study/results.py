"""Read a study folder's evaluation outputs into the plain dicts that :mod:`backtrack_trl.study.report` renders.

Usage:

```python
from backtrack_trl.study.results import collect_decoder_results, collect_round_rows

results = collect_decoder_results("results/countdown-tiny")  # {(model, decoder key): {split: {...}}}
rows = collect_round_rows("results/countdown-tiny", rounds=3, search_spec="self_backtracking:n=32,b=1")
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


# Options that do not change which method a result stands for in Table 1.
_NEUTRAL_OPTIONS = {"max_new_tokens", "batch_size"}


def decoder_key(entry: dict[str, Any], label: str) -> str:
    """Short key of a decoder result (``greedy``, ``beam_16``, ``bon_8``, ``sbt_b1_n32``) or its label."""
    method, options = entry.get("method"), dict(entry.get("options") or {})
    extra = set(options) - _NEUTRAL_OPTIONS - {"n", "b"}
    if method == "greedy" and not extra:
        return "greedy"
    if method == "beam" and not extra and "b" not in options:
        return f"beam_{options.get('n', 16)}"
    if method == "best_of_n" and not extra and "b" not in options:
        return f"bon_{options.get('n', 8)}"
    if method == "best_of_n" and extra == {"reward_model"} and "b" not in options:
        return f"orm_{options.get('n', 8)}"
    if method == "self_backtracking" and not extra:
        return f"sbt_b{options.get('b', 1)}_n{options.get('n', 8)}"
    return label


def _percent(entry: dict[str, Any]) -> dict[str, float]:
    """One decoder's figures in percent: accuracies, oracle, counts, the task's diagnosis (its own keys) and the
    strict failure reasons (``reason_<name>``)."""

    def pct(value):
        return None if value is None else 100.0 * value

    # "arithmetic": the diagnosis key of evaluations written before tasks were plug-ins.
    diagnosis = entry.get("diagnosis") or entry.get("arithmetic") or {}
    reasons = entry.get("reasons_strict") or {}
    return {
        **{key: pct(value) for key, value in diagnosis.items() if isinstance(value, (int, float))},
        **{f"reason_{reason}": pct(share) for reason, share in reasons.items()},
        "strict": 100.0 * entry["accuracy_strict"],
        "official": pct(entry.get("accuracy_official")),
        "oracle": 100.0 * entry["oracle_strict"],
        "n": entry.get("num_problems"),
        "tokens": entry.get("tokens_per_problem"),
        "seconds": entry.get("seconds_per_problem"),
    }


def read_metrics(eval_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{decoder key: {split: {"strict", "official", "oracle", ...}}}`` from ``<eval_dir>/metrics.json``."""
    path = Path(eval_dir) / "metrics.json"
    if not path.is_file():
        return {}
    by_split = json.loads(path.read_text())
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, by_label in by_split.items():
        for label, entry in by_label.items():
            out.setdefault(decoder_key(entry, label), {})[split] = _percent(entry)
    return out


def read_fact_probes(study_dir: str | Path) -> dict[str, dict]:
    """``{model: fact probe}`` for the round-0 models whose evaluation ran the single-fact probe."""
    probes = {}
    for model in ("optimal", "backtrack"):
        path = Path(study_dir) / "eval" / model / "fact_probe.json"
        if path.is_file():
            probes[model] = json.loads(path.read_text())
    return probes


# Evaluation folders of the study (under <study>/eval/) and the model each one's rows belong to in Table 1.
EVAL_FOLDERS = {"optimal": "optimal", "backtrack": "backtrack", "dpo": "dpo", "kto": "kto", "optimal-orm": "optimal",
                "backtrack-synthetic": "backtrack-synthetic", "grpo": "grpo"}  # fmt: skip


def collect_decoder_results(study_dir: str | Path) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """Round-0 results of the optimal-only and backtrack models (and of the DPO / KTO models and the optimal model's
    best-of-N with an outcome reward model, when the study ran them), keyed by (model, decoder key)."""
    results = {}
    for folder, model in EVAL_FOLDERS.items():
        for key, by_split in read_metrics(Path(study_dir) / "eval" / folder).items():
            results[(model, key)] = by_split
    return results


def _round_row(k: int, model: str, metrics: dict, search_key: str, harvest: dict | None) -> dict[str, Any]:
    row: dict[str, Any] = {"round": k, "model": model}
    for prefix, key in (("greedy", "greedy"), ("search", search_key)):
        for split, short in (("test_seen", "seen"), ("test_new", "new")):
            result = metrics.get(key, {}).get(split, {})
            if result.get("strict") is not None:
                row[f"{prefix}_{short}"] = result["strict"]
                row[f"{prefix}_{short}_n"] = result.get("n")
    if harvest:
        row["pool_problems"] = harvest.get("pool_problems")
        row["kept"] = harvest.get("kept")
        row["pool_search_accuracy"] = harvest.get("search_accuracy")
    return row


def collect_round_rows(study_dir: str | Path, rounds: int, search_spec: str) -> list[dict[str, Any]]:
    """One row per round (0 = the backtrack SFT model), plus the control arm when it was run."""
    from backtrack_trl.evaluation import parse_decoder_spec

    study_dir = Path(study_dir)
    _, method, options = parse_decoder_spec(search_spec)
    search_key = decoder_key({"method": method, "options": options}, search_spec)
    corrected = (study_dir / "rounds" / "self_correct" / "harvest.json").is_file()
    name = "backtrack SFT + self-correction" if corrected else "backtrack SFT"
    rows = [_round_row(0, name, read_metrics(study_dir / "eval" / "backtrack"), search_key, None)]
    for k in range(1, rounds + 1):
        rdir = study_dir / "rounds" / f"round_{k}"
        harvest_path, pool_path = rdir / "harvest.json", rdir / "pool.json"  # pool.json: a GRPO round (no harvest)
        if harvest_path.is_file():
            name, info = f"round {k}", json.loads(harvest_path.read_text())
        elif pool_path.is_file():
            name, info = f"round {k} (GRPO)", json.loads(pool_path.read_text())
        else:
            break
        row = _round_row(k, name, read_metrics(rdir / "eval"), search_key, info)
        rows.append({**row, "trainer": info["trainer"]} if info.get("trainer") else row)
    control = study_dir / "rounds" / "control_1"
    if (control / "eval" / "metrics.json").is_file():
        harvest = json.loads((control / "harvest.json").read_text())
        row = _round_row(1, "control: round-0 model + solver paths", read_metrics(control / "eval"), search_key, None)
        row.update(kept=harvest.get("kept"), control=True)
        rows.append(row)
    return rows
