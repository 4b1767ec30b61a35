"""The GRPO part of the study report: Table 1's GRPO rows, the reward curve from a hand-written trainer_state.json,
the first and last logged steps, training time beside the rounds', and GRPO rounds in the per-round table."""

import json

from _report_utils import parse_markdown_table

from backtrack_trl.study.grpo_report import (
    _moving_average,
    _point,
    accuracy_points,
    grpo_markdown,
    read_log_history,
    steps_markdown,
    time_markdown,
)
from backtrack_trl.study.report import rounds_table, table1_markdown
from backtrack_trl.study.results import collect_decoder_results, collect_round_rows


def _entry(step, reward, zero=0.5):
    return {"step": step, "reward": reward, "reward_std": reward / 2, "frac_reward_zero_std": zero,
            "completions/mean_length": 20.0 + step, "loss": 0.0, "learning_rate": 1e-4}  # fmt: skip


HISTORY = [_entry(step, 0.05 * step) for step in range(1, 9)]


def _metrics(greedy_seen: float, search_seen: float) -> dict:
    def entry(method, options, accuracy):
        return {"method": method, "options": options, "accuracy_strict": accuracy, "oracle_strict": accuracy,
                "num_problems": 100}  # fmt: skip

    return {split: {"greedy": entry("greedy", {}, greedy_seen),
                    "self_backtracking:n=32,b=1": entry("self_backtracking", {"n": 32, "b": 1}, search_seen)}
            for split in ("test_seen", "test_new")}  # fmt: skip


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _grpo_study(tmp_path):
    study = tmp_path / "study"
    # TRL's log_history: logging steps carry a reward; the train summary at the end does not.
    _write(study / "models/grpo/trainer_state.json", {"log_history": [*HISTORY, {"step": 8, "train_runtime": 9.0}]})
    _write(study / "eval/backtrack/metrics.json", _metrics(0.10, 0.30))
    _write(study / "eval/grpo/metrics.json", _metrics(0.25, 0.35))
    return study


def test_the_log_history_keeps_the_logged_rewards_only(tmp_path):
    study = _grpo_study(tmp_path)
    assert read_log_history(study / "models/grpo") == HISTORY
    assert read_log_history(tmp_path / "no-model") == []


def test_the_steps_table_shows_the_first_and_last_logged_steps():
    rows = parse_markdown_table(steps_markdown(HISTORY, first=2, last=2))
    assert [row["Step"] for row in rows] == ["1", "2", "...", "7", "8"]
    assert rows[-1]["Reward"] == "0.400" and rows[-1]["Groups without spread"] == "0.500"
    assert rows[-1]["Completion tokens"] == "28.0"
    assert [row["Step"] for row in parse_markdown_table(steps_markdown(HISTORY[:3]))] == ["1", "2", "3"]


def test_the_grpo_rows_join_table_1_after_the_backtrack_model(tmp_path):
    results = collect_decoder_results(_grpo_study(tmp_path))
    assert results[("grpo", "greedy")]["test_seen"]["strict"] == 25.0
    rows = parse_markdown_table(table1_markdown(results))
    assert [row["Method"] for row in rows] == [
        "Backtrack SFT + greedy",
        "Self-backtracking b=1, N=32",
        "Backtrack SFT + GRPO + greedy",
        "Backtrack SFT + GRPO + self-backtracking b=1, N=32",
    ]
    assert rows[2]["Seen strict"].startswith("25.0 [")  # with its Wilson interval, like the other rows


def test_training_time_sets_grpo_beside_the_rounds():
    seconds = {"grpo": 600.0, "eval_grpo": 50.0, "round_1_search": 200.0, "round_1_sft": 100.0,
               "round_1_eval": 40.0, "round_2_search": 210.0, "round_2_sft": 90.0}  # fmt: skip
    rows = parse_markdown_table(time_markdown(seconds, rounds=3, round_trainer="sft"))
    assert [(row["Training"], row["Wall time (s)"]) for row in rows] == [
        ("Backtrack SFT + GRPO (Table 1)", "600"),
        ("Round 1 (sft)", "300"),
        ("Round 2 (sft)", "300"),
        ("**Rounds 1-2**", "**600**"),
    ]
    grpo_rounds = {"round_1_pool": 1.0, "round_1_grpo": 299.0, "round_1_eval": 40.0}
    rows = parse_markdown_table(time_markdown(grpo_rounds, rounds=1, round_trainer="grpo"))
    assert [(row["Stages"], row["Wall time (s)"]) for row in rows] == [("round_1_pool + round_1_grpo", "300")]


def test_the_grpo_section_draws_the_reward_curve(tmp_path):
    study = _grpo_study(tmp_path)
    text = grpo_markdown(study, {"grpo": 61.0, "round_1_search": 30.0, "round_1_sft": 20.0}, 1, tmp_path / "report",
                         search_spec="self_backtracking:n=32,b=1")  # fmt: skip
    assert text.startswith("## GRPO") and "![GRPO reward](grpo_reward.png)" in text
    assert "| Backtrack SFT + GRPO (Table 1) | grpo | 61 |" in text and "| Round 1 (sft) |" in text
    assert "| 8 | 0.400 |" in text and "| ... |" in text
    assert (tmp_path / "report/grpo_reward.png").stat().st_size > 1000
    assert grpo_markdown(tmp_path / "other", {"round_1_sft": 1.0}, 1, tmp_path / "r2") == ""  # no GRPO: no section


def test_grpo_rounds_draw_their_curves_and_fill_the_per_round_table(tmp_path):
    study = tmp_path / "study"
    _write(study / "eval/backtrack/metrics.json", _metrics(0.10, 0.30))
    for k in (1, 2):
        rdir = study / "rounds" / f"round_{k}"
        _write(rdir / "pool.json", {"pool_problems": 30, "trainer": "grpo"})
        _write(rdir / "eval/metrics.json", _metrics(0.1 + 0.05 * k, 0.3))
        _write(rdir / "model/trainer_state.json", {"log_history": HISTORY})
    rows = collect_round_rows(study, 2, "self_backtracking:n=32,b=1")
    assert [(row["model"], row.get("pool_problems"), row.get("kept")) for row in rows[1:]] == [
        ("round 1 (GRPO)", 30, None),
        ("round 2 (GRPO)", 30, None),
    ]
    assert rows[2]["greedy_seen"] == 20.0 and rows[2]["trainer"] == "grpo"
    table = parse_markdown_table(rounds_table(rows))
    assert table[0]["Paper 1B greedy seen / new"] != "-" and table[1]["Paper 1B greedy seen / new"] == "-"
    text = grpo_markdown(study, {"round_1_pool": 1.0, "round_1_grpo": 9.0}, 2, tmp_path / "report", "grpo")
    assert "no search harvests the pool" in text and text.count("the first and last logged steps") == 2
    assert (tmp_path / "report/grpo_reward.png").is_file()


def test_accuracy_points_carry_the_problem_counts_for_wilson_error_bars(tmp_path):
    study = _grpo_study(tmp_path)
    points = accuracy_points(study / "eval/backtrack", study / "eval/grpo", "sbt_b1_n32")
    assert points["greedy, seen"] == ((10.0, 100), (25.0, 100))
    assert points["search, new"] == ((30.0, 100), (35.0, 100))
    value, (below, above) = _point((10.0, 100))  # Wilson 95% for 10/100: [5.52, 17.44]
    assert value == 10.0 and round(below, 2) == 4.48 and round(above, 2) == 7.44
    assert _point(10.0) == (10.0, [0.0, 0.0])  # no count: no bar


def test_the_moving_average_of_a_per_step_reward_curve():
    assert _moving_average([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
