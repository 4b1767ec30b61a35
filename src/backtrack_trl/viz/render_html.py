"""A search tree as a self-contained HTML page: inline CSS and SVG, no scripts, no external resources; every model
text escaped (nothing in it is evaluated).

Colours: green ``Goal Reached!`` and strictly correct, orange ``Goal Reached!`` but wrong (strict checker), red
``<backtrack>`` (a dashed red arc goes from it to the state it rolled back to, when that state was kept), grey the
length limit, purple stopped (EOS) without the goal marker. Expanded states (``S<id>``) carry a thick border; the
chosen answer's path is blue; an edge's colour is the outcome of every sample through it (dark grey when they
differ), its width grows with their number. Below the tree: the states and the candidates with their scores and
both checkers' verdicts.

Usage:

```python
from backtrack_trl.viz.render_html import render_html, render_svg
from backtrack_trl.viz.search_view import build_view

page = render_html(result)  # a SearchResult, its to_dict(), or a generations row
svg = render_svg(build_view(result))  # just the tree (the demo shows it)
```
"""

from __future__ import annotations

import html

from backtrack_trl.tasks import get_task
from backtrack_trl.viz.search_view import (
    CHOSEN_COLOUR,
    OUTCOMES,
    PAD,
    Node,
    SearchView,
    build_view,
    candidates_headers,
    candidates_rows,
    edges,
    legend,
    node_style,
    node_text,
    rollback_arcs,
    summary,
)


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
    entries, x = legend(view)
    for left, colour, label in entries:
        out.append(f'<rect x="{left}" y="10" width="14" height="14" rx="3" fill="{colour}"/>')
        out.append(f'<text x="{left + 20}" y="21">{esc(label)}</text>')
    out.append(f'<rect x="{x}" y="10" width="14" height="14" rx="3" fill="none" stroke="{CHOSEN_COLOUR}" '
               f'stroke-width="3"/><text x="{x + 20}" y="21">chosen answer</text>')  # fmt: skip
    # Edges (the chosen path's last, on top), then rollback arcs, then nodes on top.
    for edge in edges(view):
        node = edge.node
        x1, y1, x2, y2, mid = edge.x1, edge.y1, edge.x2, edge.y2, edge.mid
        outcome = next(iter(node.outcomes)) if len(node.outcomes) == 1 else "mixed"
        out.append(
            f'<path class="edge outcome-{outcome}{" chosen" if node.chosen else ""}" '
            f'd="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" '
            f'stroke="{edge.colour}" stroke-width="{edge.width:.1f}" stroke-opacity="0.85"/>'
        )
    for arc in rollback_arcs(view):
        x1, y1, x2, y2, bend = arc.x1, arc.y1, arc.x2, arc.y2, arc.bend
        out.append(
            f'<path class="rollback" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{bend:.1f} {x2:.1f},{bend:.1f} {x2:.1f},{y2:.1f}" '
            f'fill="none" stroke="{OUTCOMES["backtrack"][0]}" stroke-dasharray="4 3" stroke-opacity="0.55" '
            f'stroke-width="{arc.width:.1f}"><title>{arc.count} sample(s) rolled back to S'
            f"{arc.state.state}</title></path>"
        )
    for node in view.nodes:
        fill, stroke, thick, text_colour = node_style(node)
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
            f'stroke="{stroke}" stroke-width="{3 if thick else 1}"/>'
            f'<text x="{node.x + PAD:.1f}" y="{node.y + 4:.1f}" fill="{text_colour}">{esc(node_text(view, node))}'
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
