"""The PNG of a search: the view's size, the outcome colours drawn."""

from _viz_utils import planted_search
from PIL import Image

from backtrack_trl.viz.render_png import render_png
from backtrack_trl.viz.search_view import OUTCOMES, build_view


def test_png_has_the_view_size_and_the_outcome_colours(tmp_path):
    view = build_view(planted_search())
    path = render_png(view, tmp_path / "tree.png")
    image = Image.open(path).convert("RGB")
    assert image.size[0] >= view.width - 1 and image.size[1] >= view.height - 1
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    for outcome in ("correct", "wrong", "backtrack"):
        assert tuple(int(OUTCOMES[outcome][0][i : i + 2], 16) for i in (1, 3, 5)) in colours


def test_dollar_signs_in_a_step_are_drawn_as_text(tmp_path):
    view = build_view(planted_search())
    view.nodes[1].label = "$$ 5+3=8 $x^2$ \\frac"  # mathtext would fail on "$$" and on an unclosed "\frac"
    path = render_png(view, tmp_path / "tree.png")
    assert Image.open(path).size[0] >= view.width - 1
