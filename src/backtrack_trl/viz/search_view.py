"""The model of a drawn search: one problem's self-backtracking search as a laid-out tree (:func:`build_view`),
what the renderers share (colours, legend, edge and rollback-arc geometry, node styles) and its plain-value
summaries (the chosen answer, the candidates table) for the page, the demo and the report.

The tree merges the samples' lines (a trie of steps): the prompt at the root, one node per step text, every sample a
path from the root (or from the rolled-back state it was drawn from) to its end, coloured by how it ended (see
:data:`OUTCOMES`). The view reads what the search records in ``SearchResult.tree`` (see
:class:`~backtrack_trl.decoding.results.SearchResult`); a result without a tree (greedy, best-of-N, an old
generations file) is drawn as its candidates from the root.

Usage:

```python
from backtrack_trl.viz.search_view import build_view, candidates_rows, summary

view = build_view(result)  # a SearchResult, its to_dict(), or a generations row; task read from the prompt
print(summary(view)["answer"], len(view.nodes), candidates_rows(view)[0])
```

:mod:`backtrack_trl.viz.render_html` and :mod:`backtrack_trl.viz.render_png` draw it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.tasks import BACKTRACK_TOKEN, RESPONSE_HEADER, TASKS, get_task, task_for_prompt


#: Outcome of a sample -> (colour, legend text).
OUTCOMES = {
    "correct": ("#2e7d32", "Goal Reached!, strictly correct"),
    "wrong": ("#ef6c00", "Goal Reached!, wrong (strict checker)"),
    "backtrack": ("#c62828", "<backtrack> (rolled back)"),
    "length": ("#757575", "length limit"),
    "eos": ("#6a1b9a", "stopped without the goal marker"),
}
MIXED_COLOUR = "#37474f"  # an edge whose samples ended differently
CHOSEN_COLOUR = "#1565c0"
_TERMINAL_LABELS = {"length": "[length limit]", "eos": "[EOS]"}

# Layout, in SVG pixels.
ROW = 22
CHAR = 7.2  # width of a character of the 12px monospace font
PAD = 8
GAP = 46  # horizontal gap between columns


@dataclass
class Node:
    """One node of the drawn tree: a step text (or a terminal marker) reached by ``count`` samples."""

    id: int
    label: str
    depth: int
    parent: int | None
    children: list[int] = field(default_factory=list)
    count: int = 0
    outcomes: Counter = field(default_factory=Counter)
    rounds: Counter = field(default_factory=Counter)
    outcome: str | None = None  # where samples end here: their outcome
    candidate: int | None = None
    state: int | None = None  # an expanded state of the search (0 = the root)
    chosen: bool = False
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0


@dataclass
class SearchView:
    """Everything the renderers draw (built by :func:`build_view`)."""

    result: SearchResult
    task_name: str
    question: str
    nodes: list[Node]
    states: list[dict]
    rollbacks: list[tuple[int, int, int]]  # (backtrack leaf node, state node, samples)
    verdicts: list[dict]  # per candidate: {mode: Verdict}
    outcomes: list[str]  # per candidate
    sample_outcomes: Counter
    width: float = 0.0
    height: float = 0.0


def as_result(result) -> SearchResult:
    """A SearchResult from itself, its ``to_dict()`` or a generations row (extra columns ignored)."""
    if isinstance(result, SearchResult):
        return result
    if not isinstance(result, dict):
        raise TypeError(f"Expected a SearchResult or a dict, got {type(result).__name__}.")
    names = {f.name for f in fields(SearchResult)}
    data = {key: value for key, value in result.items() if key in names}
    for key in ("candidates", "tree"):  # a parquet generations file stores them as JSON text
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    if "prompt" not in data:
        raise ValueError(f"A search result needs a 'prompt'; got keys {sorted(result)}.")
    return SearchResult.from_dict(data)


def task_of(prompt: str, task=None):
    """The task given, else the first registered task whose prompt format ``prompt`` follows."""
    if task is not None:
        return get_task(task)
    name = task_for_prompt(prompt)
    if name is not None:
        return get_task(name)
    raise ValueError(f"The prompt {prompt[:80]!r} is in the format of no registered task ({sorted(TASKS)}).")


def step_lines(text: str, end_reason: str) -> list[str]:
    """A response as the labels of its path: its non-empty lines (control characters escaped), ``<backtrack>`` as a
    line of its own, and a terminal marker for a length limit or an EOS stop."""
    lines = []
    for line in text.split("\n"):
        if line.endswith(BACKTRACK_TOKEN) and line != BACKTRACK_TOKEN:
            lines += [line[: -len(BACKTRACK_TOKEN)], BACKTRACK_TOKEN]
        elif line.strip():
            lines.append(line)
    if end_reason in _TERMINAL_LABELS:
        lines.append(_TERMINAL_LABELS[end_reason])
    # Control characters an untrained model writes (form feeds, tabs) are shown escaped, not as missing glyphs.
    return ["".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line) for line in lines]


def _question(prompt: str) -> str:
    text = prompt.split(RESPONSE_HEADER)[0].strip()
    return text.removeprefix("###Question:").strip() or text


def build_view(result, task=None) -> SearchView:
    """The tree of ``result`` (a SearchResult, its dict, or a generations row), laid out, with the task's verdicts
    on every candidate (``task``: a Task or its name; default: read from the prompt)."""
    result = as_result(result)
    task = task_of(result.prompt, task)
    problem = task.parse_prompt(result.prompt)
    verdicts = [{mode: task.check(problem, c.text, mode) for mode in task.modes} for c in result.candidates]
    outcomes = []
    for candidate, verdict in zip(result.candidates, verdicts):
        if candidate.reached_goal:
            outcomes.append("correct" if verdict[task.modes[0]].correct else "wrong")
        else:
            outcomes.append(candidate.end_reason if candidate.end_reason in OUTCOMES else "eos")
    tree = result.tree or {}
    states = tree.get("states") or [
        {"id": 0, "parent": None, "round": 0, "prefix": "", "num_tokens": 0, "wrong_steps": []}
    ]
    samples = tree.get("samples")
    if samples is None:  # no recorded tree: every candidate's samples from the root
        samples = [[0, i, None] for i, c in enumerate(result.candidates) for _ in range(max(1, c.count))]
    for sample in samples:
        if not (0 <= sample[1] < len(result.candidates)) or not (0 <= sample[0] < len(states)):
            raise ValueError(f"The search tree's sample {sample} points outside its candidates or states.")

    nodes = [Node(id=0, label=_question(result.prompt), depth=0, parent=None, state=0)]
    index: dict[tuple[int, str], int] = {}

    def child(parent: int, label: str) -> int:
        key = (parent, label)
        if key not in index:
            index[key] = len(nodes)
            nodes.append(Node(id=len(nodes), label=label, depth=nodes[parent].depth + 1, parent=parent))
            nodes[parent].children.append(index[key])
        return index[key]

    def walk(lines: list[str]) -> list[int]:
        path, current = [0], 0
        for line in lines:
            current = child(current, line)
            path.append(current)
        return path

    # States first, in id order, so their nodes exist before the samples drawn from them.
    state_node = {}
    for state in states:
        node = walk(step_lines(state["prefix"], ""))[-1]
        nodes[node].state = state["id"] if nodes[node].state is None else nodes[node].state
        state_node[state["id"]] = node
    rollbacks: Counter = Counter()
    sample_outcomes: Counter = Counter()
    for state_id, cand, rolled_to in samples:
        candidate = result.candidates[cand]
        outcome = outcomes[cand]
        sample_outcomes[outcome] += 1
        path = walk(step_lines(candidate.text, candidate.end_reason))
        round_index = states[state_id]["round"]
        for node in path:
            nodes[node].count += 1
            nodes[node].outcomes[outcome] += 1
            nodes[node].rounds[round_index] += 1
        leaf = nodes[path[-1]]
        leaf.outcome, leaf.candidate = outcome, cand
        if rolled_to is not None and rolled_to in state_node:
            rollbacks[(path[-1], state_node[rolled_to])] += 1
    if result.chosen_index is not None and result.candidates:
        chosen = result.candidates[result.chosen_index]
        for node in walk(step_lines(chosen.text, chosen.end_reason)):
            nodes[node].chosen = True
    view = SearchView(
        result=result,
        task_name=task.name,
        question=nodes[0].label,
        nodes=nodes,
        states=states,
        rollbacks=[(leaf, state, count) for (leaf, state), count in rollbacks.items()],
        verdicts=verdicts,
        outcomes=outcomes,
        sample_outcomes=sample_outcomes,
    )
    _layout(view)
    return view


def node_text(view: SearchView, node: Node) -> str:
    """The label drawn in a node: the step, plus count and score at a sample's end, plus the state tag."""
    text = node.label
    if node.state is not None and node.id != 0:
        text = f"S{node.state}  {text}"
    if node.candidate is not None:
        candidate = view.result.candidates[node.candidate]
        text += f"  x{node.count}  score {candidate.score:.3f}"
    elif node.count > 1 and node.id != 0:
        text += f"  x{node.count}"
    return text


