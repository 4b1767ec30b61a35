"""The tree model of a drawn search: what the search records (states, parents, rollbacks), how the view merges the
samples' lines into a tree, and the geometry and styles both renderers share."""

import json

from _decoding_utils import GOAL, PROMPT, RIGHT
from _viz_utils import planted_search

from backtrack_trl.decoding.results import Candidate, SearchResult
from backtrack_trl.viz.search_view import (
    CHOSEN_COLOUR,
    OUTCOMES,
    build_view,
    edges,
    node_style,
    rollback_arcs,
    step_lines,
)


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


def test_edges_arcs_and_styles_the_renderers_share():
    view = build_view(planted_search(b=2))
    drawn = list(edges(view))
    assert len(drawn) == len(view.nodes) - 1  # every node but the root has its edge
    chosen = [edge.node.chosen for edge in drawn]
    assert chosen == sorted(chosen) and any(chosen)  # the chosen path last, on top
    for edge in drawn:
        parent = view.nodes[edge.node.parent]
        assert (edge.x1, edge.x2) == (parent.x + parent.width, edge.node.x) and edge.x1 < edge.mid < edge.x2
        assert edge.colour == CHOSEN_COLOUR if edge.node.chosen else edge.colour in {c for c, _ in OUTCOMES.values()}
    arcs = list(rollback_arcs(view))
    assert arcs and all(arc.state.state == 1 and arc.bend > max(arc.y1, arc.y2) for arc in arcs)
    assert sum(arc.count for arc in arcs) == sum(1 for *_, rolled in view.result.tree["samples"] if rolled == 1)
    root_style = node_style(view.nodes[0])  # an expanded state on the chosen path: thick blue border
    assert root_style == ("#eceff1", CHOSEN_COLOUR, True, "#212121")
    wrong = next(node for node in view.nodes if node.outcome == "wrong")
    assert node_style(wrong) == (OUTCOMES["wrong"][0], OUTCOMES["wrong"][0], False, "#ffffff")
