"""The search tree: what the search records (states, parents, rollbacks) and what the view draws (planted path,
colours by outcome, chosen path, escaping), on a scripted model with known answers."""

import json
import re

import pytest
from _decoding_utils import GOAL, PLANTED, PROMPT, RIGHT, scripted, tokenizer

from backtrack_trl.decoding import SelfBacktrackingDecoder
from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.viz.render_html import render_html
from backtrack_trl.viz.search_tree import load_generation, pick_examples, write_search_view
from backtrack_trl.viz.search_view import OUTCOMES, build_view, step_lines


def planted_search(n=16, b=1):
    decoder = SelfBacktrackingDecoder(scripted(PLANTED), tokenizer(), n=n, b=b, k=4, temperature=1.0, seed=0)
    return decoder.solve([PROMPT])[0]


def svg_nodes(page: str) -> list[tuple[set, str, str]]:
    """(classes, fill colour, text) of every node drawn in the page's SVG."""
    pattern = r'<g class="([^"]+)"><title>.*?</title><rect [^>]*fill="([^"]+)"[^>]*/><text [^>]*>(.*?)</text></g>'
    return [(set(c.split()), fill, text) for c, fill, text in re.findall(pattern, page, flags=re.S)]


def test_search_records_states_parents_and_rollbacks():
    # b=2: round 1 rolls back to the same (visited) state, so no round 2 runs, and its samples point at state 1 too.
    result = planted_search(b=2)
    tree = result.tree
    assert [s["prefix"] for s in tree["states"]] == ["", "5-3=2\n"]
    root, rolled = tree["states"]
    assert root["parent"] is None and root["round"] == 0
    assert rolled["parent"] == 0 and rolled["round"] == 1 and rolled["num_tokens"] == len("5-3=2\n")
    assert set(rolled["wrong_steps"]) <= {"2*2=4\n", "2+2=4\n"} and rolled["wrong_steps"]
    assert len(tree["samples"]) == sum(c.count for c in result.candidates) == 2 * 16
    for state, index, rolled_to in tree["samples"]:
        candidate = result.candidates[index]
        assert candidate.text.startswith(tree["states"][state]["prefix"])
        if candidate.text.startswith("5-3=2\n"):  # every one of them rolls back to the state "5-3=2\n"
            assert candidate.end_reason == "backtrack" and rolled_to == 1
        else:
            assert candidate.reached_goal and rolled_to is None and state == 0
    assert [s[0] for s in tree["samples"][16:]] == [1] * 16  # round 1: all drawn from the rolled-back state
    # The wrong steps recorded are exactly those of the round-0 samples that rolled back.
    round0 = {result.candidates[i].text.split("\n")[1] + "\n" for s, i, r in tree["samples"][:16] if r == 1}
    assert set(rolled["wrong_steps"]) == round0
    # In the last round nothing is rolled back: the <backtrack> samples there point nowhere.
    last = planted_search(b=1).tree
    assert [r for _, _, r in last["samples"][16:]] == [None] * 16
    # Plain JSON: it survives the generations file.
    again = SearchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.tree == tree


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


def test_tree_counts_and_paths():
    result = planted_search()
    view = build_view(result)
    root = view.nodes[0]
    assert root.label == "numbers [5, 3, 2]->target 16" and root.count == 32
    labels = {tuple(step_lines(c.text, c.end_reason)) for c in result.candidates}
    assert ("5+3=8", "8*2=16", GOAL) in labels
    # Every sample is a path: leaves' counts add up to the samples.
    leaves = [node for node in view.nodes if not node.children]
    assert sum(node.count for node in leaves) == 32
    assert all(node.outcome is not None for node in leaves)
    state_node = next(node for node in view.nodes if node.state == 1)
    assert state_node.label == "5-3=2" and state_node.rounds[1] == 16


def test_model_text_is_escaped():
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    candidate = Candidate(text=f"{evil}\n{GOAL}", reached_goal=True, end_reason="goal", mean_logprob=-1.0)
    result = SearchResult(prompt=PROMPT, completion=candidate.text, candidates=[candidate], chosen_index=0)
    page = render_html(result)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&amp;" in page


def test_results_without_a_tree_are_drawn_from_the_root():
    candidates = [
        Candidate(text=RIGHT, reached_goal=True, end_reason="goal", mean_logprob=-0.1, count=3),
        Candidate(text="5*3=15\n15", reached_goal=False, end_reason="length", mean_logprob=-2.0, count=2),
    ]
    result = SearchResult(prompt=PROMPT, completion=RIGHT, candidates=candidates, chosen_index=0, method="best_of_n")
    view = build_view(result)
    assert view.nodes[0].count == 5 and len(view.states) == 1
    assert view.sample_outcomes == {"correct": 3, "length": 2}
    assert any(n.label == "[length limit]" and n.outcome == "length" for n in view.nodes)


