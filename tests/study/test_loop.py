"""End-to-end self-improvement loop on a tiny task and model: rounds, resumption, report, bad input.

Slow (several recipe launches); run by `make test-slow` and CI.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _report_utils import parse_markdown_table
from _study_utils import REPO, run_study, study_configs
from datasets import load_dataset


pytestmark = pytest.mark.slow


def _round_rows(study: Path, k: int, source: str | None = None) -> list[tuple]:
    rows = load_dataset(str(study / "round_datasets"), f"round_{k}", split="train")
    if source:
        rows = rows.filter(lambda row: row["source"] == source)
    return sorted(zip(map(tuple, rows["numbers"]), rows["target"], rows["completion"]))


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    config = study_configs(root / "configs", root / "study")
    proc = run_study(config, root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "study", config, root


def test_rounds_write_datasets_models_and_metrics(full_study):
    study, _, _ = full_study
    state = json.loads((study / "state.json").read_text())["stages"]
    for stage in ("sft_optimal", "sft_backtrack", "self_correct_search", "self_correct_sft",
                  "eval_backtrack-synthetic", "eval_optimal", "eval_backtrack", "round_1_search", "round_1_sft",
                  "round_1_eval", "control_1_sft", "round_2_search", "round_2_sft", "round_2_eval", "report",
                  "data_preference", "dpo", "eval_dpo", "kto", "eval_kto", "reward_model", "eval_orm"):  # fmt: skip
        assert stage in state, stage
    correction = json.loads((study / "rounds" / "self_correct" / "harvest.json").read_text())
    assert correction["kept"] == 0 and correction["mistake_rows"] > 0
    assert correction["replay_rows"] == round(2.0 * correction["mistake_rows"])
    assert (study / "models" / "self-correct" / "config.json").is_file()
    for k in (1, 2):
        harvest = json.loads((study / "rounds" / f"round_{k}" / "harvest.json").read_text())
        rows = _round_rows(study, k, "search")
        assert harvest["pool_problems"] == 30 and harvest["kept"] == len(rows) > 0
        assert all(c.endswith("Goal Reached!") and "<backtrack>" not in c for *_, c in rows)
        mistakes = _round_rows(study, k, "mistake")
        assert len(mistakes) == harvest["mistake_rows"] and all(c.endswith("<backtrack>") for *_, c in mistakes)
        assert len(_round_rows(study, k, "replay")) == harvest["replay_rows"] > 0
        metrics = json.loads((study / "rounds" / f"round_{k}" / "eval" / "metrics.json").read_text())
        assert set(metrics) == {"test_seen", "test_new"} and "greedy" in metrics["test_seen"]
        assert (study / "rounds" / f"round_{k}" / "model" / "config.json").is_file()
    card = (study / "round_datasets" / "README.md").read_text()
    assert "config_name: round_1" in card and "config_name: round_2" in card and "source model" in card


def test_no_test_problem_in_any_round_dataset(full_study):
    study, _, _ = full_study
    data = load_dataset(str(study / "data" / "backtrack"))
    test_keys = {(tuple(sorted(n)), t) for split in ("test_seen", "test_new") for n, t in
                 zip(data[split]["numbers"], data[split]["target"])}  # fmt: skip
    assert test_keys
    for config in ("round_1", "round_2", "control_1"):
        rows = load_dataset(str(study / "round_datasets"), config, split="train")
        keys = {(tuple(sorted(n)), t) for n, t in zip(rows["numbers"], rows["target"])}
        assert keys and not keys & test_keys


def test_report_files_and_tables_parse(full_study):
    study, _, _ = full_study
    report = (study / "report" / "report.md").read_text()
    table1 = parse_markdown_table(report.split("## Table 1")[1])
    methods = [row["Method"] for row in table1]
    assert methods[0] == "SFT on optimal paths + greedy" and "Self-backtracking b=1, N=4" in methods
    # the optional baselines, in the paper's order: optimal-model rows (ORM among them), DPO, KTO, then backtrack
    orm = "SFT on optimal paths + best-of-4 (outcome reward model)"
    assert orm in methods and "SFT on optimal paths + best-of-2 (outcome reward model)" in methods
    dpo, kto = methods.index("DPO on the same pairs + greedy"), methods.index("KTO on the same pairs + greedy")
    assert methods.index(orm) < dpo < kto < methods.index("Backtrack SFT + greedy")
    assert table1[dpo]["Paper 1B seen / new (official)"] == "29.06 / 27.64"
    assert all(row["Seen strict"] != "" for row in table1)
    assert all("[" in row["Seen strict"] for row in table1)  # every accuracy carries its 95% interval
    limits = report.split("## What limits the models")[1]
    arithmetic = parse_markdown_table(limits)
    assert [row["Method"] for row in arithmetic] == methods and " / " in arithmetic[0]["Right last step %"]
    assert "test_seen, best method" in limits and "Single-step facts" in limits
    assert "threads=" in report and "seed=0" in report
    rounds = parse_markdown_table(report.split("## Self-improvement rounds")[1])
    assert [row["Round"] for row in rounds] == ["0", "1", "2", "1"]  # last: the control arm
    assert rounds[3]["Model"].startswith("control")
    for png in ("accuracy_vs_n.png", "rounds.png"):
        assert (study / "report" / png).stat().st_size > 1000


def test_killed_run_resumes_and_matches_uninterrupted(full_study):
    study, _, root = full_study
    config = study_configs(root / "configs_resume", root / "resumed", baseline=False)
    stopped = run_study(config, root, stop_after="round_1_eval")
    assert stopped.returncode != 0 and "stopping after round_1_eval" in stopped.stdout + stopped.stderr
    state = json.loads((root / "resumed" / "state.json").read_text())["stages"]
    assert "round_1_eval" in state and "round_2_search" not in state
    finished = run_study(config, root)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "[round_1_sft] already done" in finished.stdout + finished.stderr
    for k in (1, 2):
        assert _round_rows(root / "resumed", k) == _round_rows(study, k)


def test_other_configuration_in_same_folder_is_refused(full_study):
    _, config, root = full_study
    proc = run_study(config, root, "--pool_size", "31")
    assert proc.returncode == 1
    assert "was created by a different configuration" in proc.stderr and "pool_size: 30 -> 31" in proc.stderr


def test_model_without_backtrack_token_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "a": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>").save_pretrained(
        tmp_path / "plain"
    )
    config = study_configs(tmp_path / "configs", tmp_path / "study", baseline=False)
    proc = run_study(config, tmp_path, "--backtrack_model", str(tmp_path / "plain"))
    assert proc.returncode == 1
    assert "<backtrack>" in proc.stderr and str(tmp_path / "plain") in proc.stderr
    assert not (tmp_path / "study").exists()  # refused before anything is written


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in args and state != "Z":
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to list processes")
def test_kill_9_mid_sft_leaves_no_stage_running_and_a_second_run_is_refused(tmp_path):
    import time

    from backtrack_trl.study.lock import study_lock

    study = tmp_path / "study"
    config = study_configs(tmp_path / "configs", study, baseline=False)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    first = subprocess.Popen(
        [sys.executable, str(REPO / "recipes" / "self_improve.py"), "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        training = []
        while time.monotonic() < deadline and not training and first.poll() is None:
            training = [p for p in _processes_mentioning(str(study)) if p != first.pid]
            training = [p for p in training if "sft.py" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
            time.sleep(0.5)
        assert training, "the SFT stage never started"
        second = run_study(config, tmp_path)
        assert second.returncode == 1 and f"is in use by PID {first.pid}" in second.stderr, second.stderr[-2000:]
        first.kill()  # kill -9: no handler runs in the orchestrator
        first.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _processes_mentioning(str(study)):
            time.sleep(0.2)
        assert _processes_mentioning(str(study)) == [], "stage processes outlived the study"
        with study_lock(study, wait=0):  # the dead run's lock is stale, not held
            pass
    finally:
        first.kill()
