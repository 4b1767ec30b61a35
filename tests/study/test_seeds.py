"""The report over training seeds: three hand-written study folders (in the files the study writes) give exact means,
spreads and target verdicts; a missing folder is one clear error; recipes/reproduce.py --report_only writes it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _report_utils import parse_markdown_table

from backtrack_trl.evaluation.intervals import format_with_interval
from backtrack_trl.study.report import method_label
from backtrack_trl.study.reproduce import ReproduceArguments, study_command
from backtrack_trl.study.seeds import read_seed_study, seed_label, write_seeds_report


REPO = Path(__file__).resolve().parents[2]
SEEDS = (42, 43, 44)
N = 100  # problems per split: accuracies are whole percents
SPECS = {"greedy": ("greedy", {}), "bon_32": ("best_of_n", {"n": 32}),
         "sbt_b0_n32": ("self_backtracking", {"n": 32, "b": 0}),
         "sbt_b1_n32": ("self_backtracking", {"n": 32, "b": 1})}  # fmt: skip
# (seen, new) strict % of seeds 42, 43, 44.
TABLE1 = {
    ("optimal", "greedy"): [(20, 10), (22, 12), (24, 14)],
    ("optimal", "bon_32"): [(30, 20), (30, 21), (33, 22)],
    ("backtrack", "greedy"): [(25, 15), (25, 15), (25, 15)],
    ("backtrack", "sbt_b0_n32"): [(50, 40), (52, 42), (54, 44)],
    ("backtrack", "sbt_b1_n32"): [(56, 46), (58, 48), (60, 50)],
}
# Round k's greedy (seen, new) and search (b=0, N=32) (seen, new), per seed; the control arm's greedy.
ROUNDS = {
    1: [((40, 30), (55, 45)), ((41, 31), (56, 46)), ((42, 32), (57, 47))],
    2: [((55, 44), (60, 50)), ((56, 45), (61, 51)), ((57, 46), (62, 52))],
}
CONTROL = [(40, 30), (41, 31), (42, 32)]


def _entry(decoder: str, strict: float, oracle: float) -> dict:
    """One decoder's entry of metrics.json, as backtrack_trl.evaluation.run writes it."""
    method, options = SPECS[decoder]
    spec = method + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")
    return {"num_problems": N, "accuracy_strict": strict / 100, "accuracy_official": strict / 100,
            "oracle_strict": oracle / 100, "reasons_strict": {"correct": strict / 100},
            "tokens_per_problem": 30.0, "method": method, "options": {**options, "max_new_tokens": 64}, "spec": spec}  # fmt: skip


def _metrics(folder: Path, decoders: dict[str, tuple[float, float]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {split: {} for split in ("test_seen", "test_new")}
    for decoder, pair in decoders.items():
        for split, strict in zip(metrics, pair):
            entry = _entry(decoder, strict, min(100, strict + 20))
            metrics[split][entry["spec"]] = entry
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))


def make_study(root: Path, i: int, table1=TABLE1, control=True, seconds=(600.0, 300.0), provenance=True) -> Path:
    """Seed SEEDS[i]'s finished study folder: Table 1 evaluations, 2 rounds, the control arm, state and timings."""
    seed = SEEDS[i]
    study = root / f"seed_{seed}"
    for model in {model for model, _ in table1}:
        _metrics(study / "eval" / model, {dec: v[i] for (m, dec), v in table1.items() if m == model})
    for k, rows in ROUNDS.items():
        greedy, search = rows[i]
        _metrics(study / "rounds" / f"round_{k}" / "eval", {"greedy": greedy, "sbt_b0_n32": search})
        (study / "rounds" / f"round_{k}" / "harvest.json").write_text(
            json.dumps({"pool_problems": 200, "kept": 90 + k})
        )
    if control:
        _metrics(study / "rounds" / "control_1" / "eval", {"greedy": CONTROL[i], "sbt_b0_n32": ROUNDS[1][i][1]})
        (study / "rounds" / "control_1" / "harvest.json").write_text(json.dumps({"kept": 91}))
    config = {"seed": seed, "rounds": 2, "round_eval_decoders": ["greedy", "self_backtracking:n=32,b=0"]}
    (study / "state.json").write_text(json.dumps({"config_fingerprint": "x", "config": config, "stages": {}}))
    (study / "timings.json").write_text(json.dumps(dict(zip(("sft_backtrack", "round_1_search"), seconds))))
    (study / "report").mkdir(exist_ok=True)
    if provenance:
        record = {"seed": seed, "torch_threads": 2, "revision": f"abc{seed}"}
        (study / "report" / "provenance.json").write_text(json.dumps(record))
    else:  # a report written before provenance.json: the threads are on its settings line
        (study / "report" / "report.md").write_text("# r\n\nSettings: rounds=2, seed=1, threads=OMP_NUM_THREADS=2\n")
    return study


