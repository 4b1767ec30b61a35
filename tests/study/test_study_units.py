"""Fast unit tests of the self-improvement pieces: study state, report tables/plots, the harvest filter."""

import json

import pytest
from _report_utils import parse_markdown_table

from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.study.harvest import pick_path
from backtrack_trl.study.report import rounds_table, table1_markdown, write_report
from backtrack_trl.study.state import ConfigMismatchError, StudyState
from backtrack_trl.tasks.countdown.format import Problem


# -- study state -------------------------------------------------------------------------------------------------------
def test_state_records_stages_and_reopens(tmp_path):
    state = StudyState.open(tmp_path / "s", {"seed": 1, "rounds": 2}, ignore_keys=("rounds",))
    state.mark_done("data", 1.234)
    again = StudyState.open(tmp_path / "s", {"seed": 1, "rounds": 5}, ignore_keys=("rounds",))
    assert again.is_done("data") and not again.is_done("sft")
    assert again.stages["data"]["seconds"] == 1.23


def test_state_refuses_other_configuration(tmp_path):
    StudyState.open(tmp_path / "s", {"seed": 1, "pool_size": 10})
    with pytest.raises(ConfigMismatchError, match=r"pool_size: 10 -> 20"):
        StudyState.open(tmp_path / "s", {"seed": 1, "pool_size": 20})
    fresh = StudyState.open(tmp_path / "s", {"seed": 1, "pool_size": 20}, overwrite=True)
    assert fresh.stages == {}


def test_state_refuses_foreign_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "something.txt").write_text("x")
    with pytest.raises(ConfigMismatchError, match="not created by this tool"):
        StudyState.open(tmp_path / "s", {"seed": 1})


def test_state_file_is_valid_json_after_each_stage(tmp_path):
    state = StudyState.open(tmp_path / "s", {"a": 1})
    for name in ("x", "y"):
        state.mark_done(name, 0.5)
        saved = json.loads((tmp_path / "s" / "state.json").read_text())
        assert name in saved["stages"]
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")]


# -- report --------------------------------------------------------------------------------------------------------------
RESULTS = {
    ("optimal", "greedy"): {
        "test_seen": {"strict": 40.0, "official": 41.0},
        "test_new": {"strict": 30.0, "official": 32.5},
    },
    ("optimal", "bon_8"): {
        "test_seen": {"strict": 42.0, "official": 43.0, "oracle": 70.0},
        "test_new": {"strict": 31.0},
    },
    ("backtrack", "sbt_b0_n8"): {"test_seen": {"strict": 55.0, "official": 56.0, "oracle": 80.0}},
    ("backtrack", "sbt_b0_n32"): {"test_seen": {"strict": 60.0, "official": 61.0, "oracle": 90.0}},
    ("backtrack", "sbt_b1_n32"): {"test_seen": {"strict": 61.5, "official": 62.0}, "test_new": {"strict": 50.0}},
}


def test_table1_rows_in_paper_order_with_both_checkers():
    rows = parse_markdown_table(table1_markdown(RESULTS))
    assert [r["Method"] for r in rows] == [
        "SFT on optimal paths + greedy",
        "SFT on optimal paths + best-of-8 (likelihood)",
        "Self-backtracking b=0, N=8",
        "Self-backtracking b=0, N=32",
        "Self-backtracking b=1, N=32",
    ]
    assert rows[0]["Seen strict"] == "40.0" and rows[0]["New official"] == "32.5"
    assert rows[0]["Paper 1B seen / new (official)"] == "28.60 / 28.92"
    assert rows[4]["New official"] == "-"  # missing values are shown, not invented


def test_rounds_table_and_report_files(tmp_path):
    rows = [
        {"round": 0, "model": "backtrack-sft", "greedy_seen": 30.0, "greedy_new": 20.0, "search_seen": 60.0},
        {"round": 1, "model": "round_1", "pool_problems": 100, "kept": 70, "greedy_seen": 45.0, "search_seen": 62.0},
    ]
    parsed = parse_markdown_table(rounds_table(rows))
    assert [r["Round"] for r in parsed] == ["0", "1"] and parsed[1]["Kept paths"] == "70"
    report = write_report(tmp_path / "report", RESULTS, rows, {"data": 1.0, "sft": 10.0})
    text = report.read_text()
    assert "| **total** | **11** |" in text
    assert (tmp_path / "report" / "accuracy_vs_n.png").stat().st_size > 1000
    assert (tmp_path / "report" / "rounds.png").stat().st_size > 1000


# -- harvest filter ------------------------------------------------------------------------------------------------------
PROBLEM = Problem((3, 5, 2), 16)
RIGHT = "5+3=8\n8*2=16\nGoal Reached!"
FORGED = "5*3=15\n15+2=16\nGoal Reached!"  # wrong arithmetic that "reaches" the target


def _result(chosen: str, candidates: list[tuple[str, float]]) -> SearchResult:
    cands = [Candidate(text=t, reached_goal=t.endswith("Goal Reached!"), end_reason="goal", mean_logprob=s, score=s)
             for t, s in candidates]  # fmt: skip
    return SearchResult(prompt="", completion=chosen, candidates=cands)


def test_best_correct_skips_higher_scoring_forgery():
    result = _result(FORGED, [(FORGED, -0.1), (RIGHT, -0.5), ("3+2=5\n<backtrack>", 0.0)])
    assert pick_path(PROBLEM, result, "best_correct") == RIGHT
    assert pick_path(PROBLEM, result, "chosen") is None  # the chosen answer is the forgery


def test_chosen_keeps_a_correct_choice_and_rejects_backtrack_text():
    assert pick_path(PROBLEM, _result(RIGHT, [(RIGHT, -0.2)]), "chosen") == RIGHT
    assert pick_path(PROBLEM, _result(RIGHT + "\n<backtrack>", []), "chosen") is None
    with pytest.raises(ValueError, match="keep="):
        pick_path(PROBLEM, _result(RIGHT, []), "first")


def test_parse_markdown_table_reads_only_the_first_table():
    text = "intro\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nmore text\n\n| x | y | z |\n|---|---|---|\n| 3 | 4 | 5 |\n"
    assert parse_markdown_table(text) == [{"a": "1", "b": "2"}]
    with pytest.raises(ValueError, match="no markdown table"):
        parse_markdown_table("no table here")


def test_harvest_that_keeps_nothing_stops_with_the_search_accuracy(tmp_path):
    from backtrack_trl.study.harvest import EmptyHarvestError, harvest
    from backtrack_trl.training.model_init import init_tiny_llama, save_model_and_tokenizer
    from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer

    tokenizer = build_countdown_tokenizer()
    model = init_tiny_llama(
        tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    save_model_and_tokenizer(model, tokenizer, tmp_path / "random")  # an untrained model solves nothing
    problems = [{"numbers": [3, 5, 2], "target": 16}, {"numbers": [4, 6, 1], "target": 25}]
    with pytest.raises(EmptyHarvestError, match=r"accepted no path .* on 2 pool problems \(search accuracy 0\.0%"):
        harvest(tmp_path / "random", problems, tmp_path / "rounds", "round_1", {"n": 2, "b": 0, "max_new_tokens": 8},
                progress=False)  # fmt: skip
    assert not (tmp_path / "rounds").exists()  # nothing half-written
    with pytest.raises(ValueError, match="pool problems are test problems"):
        harvest(tmp_path / "random", problems, tmp_path / "rounds", "round_1", {"n": 2, "b": 0},
                forbidden_keys={((2, 3, 5), 16)}, progress=False)  # fmt: skip
