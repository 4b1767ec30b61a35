"""The HTML page of a search: the planted path in the right colours, the chosen path, escaping, other tasks."""

import re

from _decoding_utils import GOAL, PROMPT, RIGHT
from _viz_utils import planted_search, svg_nodes

from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.viz.render_html import render_html
from backtrack_trl.viz.search_view import OUTCOMES, build_view


def test_html_draws_the_planted_path_with_the_right_colours():
    result = planted_search()
    assert result.completion == RIGHT
    page = render_html(result)
    nodes = svg_nodes(page)
    by_text = {}
    for classes, fill, text in nodes:
        by_text.setdefault(text.split("  ")[0], []).append((classes, fill, text))
    # The right answer's path is drawn and chosen, its end green.
    for step in ("5+3=8", "8*2=16"):
        assert any("chosen" in c for c, _, _ in by_text[step])
    goals = [(c, fill) for c, fill, text in nodes if text.startswith(GOAL)]
    assert ({"node", "outcome-correct", "chosen"}, OUTCOMES["correct"][0]) in goals
    # The wrong answer's end is orange and not chosen; the rolled-back samples end red.
    assert ({"node", "outcome-wrong"}, OUTCOMES["wrong"][0]) in goals
    backtracks = [(c, fill) for c, fill, text in nodes if text.startswith("&lt;backtrack&gt;")]
    assert backtracks and all(
        c == {"node", "outcome-backtrack"} and f == OUTCOMES["backtrack"][0] for c, f in backtracks
    )
    # The rolled-back state is drawn as state S1, with an arc from the <backtrack> ends back to it.
    assert any("state" in c and text.startswith("S1  5-3=2") for c, _, text in nodes)
    assert page.count('class="rollback"') == len(backtracks)
    assert "2*2=4" in page and "Wrong steps that led there" in page
    # Both checkers' verdicts on every candidate; the chosen row marked.
    assert "strict checker" in page and "official checker" in page
    assert re.search(r'<tr class="chosen"><td>\d+</td><td>yes</td><td class="text">5\+3=8\n8\*2=16', page)


def test_model_text_is_escaped():
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    candidate = Candidate(text=f"{evil}\n{GOAL}", reached_goal=True, end_reason="goal", mean_logprob=-1.0)
    result = SearchResult(prompt=PROMPT, completion=candidate.text, candidates=[candidate], chosen_index=0)
    page = render_html(result)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&amp;" in page


def test_sudoku_tree_draws_with_its_own_checker():
    prompt = "###Question: sudoku [4.../...1/.32./...3]\n###Response:\n"
    candidate = Candidate(text=f"r1c2=1\n{GOAL}", reached_goal=True, end_reason="goal", mean_logprob=-0.5)
    result = SearchResult(prompt=prompt, completion=candidate.text, candidates=[candidate], chosen_index=0)
    view = build_view(result)
    assert view.task_name == "sudoku" and view.outcomes == ["wrong"]  # incomplete grid
    assert "sudoku [4.../...1/.32./...3]" in render_html(result)