def test_sudoku_tree_draws_with_its_own_checker():
    prompt = "###Question: sudoku [4.../...1/.32./...3]\n###Response:\n"
    candidate = Candidate(text=f"r1c2=1\n{GOAL}", reached_goal=True, end_reason="goal", mean_logprob=-0.5)
    result = SearchResult(prompt=prompt, completion=candidate.text, candidates=[candidate], chosen_index=0)
    view = build_view(result)
    assert view.task_name == "sudoku" and view.outcomes == ["wrong"]  # incomplete grid
    assert "sudoku [4.../...1/.32./...3]" in render_html(result)


def test_generations_file_round_trip_and_png(tmp_path):
    result = planted_search()
    rows = []
    for index in range(3):
        rows.append({"index": index, "numbers": [5, 3, 2], "target": 16, "correct_strict": index != 1,
                     "rollbacks": 1, **result.to_dict()})  # fmt: skip
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = load_generation(path, 2)
    assert loaded.tree == result.tree and loaded.completion == RIGHT
    assert pick_examples(path) == {"solved": 0, "unsolved": 1}
    with pytest.raises(ValueError, match="--index 7"):
        load_generation(path, 7)
    view = write_search_view(loaded, tmp_path / "tree.html", png=tmp_path / "tree.png")
    assert (tmp_path / "tree.html").read_text().startswith("<!DOCTYPE html>")
    from PIL import Image

    image = Image.open(tmp_path / "tree.png").convert("RGB")
    assert image.size[0] >= view.width - 1 and image.size[1] >= view.height - 1
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    for outcome in ("correct", "wrong", "backtrack"):
        assert tuple(int(OUTCOMES[outcome][0][i : i + 2], 16) for i in (1, 3, 5)) in colours


def test_study_report_embeds_a_solved_and_an_unsolved_tree_per_split(tmp_path):
    from backtrack_trl.study.report import write_report

    result = planted_search()
    eval_dir = tmp_path / "study" / "eval" / "backtrack"
    label = "self_backtracking:n=16,b=1"
    metrics = {}
    for split in ("test_seen", "test_new"):
        metrics[split] = {
            "greedy": {"method": "greedy", "options": {}, "accuracy_strict": 0.5, "oracle_strict": 0.5},
            label: {"method": "self_backtracking", "options": {"n": 16, "b": 1}, "accuracy_strict": 0.5,
                    "oracle_strict": 1.0},
        }  # fmt: skip
        rows = [{"index": i, "correct_strict": i == 1, "rollbacks": 1, **result.to_dict()} for i in range(2)]
        folder = eval_dir / "generations" / split
        folder.mkdir(parents=True)
        (folder / "self_backtracking_n16_b1.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    report = write_report(tmp_path / "study" / "report", {}, [], {}, study_dir=tmp_path / "study")
    text = report.read_text()
    assert "## The search, seen as trees" in text
    for split in ("test_seen", "test_new"):
        for kind, index in (("solved", 1), ("unsolved", 0)):
            name = f"trees/{split}_{kind}_{index}"
            assert f"![{split} {kind}]({name}.png)" in text and f"({name}.html)" in text
            assert (report.parent / f"{name}.png").stat().st_size > 1000
    # A study without a search evaluation gets no section.
    bare = write_report(tmp_path / "bare", {}, [], {}, study_dir=tmp_path / "nothing")
    assert "seen as trees" not in bare.read_text()


def test_recipe_arguments_draw_a_search_or_a_recorded_one(tmp_path, capsys):
    from _decoding_utils import tiny_llama

    from backtrack_trl.viz.search_tree import VisualizeArguments, visualize_search

    model = tiny_llama(biased=True)
    model.save_pretrained(tmp_path / "model")
    tokenizer().save_pretrained(tmp_path / "model")
    out = tmp_path / "one.html"
    view = visualize_search(VisualizeArguments(model=str(tmp_path / "model"), numbers=[3, 5, 2], target=16, n=4,
                                               b=1, output=str(out)))  # fmt: skip
    assert view.question == "numbers [3, 5, 2]->target 16" and sum(view.sample_outcomes.values()) >= 4
    assert out.is_file() and out.with_suffix(".png").is_file() and "wrote" in capsys.readouterr().out
    path = tmp_path / "generations.jsonl"
    path.write_text(json.dumps({"index": 0, **view.result.to_dict()}) + "\n")
    again = visualize_search(VisualizeArguments(generations=str(path), index=0, output=str(tmp_path / "two.html")))
    assert again.result.tree == view.result.tree
    with pytest.raises(ValueError, match="Give either --model"):
        VisualizeArguments(model="m", generations=str(path))
    with pytest.raises(ValueError, match="--numbers 3 5 2 --target 16"):
        VisualizeArguments(model="m", numbers=[3, 5, 2])