def _row(summary: dict, model: str, decoder: str) -> dict:
    return next(r for r in summary["table1"] if (r["model"], r["decoder"]) == (model, decoder))


def _targets(summary: dict) -> dict:
    return {t["id"]: t for t in summary["targets"]}


def test_means_spreads_and_targets_that_pass(tmp_path):
    table1 = {**TABLE1, ("backtrack-synthetic", "greedy"): [(21, 11), (23, 13), (28, 15)]}  # any model of the study
    folders = [make_study(tmp_path, i, table1, provenance=i != 2) for i in range(3)]
    report = write_seeds_report(folders, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "seeds.json").read_text())
    b1 = _row(summary, "backtrack", "sbt_b1_n32")
    assert b1["mean"] == pytest.approx({"test_seen": 58.0, "test_new": 48.0})
    assert b1["spread"] == pytest.approx({"test_seen": 4.0, "test_new": 4.0})
    assert b1["oracle_mean"] == pytest.approx({"test_seen": 78.0, "test_new": 68.0})
    synthetic = _row(summary, "backtrack-synthetic", "greedy")
    assert synthetic["mean"] == pytest.approx({"test_seen": 24.0, "test_new": 13.0})
    assert synthetic["spread"] == pytest.approx({"test_seen": 7.0, "test_new": 4.0})
    assert synthetic["label"] == method_label(("backtrack-synthetic", "greedy"))
    bon = _row(summary, "optimal", "bon_32")
    assert bon["mean"] == pytest.approx({"test_seen": 31.0, "test_new": 21.0})
    assert bon["spread"] == pytest.approx({"test_seen": 3.0, "test_new": 2.0})
    last = next(r for r in summary["rounds"] if r["round"] == 2 and not r["control"])
    assert last["mean"] == pytest.approx({"greedy_seen": 56.0, "greedy_new": 45.0, "search_seen": 61.0,
                                          "search_new": 51.0})  # fmt: skip
    assert [(r["round"], r["control"]) for r in summary["rounds"]] == [(0, False), (1, False), (2, False), (1, True)]
    assert [s["threads"] for s in summary["seeds"]] == ["2", "2", "OMP_NUM_THREADS=2"]
    assert [s["revision"] for s in summary["seeds"]] == ["abc42", "abc43", None]
    assert [s["study_seconds"] for s in summary["seeds"]] == [900.0] * 3

    targets = _targets(summary)
    assert {tid: t["passed"] for tid, t in targets.items()} == dict.fromkeys(
        ("a", "b", "c", "d.1", "d.2", "d.3", "e"), True
    )
    # (a): 56 - (20 + 25) = 11 is the smallest margin (seed 42 seen; the best-of-32 margins are 16..18).
    assert min(targets["a"]["measured"]) == pytest.approx(11.0)
    assert targets["c"]["measured"] == pytest.approx([6.0, 6.0])
    # (d.1): greedy after round 2 minus (b=1 N=32 - 5): seed 44 new 46 - 45 = 1.
    assert min(targets["d.1"]["measured"]) == pytest.approx(1.0)
    assert min(targets["d.2"]["measured"]) == pytest.approx(4.0)  # 44 - (30 + 10)
    assert min(targets["d.3"]["measured"]) == pytest.approx(8.0)  # seed 44: 62 - 54 (round 0: b=0 N=32)

    text = report.read_text()
    rows = {r["Method"]: r for r in parse_markdown_table(text.split("## Table 1 rows")[1])}
    row = rows["Self-backtracking b=1, N=32"]
    assert row["Seed 43 seen / new"] == f"{format_with_interval(58.0, N)} / {format_with_interval(48.0, N)}"
    assert row["Mean seen / new"] == "58.0 / 48.0" and row["Spread seen / new"] == "4.0 / 4.0"
    assert rows["SFT on optimal paths + greedy"]["Oracle mean seen / new"] == "-"
    assert "(d.3) search after round 2 >= round-0 search (`self_backtracking:n=32,b=0`)" in text
    assert "(a) self-backtracking b=1 N=32 >= optimal greedy + 25" in text and "+11.0 points" in text
    png = (tmp_path / "report" / "seeds.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_targets_that_fail_name_the_seed(tmp_path):
    table1 = {**TABLE1, ("backtrack", "sbt_b1_n32"): [(56, 46), (58, 48), (60, 38)]}
    folders = [
        make_study(tmp_path, i, table1, seconds=(1500.0, 500.0) if i == 1 else (600.0, 300.0)) for i in range(3)
    ]
    write_seeds_report(folders, tmp_path / "report")
    targets = _targets(json.loads((tmp_path / "report" / "seeds.json").read_text()))
    assert targets["a"]["passed"] is False and min(targets["a"]["measured"]) == pytest.approx(-1.0)  # 38 - (14 + 25)
    assert "-1.0 points (greedy: seed 44, test_new): **no**" in targets["a"]["line"]
    assert targets["b"]["passed"] is False and targets["b"]["measured"] == pytest.approx([4.0, 10.0])
    assert targets["c"]["passed"] is True and targets["c"]["measured"] == pytest.approx([6.0, 2.0])
    assert targets["e"]["passed"] is False and "33.3 min (seed 43)" in targets["e"]["line"]
    assert targets["e"]["measured"] == pytest.approx([15.0, 2000 / 60, 15.0])


def test_missing_figures_are_not_measured_and_rows_kept_to_every_seed(tmp_path):
    no_bon = {key: value for key, value in TABLE1.items() if key != ("optimal", "bon_32")}
    folders = [make_study(tmp_path, 0), make_study(tmp_path, 1, no_bon, control=False), make_study(tmp_path, 2)]
    (folders[2] / "timings.json").unlink()
    report = write_seeds_report(folders, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "seeds.json").read_text())
    assert ("optimal", "bon_32") not in {(r["model"], r["decoder"]) for r in summary["table1"]}
    assert not any(r["control"] for r in summary["rounds"])
    targets = _targets(summary)
    for tid in ("a", "d.2"):
        assert targets[tid]["passed"] is None and "not measured (no figure for" in targets[tid]["line"]
    assert "seed 43" in targets["a"]["line"]
    assert targets["e"]["passed"] is None and targets["d.1"]["passed"] is True
    assert "- (e) each seed's study time <= 30 min: not measured" in report.read_text()


