"""The three kinds of single wrong placements of Sudoku backtrack examples (equal weights by default).

Given a puzzle and a correct prefix (placements of solution values), each maker writes one wrong next placement,
drawn uniformly (from ``rng``) among the placements of its kind; None when there is none. The task's paths fill the
cells in reading order, so the first two kinds put a wrong value in the cell the path fills next (the mistake a model
trained on those paths can make):

- **exploration**: a legal value (not yet in the cell's row, column or box) other than the cell's solution value, so
  the puzzle has no solution any more: the kind of guess a search has to undo.
- **rule_violation**: a value already in the cell's row, column or box.
- **filled_cell**: a placement on a given or an already filled cell, of a value other than the one there.

Usage:

```python
import random

from backtrack_trl.tasks.sudoku.error_steps import make_error
from backtrack_trl.tasks.sudoku.format import parse_grid
from backtrack_trl.tasks.sudoku.solver import grid_after, solve_path

problem = parse_grid("1.3./..4./.1../3...")
path = solve_path(problem)
wrong = make_error("exploration", problem, [], random.Random(0))  # r1c2=2
assert grid_after(problem, [wrong]) is not None  # legal, but leads nowhere
assert make_error("exploration", problem, path[:2], random.Random(0)) is None  # no legal wrong value there
```
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from backtrack_trl.tasks.derived import dispatch_error
from backtrack_trl.tasks.sudoku.format import Step, SudokuProblem
from backtrack_trl.tasks.sudoku.solver import candidates, count_solutions, grid_after, solve_grid


__all__ = [
    "DEFAULT_ERROR_MIX",
    "ERROR_TYPES",
    "make_error",
    "make_exploration_error",
    "make_filled_cell_error",
    "make_rule_violation",
]

ERROR_TYPES = ("exploration", "rule_violation", "filled_cell")
DEFAULT_ERROR_MIX = (1.0, 1.0, 1.0)


def _grid(problem: SudokuProblem, prefix: Sequence[Step]) -> list[int]:
    grid = grid_after(problem, prefix)
    if grid is None:
        raise ValueError(f"The prefix {[str(s) for s in prefix]} has an illegal placement; pass correct steps only.")
    return grid


def _next_cell(grid: list[int], size: int) -> dict[int, int]:
    """``{index: candidate mask}`` of the first empty cell in reading order (the one the task's path fills next)."""
    empty = candidates(grid, size)
    return {min(empty): empty[min(empty)]} if empty else {}


def _step(index: int, size: int, value: int) -> Step:
    return Step(index // size + 1, index % size + 1, value)


def make_exploration_error(problem: SudokuProblem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """A legal placement after which the puzzle has no solution (a legal value other than the solution value)."""
    size = problem.size
    grid = _grid(problem, prefix)
    solution = solve_grid(grid, size)
    if solution is None:
        return None
    options = [
        (index, value)
        for index, mask in _next_cell(grid, size).items()
        for value in range(1, size + 1)
        if mask >> value & 1 and value != solution[index]
    ]
    while options:  # one draw for a proper puzzle; a puzzle with several solutions may need more
        index, value = options.pop(rng.randrange(len(options)))
        grid[index] = value
        dead = count_solutions(grid, size, 1) == 0
        grid[index] = 0
        if dead:
            return _step(index, size, value)
    return None


def make_rule_violation(problem: SudokuProblem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """A placement on an empty cell of a value already in its row, column or box."""
    size = problem.size
    grid = _grid(problem, prefix)
    options = [
        (index, value)
        for index, mask in _next_cell(grid, size).items()
        for value in range(1, size + 1)
        if not mask >> value & 1
    ]
    if not options:
        return None
    index, value = rng.choice(options)
    return _step(index, size, value)


def make_filled_cell_error(problem: SudokuProblem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """A placement on a given or already filled cell, of a value different from the one there."""
    size = problem.size
    grid = _grid(problem, prefix)
    filled = [index for index, value in enumerate(grid) if value]
    if not filled:
        return None
    index = rng.choice(filled)
    value = rng.choice([v for v in range(1, size + 1) if v != grid[index]])
    return _step(index, size, value)


# The makers, in the order of ERROR_TYPES.
_MAKERS = dict(zip(ERROR_TYPES, (make_exploration_error, make_rule_violation, make_filled_cell_error)))


def make_error(error_type: str, problem: SudokuProblem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """Dispatch to the maker of ``error_type`` (one of :data:`ERROR_TYPES`)."""
    return dispatch_error(_MAKERS, error_type, problem, prefix, rng)
