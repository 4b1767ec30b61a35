"""The files of a drawn search: a generations file read back (jsonl), examples picked for the report, the HTML page
and PNG written, the study report's trees, and the recipe's arguments."""

import json

import pytest
from _decoding_utils import RIGHT, tokenizer
from _viz_utils import planted_search

from backtrack_trl.viz.render_html import render_html
from backtrack_trl.viz.search_tree import load_generation, pick_examples, write_search_view


def test_generations_file_round_trip_and_files(tmp_path):
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
    assert (tmp_path / "tree.html").read_text() == render_html(loaded, view=view)
    assert (tmp_path / "tree.png").read_bytes().startswith(b"\x89PNG")


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
