"""The strict checker of Sudoku answers (the only mode).

It takes the problem and the *response* (the text after ``###Response:\\n``) and returns a
:class:`~backtrack_trl.tasks.base.Verdict` whose ``reason`` is one of :data:`REASONS`. Nothing is ever evaluated.

Input tolerance: trailing whitespace and trailing ``</s>`` / ``<pad>`` texts at the very end are ignored (the same
``clean_response`` as every task's), so a decode with ``skip_special_tokens=False`` can be passed as is.

The response must be placements ``r<row>c<col>=<value>``, one per line, then the line ``Goal Reached!`` with nothing
after it. Lines are checked in order and the first failure decides the reason:

1. ``invalid_format``: a line that is neither a placement nor a marker (spaces, empty line, text), or anything after
   the goal marker.
2. ``out_of_range``: a row, column or value outside 1..size (``r5c1=2`` on a 4x4 grid).
3. ``filled_cell``: a placement on a given or on a cell placed earlier in the answer (overwriting or refilling it).
4. ``rule_violation``: the value is already in the cell's row, column or box.
5. ``not_reached_goal``: the placements are fine but the answer stops (no goal marker) or gives up (a
   ``<backtrack>`` line).
6. ``incomplete``: ``Goal Reached!`` while cells are still empty.

``correct`` is returned only at ``Goal Reached!`` on a full grid. As every placement was checked against its row,
column and box, a full grid is then a solution of the puzzle: *the* solution, the generator's puzzles having one.

Usage:

```python
from backtrack_trl.tasks.sudoku.checkers import check
from backtrack_trl.tasks.sudoku.format import parse_grid

problem = parse_grid("12../34../..../....")
assert check(problem, "r3c1=2").reason == "not_reached_goal"
assert check(problem, "r1c1=2\\nGoal Reached!").reason == "filled_cell"
assert check(problem, "r1c3=1\\nGoal Reached!").reason == "rule_violation"
assert check(problem, "r1c3=3\\nGoal Reached!").reason == "incomplete"
```
"""

from __future__ import annotations

from collections.abc import Sequence

from backtrack_trl.tasks.frame import Verdict, clean_response
from backtrack_trl.tasks.sudoku.format import BACKTRACK_TOKEN, GOAL_MARKER, SudokuProblem, parse_step
from backtrack_trl.tasks.sudoku.solver import placement_error, solve_grid


__all__ = ["MODES", "REASONS", "Verdict", "answer_placements", "check", "check_strict", "clean_response"]

REASONS = (
    "correct",
    "not_reached_goal",
    "incomplete",
    "rule_violation",
    "filled_cell",
    "out_of_range",
    "invalid_format",
)
MODES = ("strict",)


def check_strict(problem: SudokuProblem, response: str) -> Verdict:
    """Strict check (see the module docstring for the rules and the precedence of the reasons)."""
    text = clean_response(response)
    lines = text.split("\n") if text else []  # an empty answer simply stops: not_reached_goal
    size = problem.size
    grid = list(problem.grid)
    given = [bool(v) for v in grid]
    for index, line in enumerate(lines):
        if line == GOAL_MARKER:
            if index + 1 < len(lines):
                return Verdict(False, "invalid_format", f"text after {GOAL_MARKER!r}: {lines[index + 1]!r}")
            empty = grid.count(0)
            if empty:
                return Verdict(False, "incomplete", f"{empty} cells still empty at {GOAL_MARKER!r}")
            return Verdict(True, "correct", "")
        if line == BACKTRACK_TOKEN:
            return Verdict(False, "not_reached_goal", f"line {index} is {BACKTRACK_TOKEN}: the answer gave up")
        step = parse_step(line)
        if step is None:
            return Verdict(False, "invalid_format", f"line {index} {line!r} is not 'r<row>c<col>=<value>' or a marker")
        error = placement_error(grid, size, step)
        if error is not None:
            reason, detail = error
            if reason == "filled_cell" and given[step.index(size)]:
                detail += " (a given)"
            return Verdict(False, reason, f"line {index} {line!r}: {detail}")
        grid[step.index(size)] = step.value
    return Verdict(False, "not_reached_goal", f"no {GOAL_MARKER!r} line ({grid.count(0)} cells still empty)")


def check(problem: SudokuProblem, response: str, mode: str = "strict") -> Verdict:
    """Check ``response`` (text after ``###Response:\\n``) for ``problem``; ``mode`` must be ``"strict"``."""
    if mode != "strict":
        raise ValueError(f"Unknown checker mode {mode!r} for Sudoku; use one of {MODES}.")
    return check_strict(problem, response)


def answer_placements(problems: Sequence[SudokuProblem], completions: Sequence[str]) -> dict[str, float | None]:
    """Shares over the placements written before the first marker of every answer: ``step_legal`` (legal where it
    was written, illegal ones being skipped), ``step_right`` (the cell's solution value); and over answers:
    ``grid_filled`` (the legal placements fill the grid). None where there is nothing to count."""
    steps = legal = right = filled = 0
    for problem, completion in zip(problems, completions, strict=True):
        size = problem.size
        grid = list(problem.grid)
        solution = solve_grid(grid, size)
        for line in clean_response(completion).split("\n"):
            if line in (GOAL_MARKER, BACKTRACK_TOKEN):
                break
            step = parse_step(line)
            if step is None:
                continue
            steps += 1
            if placement_error(grid, size, step) is None:
                legal += 1
                right += solution is not None and solution[step.index(size)] == step.value
                grid[step.index(size)] = step.value
        filled += 0 not in grid
    return {
        "step_legal": legal / steps if steps else None,
        "step_right": right / steps if steps else None,
        "grid_filled": filled / len(problems) if problems else None,
    }