def _layout(view: SearchView) -> None:
    """Leaves on consecutive rows (depth-first, children in sampling order), a parent on its first child's row, one
    column per depth as wide as its widest label."""
    nodes = view.nodes
    widths: dict[int, float] = {}
    for node in nodes:
        node.width = len(node_text(view, node)) * CHAR + 2 * PAD
        widths[node.depth] = max(widths.get(node.depth, 0.0), node.width)
    column_x, x = {}, 40.0
    for depth in sorted(widths):
        column_x[depth] = x
        x += widths[depth] + GAP
    row = 0
    legend_height = 40

    def place(node_id: int) -> None:
        nonlocal row
        node = nodes[node_id]
        node.x = column_x[node.depth]
        for child_id in node.children:
            place(child_id)
        if node.children:  # on its first child's row: the root stays at the top of a tall tree
            node.y = nodes[node.children[0]].y
        else:
            node.y = legend_height + ROW * row + ROW
            row += 1

    place(0)
    legend = sum(
        20 + len(f"{text} ({view.sample_outcomes.get(o, 0)})") * CHAR + 24 for o, (_, text) in OUTCOMES.items()
    )
    view.width = max(x, 40 + legend + 20 + len("chosen answer") * CHAR) + 40
    view.height = legend_height + ROW * (row + 1) + 20


