"""Backtrack rows from a model's own mistakes: where its sampled answer first goes wrong, ``<backtrack>``.

The synthetic backtrack rows of the dataset builder teach the model to back off from errors the *generator* makes.
The errors that matter at search time are the model's own: a step with wrong arithmetic, an operand it does not
have, a final step that forges the target, or honest steps that miss the target followed by a false ``Goal
Reached!``. For each wrong answer a search produced, this module finds the first line the strict checker rejects
(or, when every step is legal, the last step before the false goal claim) and writes a backtrack row: the model's
own prefix, that line (masked by the collator like any wrong step), then ``<backtrack>``.

Error types of these rows (the ``error_type`` column): ``own_miss`` (legal steps, false goal claim: the last step is
the wrong one), ``own_forged_last`` (the last step is the first illegal line, e.g. it copies the target),
``own_<reason>`` (an earlier illegal line, ``<reason>`` from the strict checker, e.g. ``own_incorrect_result``).
A first illegal line that is not a step at all (unparsable text) gives no row.

Usage:

```python
from backtrack_trl.study.mistakes import mistake_row
from backtrack_trl.tasks import get_task

task = get_task("countdown")
problem = task.problem_from_row({"numbers": [3, 5, 2], "target": 16})
row = mistake_row(task, problem, "3+5=8\\n8*2=17\\nGoal Reached!")
print(row["error_type"], repr(row["prefix"]), repr(row["wrong_step"]))  # own_forged_last '3+5=8\\n' '8*2=17\\n'
```
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from backtrack_trl.tasks import BACKTRACK_TOKEN, GOAL_MARKER
from backtrack_trl.tasks.wrong_steps import first_wrong_line


#: Error types written here; the rows' wrong step is masked unless SFT's ``trained_error_types`` names them.
MISS = "own_miss"
FORGED_LAST = "own_forged_last"


def _step_lines(text: str) -> list[str] | None:
    """The lines before the goal marker of an answer that claims the goal, else None (it stopped or gave up)."""
    lines = text.rstrip().split("\n")
    if not lines or lines[-1] != GOAL_MARKER or BACKTRACK_TOKEN in text:
        return None
    return lines[:-1]


def mistake_row(task, problem, text: str) -> dict[str, Any] | None:
    """The backtrack row that teaches ``<backtrack>`` at the first wrong line of ``text``, or None.

    None when the answer is correct, gave up (has ``<backtrack>``), stopped without claiming the goal, or its first
    wrong line does not parse as a step."""
    lines = _step_lines(text)
    if not lines or task.check(problem, text, mode="strict").correct:
        return None
    wrong = first_wrong_line(task, problem, lines)
    if wrong is None:
        index, error_type = len(lines) - 1, MISS
    else:
        index, reason = wrong
        error_type = FORGED_LAST if index == len(lines) - 1 else f"own_{reason}"
    steps = [task.parse_step(line) for line in lines[: index + 1]]
    if any(step is None for step in steps):
        return None
    return task.backtrack_row(problem, steps[:-1], steps[-1], error_type)


def mistake_rows(
    task, problem, texts: Iterable[str], max_rows: int | None = None, forged_weight: int = 1
) -> list[dict[str, Any]]:
    """Distinct mistake rows of one problem's answers (at most ``max_rows``), in the answers' order; a
    ``own_forged_last`` row is repeated ``forged_weight`` times (the search's likelihood ranks forged answers first,
    so they are the mistakes worth most)."""
    rows, seen = [], set()
    for text in texts:
        row = mistake_row(task, problem, text)
        if row is None or row["completion"] in seen:
            continue
        seen.add(row["completion"])
        rows.extend([row] * (forged_weight if row["error_type"] == FORGED_LAST else 1))
        if max_rows is not None and len(seen) >= max_rows:
            break
    return rows


def count_error_types(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``{error_type: rows}``, most common first (the harvest's card and stats)."""
    return dict(Counter(row["error_type"] for row in rows).most_common())
