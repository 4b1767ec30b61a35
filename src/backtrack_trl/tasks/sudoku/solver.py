"""Exact Sudoku solver on bitmasks, and the "most constrained cell first" step path used as training answers.

Each row, column and box keeps a bitmask of the values it holds (bit ``v`` for value ``v``); the candidates of an empty
cell are the values in none of its three masks. The search fills the empty cell with the fewest candidates first
(ties: the first in row-major order), which makes 9x9 puzzles take milliseconds in pure Python.

Usage:

```python
import random

from backtrack_trl.tasks.sudoku.format import SudokuProblem, parse_grid
from backtrack_trl.tasks.sudoku.solver import count_solutions, random_solution, solve_grid, solve_path

problem = parse_grid("1.3./..4./.1../3...")
assert count_solutions(problem.grid, 4) == 1
solution = solve_grid(problem.grid, 4)
path = solve_path(problem)  # one Step per empty cell, the most constrained cell first
assert all(solution[step.index(4)] == step.value for step in path)
assert count_solutions(random_solution(9, random.Random(0)), 9) == 1
```
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from backtrack_trl.tasks.sudoku.format import Step, SudokuProblem, geometry


__all__ = [
    "all_solution_grids",
    "candidates",
    "count_solutions",
    "grid_after",
    "masks",
    "placement_error",
    "random_solution",
    "solve_grid",
    "solve_path",
]


def _full(size: int) -> int:
    """The mask of all values 1..size (bit 0 unused)."""
    return ((1 << size) - 1) << 1


def masks(grid: Sequence[int], size: int) -> tuple[list[int], list[int], list[int]] | None:
    """``(rows, cols, boxes)`` value masks of ``grid``; None if a value repeats in a row, column or box."""
    rows, cols, boxes = [0] * size, [0] * size, [0] * size
    geo = geometry(size)
    for index, value in enumerate(grid):
        if value:
            r, c, b = geo[index]
            bit = 1 << value
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return None
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    return rows, cols, boxes


def candidates(grid: Sequence[int], size: int) -> dict[int, int]:
    """``{cell index: candidate mask}`` of every empty cell of a conflict-free ``grid`` (ValueError otherwise)."""
    state = masks(grid, size)
    if state is None:
        raise ValueError(f"The {size}x{size} grid {tuple(grid)} repeats a value in a row, column or box.")
    rows, cols, boxes = state
    full, geo = _full(size), geometry(size)
    result = {}
    for index, value in enumerate(grid):
        if not value:
            r, c, b = geo[index]
            result[index] = full & ~(rows[r] | cols[c] | boxes[b])
    return result


def _search(grid, size, rows, cols, boxes, empties, limit, found, rng) -> int:
    """Count completions of ``grid`` up to ``limit`` (appending them to ``found`` if it is a list); restores state."""
    if not empties:
        if found is not None:
            found.append(tuple(grid))
        return 1
    geo, full = geometry(size), _full(size)
    best_pos, best_mask, best_count = -1, 0, size + 1
    for pos, index in enumerate(empties):
        r, c, b = geo[index]
        mask = full & ~(rows[r] | cols[c] | boxes[b])
        count = mask.bit_count()
        if count < best_count:
            best_pos, best_mask, best_count = pos, mask, count
            if count <= 1:
                break
    if best_count == 0:
        return 0
    index = empties.pop(best_pos)
    r, c, b = geo[index]
    values = [v for v in range(1, size + 1) if best_mask >> v & 1]
    if rng is not None:
        rng.shuffle(values)
    total = 0
    for value in values:
        bit = 1 << value
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        grid[index] = value
        total += _search(grid, size, rows, cols, boxes, empties, limit - total, found, rng)
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
        if total >= limit:
            break
    grid[index] = 0
    empties.insert(best_pos, index)
    return total


def _run(grid: Sequence[int], size: int, limit: float, found, rng=None) -> int:
    state = masks(grid, size)
    if state is None:
        return 0
    cells = list(grid)
    empties = [i for i, v in enumerate(cells) if not v]
    return _search(cells, size, *state, empties, limit, found, rng)


def count_solutions(grid: Sequence[int], size: int, limit: int = 2) -> int:
    """How many completions ``grid`` has, counting no further than ``limit`` (0 for a grid that breaks a rule)."""
    return _run(grid, size, limit, None)


def solve_grid(grid: Sequence[int], size: int) -> tuple[int, ...] | None:
    """A completion of ``grid`` (the unique one for a proper puzzle: the first the search finds otherwise); None if
    there is none."""
    found: list = []
    _run(grid, size, 1, found)
    return found[0] if found else None


def random_solution(size: int, rng: random.Random) -> tuple[int, ...]:
    """A random complete grid: a backtracking fill of the empty grid trying the candidates in a random order."""
    found: list = []
    _run([0] * (size * size), size, 1, found, rng)
    return found[0]


@functools.lru_cache(maxsize=None)
def all_solution_grids(size: int) -> tuple[tuple[int, ...], ...]:
    """Every complete grid of ``size`` (288 for 4x4; only feasible for 4x4)."""
    if size != 4:
        raise ValueError(f"all_solution_grids enumerates 4x4 grids only ({size}x{size} has far too many).")
    found: list = []
    _run([0] * 16, 4, float("inf"), found)
    return tuple(found)


def placement_error(grid: Sequence[int], size: int, step: Step) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``step`` is illegal on ``grid`` (reasons ``out_of_range``, ``filled_cell``,
    ``rule_violation``, as the checker names them); None when it is legal."""
    if not (1 <= step.row <= size and 1 <= step.col <= size and 1 <= step.value <= size):
        return "out_of_range", f"rows, columns and values are 1..{size}"
    index = step.index(size)
    if grid[index]:
        return "filled_cell", f"r{step.row}c{step.col} already holds {grid[index]}"
    geo = geometry(size)
    for axis, unit in enumerate(("row", "column", "box")):
        number = geo[index][axis]
        if any(value == step.value and geo[i][axis] == number for i, value in enumerate(grid)):
            return "rule_violation", f"{step.value} is already in {unit} {number + 1}"
    return None