def _edge_colour(node: Node) -> str:
    return OUTCOMES[next(iter(node.outcomes))][0] if len(node.outcomes) == 1 else MIXED_COLOUR


class Edge(NamedTuple):
    """The edge into ``node`` from its parent: a curve from (x1, y1) to (x2, y2) bending at ``mid``."""

    node: Node
    x1: float
    y1: float
    x2: float
    y2: float
    colour: str
    width: float  # stroke width in pixels: thicker for steps more samples took

    @property
    def mid(self) -> float:
        return (self.x1 + self.x2) / 2


class RollbackArc(NamedTuple):
    """A dashed arc from a ``<backtrack>`` leaf down to ``bend`` and back up to the ``state`` node it rolled back to,
    taken by ``count`` samples."""

    state: Node
    count: int
    x1: float
    y1: float
    x2: float
    y2: float
    bend: float
    width: float


def edges(view: SearchView) -> Iterator[Edge]:
    """Every edge, the chosen path's last (drawn on top)."""
    nodes = view.nodes
    for node in sorted(nodes, key=lambda node: node.chosen):
        if node.parent is None:
            continue
        parent = nodes[node.parent]
        colour = CHOSEN_COLOUR if node.chosen else _edge_colour(node)
        width = 1.2 + 1.6 * math.log2(max(1, node.count))
        yield Edge(node, parent.x + parent.width, parent.y, node.x, node.y, colour, width)


def rollback_arcs(view: SearchView) -> Iterator[RollbackArc]:
    """Every rollback, from its leaf to the state it returned to (below both, deeper for more samples)."""
    for leaf_id, state_id, count in view.rollbacks:
        leaf, state = view.nodes[leaf_id], view.nodes[state_id]
        x1, y1 = leaf.x + leaf.width / 2, leaf.y + 8
        x2, y2 = state.x + state.width / 2, state.y + 8
        bend = max(y1, y2) + 14 + 4 * min(count, 5)
        yield RollbackArc(state, count, x1, y1, x2, y2, bend, 1 + math.log2(count))


def node_style(node: Node) -> tuple[str, str, bool, str]:
    """A node's (fill, border colour, thick border, text colour): filled with its outcome's colour where samples
    end, a thick border for an expanded state (blue on the chosen path)."""
    fill, stroke, thick, text_colour = "#ffffff", "#90a4ae", False, "#212121"
    if node.outcome is not None:
        colour = OUTCOMES[node.outcome][0]
        fill, stroke, text_colour = colour, colour, "#ffffff"
    if node.state is not None:
        stroke, thick = "#263238", True
        fill = "#eceff1" if node.outcome is None else fill
    if node.chosen:
        stroke, thick = CHOSEN_COLOUR, True
    return fill, stroke, thick, text_colour


def legend(view: SearchView) -> tuple[list[tuple[float, str, str]], float]:
    """The legend's entries ``(x, colour, label)`` and the x of the final "chosen answer" entry."""
    entries, x = [], 40
    for outcome, (colour, text) in OUTCOMES.items():
        label = f"{text} ({view.sample_outcomes.get(outcome, 0)})"
        entries.append((x, colour, label))
        x += 20 + len(label) * CHAR + 24
    return entries, x


def summary(view: SearchView) -> dict:
    """The chosen answer and its verdicts (plain values, for the demo and the report)."""
    result = view.result
    task = get_task(view.task_name)
    problem = task.parse_prompt(result.prompt)
    verdicts = {mode: task.check(problem, result.completion, mode) for mode in task.modes}
    return {
        "question": view.question,
        "answer": result.completion,
        "verdicts": {
            mode: {"correct": v.correct, "reason": v.reason, "detail": v.detail} for mode, v in verdicts.items()
        },
        "samples": sum(view.sample_outcomes.values()),
        "outcomes": dict(view.sample_outcomes),
        "states": len(view.states),
        "rollbacks": result.rollbacks,
        "tokens": result.tokens_generated,
    }


def candidates_rows(view: SearchView) -> list[list]:
    """The candidates table (one row per candidate), as plain values."""
    task = get_task(view.task_name)
    rows = []
    for i, (c, verdict, outcome) in enumerate(zip(view.result.candidates, view.verdicts, view.outcomes)):
        rows.append(
            [i, "yes" if i == view.result.chosen_index else "", c.text, outcome]
            + [("correct" if verdict[m].correct else verdict[m].reason) for m in task.modes]
            + [c.count, round(c.mean_logprob, 4), round(c.backtrack_value, 4), round(c.score, 4), c.round]
        )
    return rows


def candidates_headers(task_name: str) -> list[str]:
    modes = get_task(task_name).modes
    return ["#", "chosen", "text", "ended"] + [f"{m} checker" for m in modes] + [
        "count", "mean log-prob", "backtrack value", "score", "round"]  # fmt: skip
