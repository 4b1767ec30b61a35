"""See the search: one problem's self-backtracking search drawn as a tree (a self-contained HTML page and a PNG).

The tree merges the samples' lines (a trie of steps): the prompt at the root, one node per step text, every sample a
path from the root (or from the rolled-back state it was drawn from) to its end, coloured by how it ended:

- green: ``Goal Reached!`` and strictly correct; orange: ``Goal Reached!`` but wrong (strict checker);
- red: ``<backtrack>`` (a dashed red arc goes from it to the state it rolled back to, when that state was kept);
- grey: the length limit; purple: stopped (EOS) without the goal marker.

Expanded states (the root and every rolled-back state, ``S<id>``, with the round that expanded it) carry a thick
border; the chosen answer's path is blue. An edge's colour is the outcome of every sample through it (dark grey
when they differ), its width grows with their number. Below the tree: the states (parent, round, the wrong steps that
led there) and the candidates with their scores and both checkers' verdicts.

The view reads what the search records in ``SearchResult.tree`` (see
:class:`~backtrack_trl.decoding.results.SearchResult`); a result without a tree (greedy, best-of-N, an old
generations file) is drawn as its candidates from the root. Nothing in it is evaluated: all model text is escaped.

Usage:

```python
from backtrack_trl.decoding import SelfBacktrackingDecoder
from backtrack_trl.viz.search_tree import load_generation, write_search_view

decoder = SelfBacktrackingDecoder.from_pretrained("results/countdown-tiny/models/backtrack-sft", n=8, b=1)
result = decoder.solve(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"])[0]
write_search_view(result, "search.html", png="search.png")  # task: read from the prompt

result = load_generation("results/countdown-tiny/eval/backtrack/generations/test_seen/sbt_b1_n32.jsonl", index=3)
write_search_view(result, "problem3.html")
```

``recipes/visualize_search.py`` is the command-line front end; ``recipes/demo.py`` the Gradio app.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from backtrack_trl.atomic_io import atomic_path, atomic_write_text
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.tasks import BACKTRACK_TOKEN, RESPONSE_HEADER, TASKS, get_task


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
_ROW = 22
_CHAR = 7.2  # width of a character of the 12px monospace font
_PAD = 8
_GAP = 46  # horizontal gap between columns


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


def _result(result) -> SearchResult:
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
    get_task("countdown")  # loads the built-in tasks
    for name in sorted(TASKS):
        candidate = get_task(name)
        try:
            candidate.parse_prompt(prompt)
        except ValueError:
            continue
        return candidate
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
    result = _result(result)
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


def _node_text(view: SearchView, node: Node) -> str:
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
        node.width = len(_node_text(view, node)) * _CHAR + 2 * _PAD
        widths[node.depth] = max(widths.get(node.depth, 0.0), node.width)
    column_x, x = {}, 40.0
    for depth in sorted(widths):
        column_x[depth] = x
        x += widths[depth] + _GAP
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
            node.y = legend_height + _ROW * row + _ROW
            row += 1

    place(0)
    legend = sum(
        20 + len(f"{text} ({view.sample_outcomes.get(o, 0)})") * _CHAR + 24 for o, (_, text) in OUTCOMES.items()
    )
    view.width = max(x, 40 + legend + 20 + len("chosen answer") * _CHAR) + 40
    view.height = legend_height + _ROW * (row + 1) + 20


def _edge_colour(node: Node) -> str:
    return OUTCOMES[next(iter(node.outcomes))][0] if len(node.outcomes) == 1 else MIXED_COLOUR


def _edge_width(node: Node) -> float:
    """Stroke width in pixels: thicker for steps more samples took."""
    return 1.2 + 1.6 * math.log2(max(1, node.count))


def _legend(view: SearchView) -> tuple[list[tuple[float, str, str]], float]:
    """The legend's entries ``(x, colour, label)`` and the x of the final "chosen answer" entry (both renderers)."""
    entries, x = [], 40
    for outcome, (colour, text) in OUTCOMES.items():
        label = f"{text} ({view.sample_outcomes.get(outcome, 0)})"
        entries.append((x, colour, label))
        x += 20 + len(label) * _CHAR + 24
    return entries, x


