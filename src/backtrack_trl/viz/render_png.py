"""A search tree drawn with matplotlib into a PNG: the same layout, colours and legend as the HTML page's SVG
(:mod:`backtrack_trl.viz.render_html`).

Usage:

```python
from backtrack_trl.viz.render_png import render_png
from backtrack_trl.viz.search_view import build_view

render_png(build_view(result), "search.png", dpi=100)  # written atomically
```
"""

from __future__ import annotations

from pathlib import Path

from backtrack_trl.atomic_io import atomic_path
from backtrack_trl.viz.search_view import (
    CHOSEN_COLOUR,
    OUTCOMES,
    PAD,
    SearchView,
    edges,
    legend,
    node_style,
    node_text,
    rollback_arcs,
)


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
    # parse_math=False: a step or prompt with "$" is text, not mathtext (a "$$" would crash the drawing).
    font = {"family": "monospace", "size": 12 * 72 / dpi, "parse_math": False}
    entries, x = legend(view)
    for left, colour, label in entries:
        ax.add_patch(FancyBboxPatch((left, 10), 14, 14, boxstyle="round,pad=0,rounding_size=3", color=colour))
        ax.text(left + 20, 21, label, **font)
    ax.add_patch(FancyBboxPatch((x, 10), 14, 14, boxstyle="round,pad=0,rounding_size=3", fill=False,
                                edgecolor=CHOSEN_COLOUR, linewidth=2))  # fmt: skip
    ax.text(x + 20, 21, "chosen answer", **font)
    curve4 = [MplPath.MOVETO] + [MplPath.CURVE4] * 3
    for edge in edges(view):
        x1, y1, x2, y2, mid = edge.x1, edge.y1, edge.x2, edge.y2, edge.mid
        curve = MplPath([(x1, y1), (mid, y1), (mid, y2), (x2, y2)], curve4)
        ax.add_patch(PathPatch(curve, fill=False, edgecolor=edge.colour, linewidth=edge.width * 72 / dpi, alpha=0.85))
    for arc in rollback_arcs(view):
        curve = MplPath([(arc.x1, arc.y1), (arc.x1, arc.bend), (arc.x2, arc.bend), (arc.x2, arc.y2)], curve4)
        ax.add_patch(PathPatch(curve, fill=False, edgecolor=OUTCOMES["backtrack"][0], linestyle="--", alpha=0.55,
                               linewidth=arc.width * 72 / dpi))  # fmt: skip
    for node in view.nodes:
        face, border, thick, text_colour = node_style(node)
        ax.add_patch(FancyBboxPatch((node.x, node.y - 9), node.width, 18, boxstyle="round,pad=0,rounding_size=4",
                                    facecolor=face, edgecolor=border, linewidth=(2.5 if thick else 1.0) * 72 / dpi))  # fmt: skip
        ax.text(node.x + PAD, node.y + 4, node_text(view, node), color=text_colour, **font)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
