"""The study report: Table 1 in the paper's order with both checkers, the per-round table and the plots."""

import pytest
from _report_utils import parse_markdown_table

from backtrack_trl.study.report import rounds_table, table1_markdown, write_report


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


def test_parse_markdown_table_reads_only_the_first_table():
    text = "intro\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nmore text\n\n| x | y | z |\n|---|---|---|\n| 3 | 4 | 5 |\n"
    assert parse_markdown_table(text) == [{"a": "1", "b": "2"}]
    with pytest.raises(ValueError, match="no markdown table"):
        parse_markdown_table("no table here")