def _tooltip(view: SearchView, node: Node) -> str:
    parts = [node.label]
    if node.state is not None:
        state = view.states[node.state]
        parts.append(f"state S{node.state}, expanded in round {state['round']}")
    if node.count:
        mix = ", ".join(f"{OUTCOMES[o][1]}: {n}" for o, n in node.outcomes.most_common())
        parts.append(f"{node.count} sample(s): {mix}")
        parts.append("by round: " + ", ".join(f"{r}: {n}" for r, n in sorted(node.rounds.items())))
    if node.candidate is not None:
        c = view.result.candidates[node.candidate]
        parts.append(
            f"candidate #{node.candidate}: score {c.score:.4f}, mean log-prob {c.mean_logprob:.4f}, "
            f"backtrack value {c.backtrack_value:.4f}"
        )
    return "\n".join(parts)


def render_svg(view: SearchView) -> str:
    """The tree as an inline SVG (no external resources); every model text escaped."""
    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="search-tree" width="{view.width:.0f}" '
        f'height="{view.height:.0f}" viewBox="0 0 {view.width:.0f} {view.height:.0f}" '
        'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="12">'
    ]
    # Legend.
    entries, x = _legend(view)
    for left, colour, label in entries:
        out.append(f'<rect x="{left}" y="10" width="14" height="14" rx="3" fill="{colour}"/>')
        out.append(f'<text x="{left + 20}" y="21">{esc(label)}</text>')
    out.append(f'<rect x="{x}" y="10" width="14" height="14" rx="3" fill="none" stroke="{CHOSEN_COLOUR}" '
               f'stroke-width="3"/><text x="{x + 20}" y="21">chosen answer</text>')  # fmt: skip
    nodes = view.nodes
    # Edges (the chosen path's last, on top), then rollback arcs, then nodes on top.
    for node in sorted(nodes, key=lambda node: node.chosen):
        if node.parent is None:
            continue
        parent = nodes[node.parent]
        x1, y1, x2, y2 = parent.x + parent.width, parent.y, node.x, node.y
        mid = (x1 + x2) / 2
        width = _edge_width(node)
        colour = CHOSEN_COLOUR if node.chosen else _edge_colour(node)
        outcome = next(iter(node.outcomes)) if len(node.outcomes) == 1 else "mixed"
        out.append(
            f'<path class="edge outcome-{outcome}{" chosen" if node.chosen else ""}" '
            f'd="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" '
            f'stroke="{colour}" stroke-width="{width:.1f}" stroke-opacity="0.85"/>'
        )
    for leaf_id, state_id, count in view.rollbacks:
        leaf, state = nodes[leaf_id], nodes[state_id]
        x1, y1 = leaf.x + leaf.width / 2, leaf.y + 8
        x2, y2 = state.x + state.width / 2, state.y + 8
        bend = max(y1, y2) + 14 + 4 * min(count, 5)
        out.append(
            f'<path class="rollback" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{bend:.1f} {x2:.1f},{bend:.1f} {x2:.1f},{y2:.1f}" '
            f'fill="none" stroke="{OUTCOMES["backtrack"][0]}" stroke-dasharray="4 3" stroke-opacity="0.55" '
            f'stroke-width="{1 + math.log2(count):.1f}"><title>{count} sample(s) rolled back to S'
            f"{state.state}</title></path>"
        )
    for node in nodes:
        fill, stroke, width = "#ffffff", "#90a4ae", 1
        text_colour = "#212121"
        if node.outcome is not None:
            colour = OUTCOMES[node.outcome][0]
            fill, stroke, width, text_colour = colour, colour, 1, "#ffffff"
        if node.state is not None:
            stroke, width = "#263238", 3
            fill = "#eceff1" if node.outcome is None else fill
        if node.chosen:
            stroke, width = CHOSEN_COLOUR, 3
        classes = ["node"]
        if node.outcome is not None:
            classes.append(f"outcome-{node.outcome}")
        if node.state is not None:
            classes.append("state")
        if node.chosen:
            classes.append("chosen")
        y = node.y - 9
        out.append(
            f'<g class="{" ".join(classes)}"><title>{esc(_tooltip(view, node))}</title>'
            f'<rect x="{node.x:.1f}" y="{y:.1f}" width="{node.width:.1f}" height="18" rx="4" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width}"/>'
            f'<text x="{node.x + _PAD:.1f}" y="{node.y + 4:.1f}" fill="{text_colour}">{esc(_node_text(view, node))}'
            "</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #212121; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
code, pre, td.text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
pre { background: #f5f5f5; padding: 8px; white-space: pre-wrap; }
.tree { overflow: auto; border: 1px solid #cfd8dc; max-height: 80vh; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #cfd8dc; padding: 3px 6px; vertical-align: top; }
td.text { white-space: pre; }
tr.chosen { outline: 3px solid #1565c0; }
.badge { display: inline-block; padding: 1px 6px; border-radius: 4px; color: #fff; font-size: 12px; }
.outcome-correct.badge { background: #2e7d32; } .outcome-wrong.badge { background: #ef6c00; }
.outcome-backtrack.badge { background: #c62828; } .outcome-length.badge { background: #757575; }
.outcome-eos.badge { background: #6a1b9a; }
.ok { color: #2e7d32; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
"""


def _verdict_html(verdict) -> str:
    word = "correct" if verdict.correct else verdict.reason.replace("_", " ")
    return f'<span class="{"ok" if verdict.correct else "bad"}">{html.escape(word)}</span>'


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


def render_html(result, task=None, title: str | None = None, view: SearchView | None = None) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no external resources) of one search."""
    view = view or build_view(result, task)
    result, esc = view.result, html.escape
    info = summary(view)
    task_obj = get_task(view.task_name)
    title = title or f"Search tree: {view.question}"
    verdicts = " &middot; ".join(
        f"{esc(mode)} checker: {_verdict_html(task_obj.check(task_obj.parse_prompt(result.prompt), result.completion, mode))}"
        for mode in task_obj.modes
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Task <code>{esc(view.task_name)}</code>, decoder <code>{esc(result.method or '-')}</code>: "
        f"{info['samples']} samples from {info['states']} expanded state(s), {result.rollbacks} rollback(s), "
        f"{result.tokens_generated} tokens sampled, {1000 * result.wall_time:.1f} ms.</p>",
        f"<h2>Chosen answer</h2><pre>{esc(result.completion) or '(none)'}</pre><p>{verdicts}</p>",
        '<h2>Search tree</h2><div class="tree">',
        render_svg(view),
        "</div>",
        "<p>Nodes are steps (lines); a path from the root is a sample. S&lt;id&gt;: an expanded state (thick border). "
        "Dashed red arcs: rollbacks from a <code>&lt;backtrack&gt;</code> to the state it returned to. Hover a node "
        "for its samples by outcome and round.</p>",
        "<h2>Expanded states</h2><table><tr><th>State</th><th>Parent</th><th>Expanded in round</th>"
        "<th>Prefix</th><th>Wrong steps that led there</th></tr>",
    ]
    for state in view.states:
        parent = "-" if state["parent"] is None else f"S{state['parent']}"
        wrong = "\n".join(step.rstrip("\n") for step in state.get("wrong_steps", [])) or "-"
        prefix = state["prefix"] or "(the prompt)"
        parts.append(
            f'<tr><td>S{state["id"]}</td><td>{parent}</td><td>{state["round"]}</td><td class="text">'
            f'{esc(prefix)}</td><td class="text">{esc(wrong)}</td></tr>'
        )
    parts.append("</table><h2>Candidates</h2><table><tr>")
    parts += [f"<th>{esc(h)}</th>" for h in candidates_headers(view.task_name)]
    parts.append("</tr>")
    for row in candidates_rows(view):
        chosen = ' class="chosen"' if row[1] else ""
        cells = [f"<td>{row[0]}</td><td>{row[1]}</td>", f'<td class="text">{esc(row[2])}</td>',
                 f'<td><span class="badge outcome-{row[3]}">{esc(row[3])}</span></td>']  # fmt: skip
        cells += [f"<td>{esc(str(value))}</td>" for value in row[4:]]
        parts.append(f"<tr{chosen}>" + "".join(cells) + "</tr>")
    parts.append(f"</table><h2>Prompt</h2><pre>{esc(result.prompt)}</pre></body></html>")
    return "\n".join(parts) + "\n"


def render_png(view: SearchView, path: str | Path, dpi: int = 100) -> Path:
    """The same tree drawn with matplotlib into a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, PathPatch
    from matplotlib.path import Path as MplPath

    width, height = view.width, view.height
    fig = plt.figure(figsize=(max(4.0, width / dpi), max(2.0, height / dpi)), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    font = {"family": "monospace", "size": 12 * 72 / dpi}
    entries, x = _legend(view)
    for left, colour, label in entries:
        ax.add_patch(FancyBboxPatch((left, 10), 14, 14, boxstyle="round,pad=0,rounding_size=3", color=colour))
        ax.text(left + 20, 21, label, **font)
    ax.add_patch(FancyBboxPatch((x, 10), 14, 14, boxstyle="round,pad=0,rounding_size=3", fill=False,
                                edgecolor=CHOSEN_COLOUR, linewidth=2))  # fmt: skip
    ax.text(x + 20, 21, "chosen answer", **font)
    nodes = view.nodes
    for node in sorted(nodes, key=lambda node: node.chosen):
        if node.parent is None:
            continue
        parent = nodes[node.parent]
        x1, y1, x2, y2 = parent.x + parent.width, parent.y, node.x, node.y
        mid = (x1 + x2) / 2
        curve = MplPath([(x1, y1), (mid, y1), (mid, y2), (x2, y2)], [MplPath.MOVETO] + [MplPath.CURVE4] * 3)
        colour = CHOSEN_COLOUR if node.chosen else _edge_colour(node)
        lw = _edge_width(node) * 72 / dpi
        ax.add_patch(PathPatch(curve, fill=False, edgecolor=colour, linewidth=lw, alpha=0.85))
    for leaf_id, state_id, count in view.rollbacks:
        leaf, state = nodes[leaf_id], nodes[state_id]
        x1, y1, x2, y2 = leaf.x + leaf.width / 2, leaf.y + 8, state.x + state.width / 2, state.y + 8
        bend = max(y1, y2) + 14 + 4 * min(count, 5)
        curve = MplPath([(x1, y1), (x1, bend), (x2, bend), (x2, y2)], [MplPath.MOVETO] + [MplPath.CURVE4] * 3)
        ax.add_patch(PathPatch(curve, fill=False, edgecolor=OUTCOMES["backtrack"][0], linestyle="--", alpha=0.55,
                               linewidth=(1 + math.log2(count)) * 72 / dpi))  # fmt: skip
    for node in nodes:
        face, edge, lw, text_colour = "#ffffff", "#90a4ae", 1.0, "#212121"
        if node.outcome is not None:
            face = edge = OUTCOMES[node.outcome][0]
            text_colour = "#ffffff"
        if node.state is not None:
            edge, lw = "#263238", 2.5
            face = "#eceff1" if node.outcome is None else face
        if node.chosen:
            edge, lw = CHOSEN_COLOUR, 2.5
        ax.add_patch(FancyBboxPatch((node.x, node.y - 9), node.width, 18, boxstyle="round,pad=0,rounding_size=4",
                                    facecolor=face, edgecolor=edge, linewidth=lw * 72 / dpi))  # fmt: skip
        ax.text(node.x + _PAD, node.y + 4, _node_text(view, node), color=text_colour, **font)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def write_search_view(result, html_path: str | Path, png: str | Path | None = None, task=None,
                      title: str | None = None) -> SearchView:  # fmt: skip
    """Write the HTML page (and the PNG when ``png`` is given) of one search, atomically; returns the view."""
    view = build_view(result, task)
    atomic_write_text(html_path, render_html(result, title=title, view=view))
    if png is not None:
        render_png(view, png)
    return view


def load_generation(path: str | Path, index: int) -> SearchResult:
    """Problem ``index`` (its ``index`` column) of an evaluation's generations file (``.jsonl`` or ``.parquet``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--generations {str(path)!r}: no such file. Evaluation writes them under "
            "<output_dir>/generations/<split>/<decoder>.jsonl (recipes/evaluate_decoders.py)."
        )
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for position, row in enumerate(rows):
        if row.get("index", position) == index:
            return _result(row)
    raise ValueError(f"--index {index}: {path} has problems 0..{len(rows) - 1}; pick one of those.")


def pick_examples(path: str | Path) -> dict[str, int]:
    """Indices of a solved and an unsolved problem (strict checker) of a generations file, preferring ones whose
    search rolled back (the more telling trees); missing kinds are left out."""
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    picked: dict[str, int] = {}
    for kind, solved in (("solved", True), ("unsolved", False)):
        matching = [row for row in rows if bool(row.get("correct_strict")) == solved]
        if matching:
            best = max(matching, key=lambda row: (row.get("rollbacks", 0) > 0, -row.get("index", 0)))
            picked[kind] = best.get("index", rows.index(best))
    return picked


@dataclass
class VisualizeArguments:
    """Arguments of ``recipes/visualize_search.py`` (also the YAML keys of ``--config``)."""

    model: str | None = field(default=None, metadata={"help": "Model folder to search with (a backtrack model)."})
    numbers: list[int] | None = field(default=None, metadata={"help": "Countdown numbers, e.g. --numbers 3 5 2."})
    target: int | None = field(default=None, metadata={"help": "Countdown target, e.g. --target 16."})
    prompt: str | None = field(default=None, metadata={"help": "A prompt of any task (instead of numbers/target)."})
    generations: str | None = field(
        default=None, metadata={"help": "Draw a recorded search: an evaluation's generations .jsonl/.parquet file."}
    )
    index: int = field(default=0, metadata={"help": "Problem index in --generations."})
    task: str | None = field(default=None, metadata={"help": "Task name (default: read from the prompt)."})
    n: int = field(default=8, metadata={"help": "Samples per expanded state (N)."})
    b: int = field(default=1, metadata={"help": "Backtracking rounds (b)."})
    selection: str = field(default="likelihood", metadata={"help": "likelihood | backtrack_value | combined | vote."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    max_new_tokens: int = field(default=64, metadata={"help": "Response length limit in tokens."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output: str = field(default="search_tree.html", metadata={"help": "HTML page to write."})
    png: str | None = field(default=None, metadata={"help": "PNG to write (default: the HTML path with .png)."})

    def __post_init__(self):
        sources = [self.model is not None, self.generations is not None]
        if sum(sources) != 1:
            raise ValueError(
                "Give either --model <folder> with a problem (--numbers ... --target T, or --prompt), or "
                "--generations <file> --index k to draw a recorded search."
            )
        if self.model is not None and self.prompt is None and (self.numbers is None or self.target is None):
            raise ValueError(
                "--model needs a problem: --numbers 3 5 2 --target 16 (Countdown) or --prompt '<prompt>'."
            )


def problem_prompt(numbers=None, target=None, prompt=None, task=None) -> str:
    """The prompt of a Countdown problem (``numbers``, ``target``) or a prompt of any task, validated."""
    if prompt is not None:
        task_of(prompt, task).parse_prompt(prompt)  # a ValueError naming the expected format
        return prompt
    task = get_task(task or "countdown")
    if set(task.problem_columns) != {"numbers", "target"}:
        raise ValueError(f"--numbers/--target make Countdown problems; task {task.name!r} needs --prompt.")
    return task.format_prompt(task.problem_from_row({"numbers": list(numbers), "target": int(target)}))


def visualize_search(args: VisualizeArguments) -> SearchView:
    """Run the search on one problem (or read a recorded one) and write its HTML page and PNG."""
    if args.generations is not None:
        result = load_generation(args.generations, args.index)
    else:
        from backtrack_trl.decoding import SelfBacktrackingDecoder

        prompt = problem_prompt(args.numbers, args.target, args.prompt, args.task)
        task = task_of(prompt, args.task)
        decoder = SelfBacktrackingDecoder.from_pretrained(
            args.model, device="cpu", n=args.n, b=args.b, selection=args.selection, temperature=args.temperature,
            max_new_tokens=args.max_new_tokens, seed=args.seed, task=task,
        )  # fmt: skip
        result = decoder.solve([prompt])[0]
    png = args.png or str(Path(args.output).with_suffix(".png"))
    view = write_search_view(result, args.output, png=png, task=args.task)
    info = summary(view)
    verdicts = ", ".join(
        f"{mode}: {'correct' if v['correct'] else v['reason']}" for mode, v in info["verdicts"].items()
    )
    print(f"{info['question']}: {info['samples']} samples, {info['states']} states, {info['rollbacks']} rollbacks; "
          f"answer {info['answer']!r} ({verdicts})\nwrote {args.output} and {png}")  # fmt: skip
    return view
