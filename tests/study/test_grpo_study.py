"""End to end: a tiny study with the Table 1 GRPO row and a GRPO round (2 GRPO steps each), its report, a rerun that
skips every finished stage. Slow (several recipe launches); run by `make test-slow` and CI."""

import json

import pytest
from _report_utils import parse_markdown_table
from _study_utils import run_study, study_configs
from datasets import load_dataset


pytestmark = pytest.mark.slow


def test_a_study_with_a_grpo_row_and_grpo_rounds(tmp_path):
    config = study_configs(tmp_path / "configs", tmp_path / "study", baseline=False, grpo=True)
    study = tmp_path / "study"
    proc = run_study(config, tmp_path, "--rounds", "1", "--round_trainer", "grpo")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = json.loads((study / "state.json").read_text())["stages"]
    assert {"grpo", "eval_grpo", "round_1_pool", "round_1_grpo", "round_1_eval"} <= set(stages)
    assert not {"round_1_search", "round_1_sft", "control_1_data"} & set(stages)  # no harvest, no control arm
    for model in (study / "models/grpo", study / "rounds/round_1/model"):
        history = json.loads((model / "trainer_state.json").read_text())["log_history"]
        assert [entry["step"] for entry in history if "reward" in entry] == [1, 2]
    assert set(json.loads((study / "eval/grpo/metrics.json").read_text())) == {"test_seen", "test_new"}
    prompts = load_dataset(str(study / "rounds/round_1/prompts"), split="train")
    assert len(prompts) == json.loads((study / "rounds/round_1/pool.json").read_text())["pool_problems"] > 0

    report = (study / "report/report.md").read_text()
    table1 = parse_markdown_table(report.split("## Table 1")[1])
    assert {"Backtrack SFT + GRPO + greedy", "Backtrack SFT + GRPO + self-backtracking b=1, N=4"} <= {
        row["Method"] for row in table1
    }
    rounds = parse_markdown_table(report.split("## Self-improvement rounds")[1])
    assert rounds[1]["Model"] == "round 1 (GRPO)" and rounds[1]["Kept paths"] == "-"
    assert f"| Backtrack SFT + GRPO (Table 1) | grpo | {stages['grpo']['seconds']:.0f} |" in report
    assert "no search harvests the pool" in report and (study / "report/grpo_reward.png").stat().st_size > 1000

    again = run_study(config, tmp_path, "--rounds", "1", "--round_trainer", "grpo")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[grpo] already done, skipping" in again.stderr + again.stdout
    assert "=== " not in again.stdout.split("Study finished")[0]  # no stage ran again
