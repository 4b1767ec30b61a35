"""A planted search and a reader of the drawn SVG, shared by the viz tests."""

from __future__ import annotations

import re

from _decoding_utils import PLANTED, PROMPT, scripted, tokenizer

from backtrack_trl.decoding import SelfBacktrackingDecoder


def planted_search(n=16, b=1):
    """The search on the planted policy (its answers are known: see _decoding_utils.PLANTED)."""
    decoder = SelfBacktrackingDecoder(scripted(PLANTED), tokenizer(), n=n, b=b, k=4, temperature=1.0, seed=0)
    return decoder.solve([PROMPT])[0]


def svg_nodes(page: str) -> list[tuple[set, str, str]]:
    """(classes, fill colour, text) of every node drawn in the page's SVG."""
    pattern = r'<g class="([^"]+)"><title>.*?</title><rect [^>]*fill="([^"]+)"[^>]*/><text [^>]*>(.*?)</text></g>'
    return [(set(c.split()), fill, text) for c, fill, text in re.findall(pattern, page, flags=re.S)]