def grid_after(problem: SudokuProblem, steps: Sequence[Step]) -> list[int] | None:
    """The grid after ``steps``; None if a step is illegal (see :func:`placement_error`)."""
    grid = list(problem.grid)
    for step in steps:
        if placement_error(grid, problem.size, step) is not None:
            return None
        grid[step.index(problem.size)] = step.value
    return grid


FILL_ORDERS = ("reading", "constrained")


def solve_path(problem: SudokuProblem, rng: random.Random | None = None, order: str = "reading") -> list[Step] | None:
    """Every empty cell filled with its solution value; None if there is no solution.

    ``order="reading"`` (the task's paths): the empty cells in reading order (row by row), so the cell to fill next
    is always known and a step only has to find its value. ``order="constrained"``: the most constrained cell first
    (fewest candidates in the grid placed so far; ties drawn by ``rng``, else the first in reading order), so every
    step is as deducible as possible but the model must also find the cell (docs/results.md's Sudoku section measures
    both: tiny models trained on these paths wrote few legal placements). Every order fills the same cells, so every
    path is optimal (equally short).
    """
    if order not in FILL_ORDERS:
        raise ValueError(f"order={order!r} is not one of {FILL_ORDERS}.")
    size = problem.size
    solution = solve_grid(problem.grid, size)
    if solution is None:
        return None
    if order == "reading":
        return [_step_at(index, size, solution[index]) for index, value in enumerate(problem.grid) if not value]
    geo, full = geometry(size), _full(size)
    grid = list(problem.grid)
    rows, cols, boxes = masks(grid, size)
    empties = [i for i, v in enumerate(grid) if not v]
    path = []
    while empties:
        counts = [(full & ~(rows[geo[i][0]] | cols[geo[i][1]] | boxes[geo[i][2]])).bit_count() for i in empties]
        fewest = min(counts)
        tied = [i for i, count in zip(empties, counts) if count == fewest]
        index = rng.choice(tied) if rng is not None else tied[0]
        empties.remove(index)
        value = solution[index]
        r, c, b = geo[index]
        bit = 1 << value
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        grid[index] = value
        path.append(Step(r + 1, c + 1, value))
    return path


def _step_at(index: int, size: int, value: int) -> Step:
    return Step(index // size + 1, index % size + 1, value)
