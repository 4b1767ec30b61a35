"""The whole study on the second built-in task: a tiny Sudoku study runs every stage through the task plug-in and
reports with Sudoku's own failure reasons.

Slow (several recipe launches); run by `make test-slow` and CI.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _report_utils import parse_markdown_table
from datasets import load_dataset

from backtrack_trl.tasks import get_task


REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

DATA = {"task": "sudoku", "mode": "backtrack", "num_train_questions": 300, "num_test": 4, "size": 4, "min_givens": 13,
        "max_givens": 15, "seed": 3, "num_proc": 1}  # fmt: skip
INIT = {"tokenizer": "sudoku", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 128, "seed": 0}  # fmt: skip
SFT = {"task": "sudoku", "use_cpu": True, "bf16": False, "activation_checkpointing": False, "learning_rate": 3.0e-3,
       "lr_scheduler_type": "constant", "max_steps": 300, "per_device_train_batch_size": 32, "max_length": 96,
       "eval_strategy": "no", "logging_steps": 20, "save_strategy": "no", "report_to": "none", "seed": 0}  # fmt: skip
EVAL = {"task": "sudoku", "splits": ["test_seen", "test_new"], "max_problems": 4, "max_new_tokens": 48, "seed": 0,
        "decoders": ["greedy", "best_of_n:n=4", "self_backtracking:n=4,b=1"]}  # fmt: skip


def _write(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def sudoku_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sudoku")
    folder = root / "configs"
    folder.mkdir()
    study = {
        "task": "sudoku",
        "output_dir": str(root / "study"),
        "backtrack_data_config": _write(folder / "data_bt.yaml", {**DATA, "output_dir": "unused"}),
        "optimal_data_config": _write(folder / "data_opt.yaml", {**DATA, "mode": "optimal", "output_dir": "unused"}),
        "init_model_config": _write(folder / "init.yaml", {**INIT, "output_dir": "unused"}),
        "backtrack_sft_config": _write(folder / "sft.yaml", {**SFT, "output_dir": "unused"}),
        "optimal_sft_config": str(folder / "sft.yaml"),
        "eval_config": _write(folder / "eval.yaml", {**EVAL, "output_dir": "unused"}),
        "round_sft_config": _write(folder / "round.yaml", {**SFT, "max_steps": 10, "learning_rate": 2e-3}),
        "round_eval_decoders": ["greedy"],
        "correction_pool_size": 40,
        "correction_search": "self_backtracking:n=4,b=0,temperature=0.7,batch_size=40,max_new_tokens=48",
        "correction_sft_config": _write(folder / "self_correct.yaml", {**SFT, "max_steps": 10, "learning_rate": 2e-3}),
        "synthetic_eval_decoders": ["greedy"],
        "rounds": 1,
        "pool_size": 40,
        "search_n": 8,
        "search_b": 1,
        "search_batch_size": 40,
        "search_max_new_tokens": 48,
        "control": True,
        "accelerate_config": str(REPO / "accelerate_configs" / "cpu.yaml"),
        "seed": 0,
    }
    config = folder / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("BACKTRACK_TRL_STOP_AFTER", None)
    cmd = [sys.executable, str(REPO / "recipes" / "self_improve.py"), "--config", str(config)]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "study", config


def test_sudoku_study_runs_every_stage_on_sudoku_data(sudoku_study):
    study, _ = sudoku_study
    state = json.loads((study / "state.json").read_text())["stages"]
    for stage in ("sft_optimal", "sft_backtrack", "self_correct_search", "self_correct_sft", "eval_optimal",
                  "eval_backtrack", "round_1_search", "round_1_sft", "round_1_eval", "control_1_sft", "report"):  # fmt: skip
        assert stage in state, stage
    sudoku = get_task("sudoku")
    data = load_dataset(str(study / "data" / "backtrack"))
    assert {"size", "puzzle"} <= set(data["train"].column_names)
    test_keys = {sudoku.problem_key(sudoku.problem_from_row(r)) for s in ("test_seen", "test_new") for r in data[s]}
    rows = load_dataset(str(study / "round_datasets"), "round_1", split="train")
    for row in rows:  # the harvest keeps strictly correct Sudoku answers of training puzzles only
        problem = sudoku.problem_from_row(row)
        assert sudoku.problem_key(problem) not in test_keys
        if row["source"] == "search":
            assert sudoku.check(problem, row["completion"]).correct
        elif row["source"] == "mistake":  # the model's own wrong placement, then <backtrack>
            assert row["error_type"].startswith("own_") and row["completion"].endswith("<backtrack>")
            assert not sudoku.check(problem, row["prefix"] + row["wrong_step"] + "Goal Reached!").correct
    tokenizer = json.loads((study / "models" / "init" / "tokenizer.json").read_text())
    assert " sudoku" in tokenizer["model"]["vocab"] and " numbers" not in tokenizer["model"]["vocab"]
    card = (study / "models" / "backtrack-sft" / "README.md").read_text()
    assert "###Question: sudoku [" in card and "Goal Reached!" in card and "numbers [" not in card


def test_sudoku_report_uses_the_tasks_reasons_and_no_countdown_figures(sudoku_study):
    study, _ = sudoku_study
    metrics = json.loads((study / "eval" / "backtrack" / "metrics.json").read_text())
    reasons = metrics["test_seen"]["greedy"]["reasons_strict"]
    assert (
        set(reasons) == set(get_task("sudoku").reasons) and "accuracy_official" not in metrics["test_seen"]["greedy"]
    )
    report = (study / "report" / "report.md").read_text()
    assert "filled cell" in report and "rule violation" in report and "wrong arithmetic" not in report
    table = parse_markdown_table(report.split("## Table 1")[1].split("\n\n", 2)[2])
    assert table and all(row[list(row)[-1]] == "-" for row in table)  # no published Sudoku figures beside ours
    assert (study / "report" / "accuracy_vs_n.png").is_file() and (study / "report" / "rounds.png").is_file()
