"""The text frame every task shares: a question ending with ``###Response:\\n``, then one step per line, then ``Goal
Reached!`` (solved) or a line ``<backtrack>`` (the last step was wrong); and :class:`Verdict`, a checker's answer.

The decoders, the collator and the engines only rely on this frame (a step is a line), so they work for any task.

Usage:

```python
from backtrack_trl.tasks.frame import GOAL_MARKER, Verdict, clean_response

assert clean_response("3+5=8\\n8*2=16\\nGoal Reached!</s><pad>\\n").endswith(GOAL_MARKER)
verdict = Verdict(True, "correct")
```
"""

from __future__ import annotations

from dataclasses import dataclass


BACKTRACK_TOKEN = "<backtrack>"
GOAL_MARKER = "Goal Reached!"
RESPONSE_HEADER = "###Response:\n"
# Special-token texts a decode with skip_special_tokens=False may leave at the end of an answer.
_TRAILING_SPECIAL_TEXTS = ("</s>", "<pad>")


def clean_response(response: str) -> str:
    """Drop trailing whitespace and trailing ``</s>``/``<pad>`` texts (only at the very end), so every checker reads
    a decode with ``skip_special_tokens=False`` as is."""
    text = response.rstrip()
    while True:
        for special in _TRAILING_SPECIAL_TEXTS:
            if text.endswith(special):
                text = text[: -len(special)].rstrip()
                break
        else:
            return text


@dataclass(frozen=True)
class Verdict:
    """A checker's answer: ``correct``, a ``reason`` from the task's ``reasons``, and a human ``detail``."""

    correct: bool
    reason: str
    detail: str = ""