def test_labels_name_a_model_table1_does_not_know():
    assert seed_label(("backtrack", "sbt_b1_n32")) == "Self-backtracking b=1, N=32"
    assert seed_label(("optimal", "bon_32")) == "SFT on optimal paths + best-of-32 (likelihood)"
    assert seed_label(("new-model", "sbt_b1_n8")) == "new-model model + self-backtracking b=1, N=8"
    assert seed_label(("new-model", "greedy")) == "new-model model + greedy"


def test_a_missing_seed_folder_is_one_clear_error(tmp_path):
    folders = [make_study(tmp_path, 0), make_study(tmp_path, 1), tmp_path / "seed_44"]
    with pytest.raises(FileNotFoundError, match="seed_44 does not exist"):
        write_seeds_report(folders, tmp_path / "report")
    assert not (tmp_path / "report" / "seeds.md").exists()


def test_reproduce_arguments_and_study_command():
    args = ReproduceArguments(seeds=[7, 8], output_dir="out", accelerate_config="accelerate_configs/cpu.yaml")
    assert study_command(args, 8, "recipes/self_improve.py")[1:] == [
        "recipes/self_improve.py", "--config", "recipes/countdown-tiny/self_improve/config_default.yaml",
        "--seed", "8", "--output_dir", "out/seed_8", "--accelerate_config", "accelerate_configs/cpu.yaml",
    ]  # fmt: skip
    assert "--accelerate_config" not in study_command(ReproduceArguments(accelerate_config="None"), 42, "x")
    with pytest.raises(ValueError, match="seed 8 is given twice"):
        ReproduceArguments(seeds=[8, 7, 8])


def _recipe(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "recipes" / "reproduce.py"), *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_recipe_report_only_writes_the_report_and_prints_the_targets(tmp_path):
    for i in range(3):
        make_study(tmp_path, i)
    done = _recipe("--report_only", "true", "--output_dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'report' / 'seeds.md'}" in done.stdout
    assert "(b) spread (max - min) of self-backtracking b=1 N=32 <= 8 points: 4.0 points" in done.stdout
    assert (tmp_path / "report" / "seeds.png").is_file() and (tmp_path / "report" / "seeds.json").is_file()
    missing = _recipe("--report_only", "true", "--output_dir", str(tmp_path), "--seeds", "42", "45")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"error: --report_only true: seed 45 has no study folder {tmp_path / 'seed_45'}. Run without --report_only "
        "to run its study, or leave 45 out of --seeds."
    ]


def test_threads_and_revisions_are_those_of_the_stages_that_ran(tmp_path):
    """A study resumed with other threads or code says so: the report's own record is only the last process's."""
    study = make_study(tmp_path, 0, TABLE1)
    for where, threads, revision in (("eval/backtrack", 1, "aaa"), ("rounds/round_1/eval", 2, "bbb-dirty")):
        (study / where).mkdir(parents=True, exist_ok=True)
        (study / where / "provenance.json").write_text(json.dumps({"torch_threads": threads, "revision": revision}))
    seed = read_seed_study(study)
    assert (seed.threads, seed.revision) == ("1, 2", "aaa, bbb-dirty")
