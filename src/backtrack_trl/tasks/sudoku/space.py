"""How many distinct 4x4 puzzles exist: the generator's problem space, counted exactly so that a request for more
fails at once with the counts instead of drawing until a bound of failed draws.

A puzzle is a subset of a solution grid's cells with exactly one solution, and carving (see ``generator``) can reach
every such subset (emptying the other cells first keeps a superset of it, hence unique, at every step), so the
distinct puzzles of a split are the unique-solution subsets of its grids' cells with ``min_givens..max_givens``
givens. The count of one grid does not change under the symmetries of the puzzle (relabelling the values, swapping
rows within a band, the two bands, columns within a stack, the two stacks, transposing): they map unique puzzles to
unique puzzles. The 288 4x4 grids form two classes under them (96 and 192 grids), so two rows of
counts, brute-forced once (:data:`UNIQUE_PUZZLES`; ``tests/tasks/test_sudoku.py`` checks them), cover every grid.

Usage:

```python
from backtrack_trl.tasks.sudoku.solver import all_solution_grids
from backtrack_trl.tasks.sudoku.space import grid_class, unique_puzzles

grid = all_solution_grids(4)[0]
print(grid_class(grid), unique_puzzles(grid, 4, 4))  # 0 12: this grid has 12 puzzles with 4 givens
```
"""

from __future__ import annotations

import functools
from collections.abc import Sequence


__all__ = ["CLASS_GRIDS", "UNIQUE_PUZZLES", "grid_class", "unique_puzzles"]

#: The canonical grid of each class: the smallest of its symmetric images, values relabelled so row 1 reads 1 2 3 4.
CLASS_GRIDS = (
    (1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1),  # 96 grids
    (1, 2, 3, 4, 3, 4, 1, 2, 2, 3, 4, 1, 4, 1, 2, 3),  # 192 grids
)
#: UNIQUE_PUZZLES[c][k]: subsets of k cells of a class-c grid whose givens have exactly one solution (k = 0..16).
UNIQUE_PUZZLES = (
    (0, 0, 0, 0, 12, 400, 2208, 5760, 9064, 9696, 7480, 4272, 1812, 560, 120, 16, 1),
    (0, 0, 0, 0, 128, 1280, 4320, 8272, 10890, 10560, 7744, 4320, 1816, 560, 120, 16, 1),
)


@functools.cache
def _cell_symmetries() -> tuple[tuple[int, ...], ...]:
    """The 128 cell permutations of a 4x4 grid that keep rows, columns and boxes (as lists of source cells)."""
    orders = []  # the 8 orders of the rows (or columns) that keep the bands (or stacks)
    for first in (0, 1):
        for inner_a in ((0, 1), (1, 0)):
            for inner_b in ((0, 1), (1, 0)):
                bands = ((0, 1), (2, 3)) if first == 0 else ((2, 3), (0, 1))
                orders.append(tuple(bands[0][i] for i in inner_a) + tuple(bands[1][i] for i in inner_b))
    symmetries = []
    for rows in orders:
        for cols in orders:
            symmetries.append(tuple(rows[r] * 4 + cols[c] for r in range(4) for c in range(4)))
            symmetries.append(tuple(cols[c] * 4 + rows[r] for r in range(4) for c in range(4)))  # transposed
    return tuple(symmetries)


def _relabelled(grid: Sequence[int]) -> tuple[int, ...]:
    names = {value: index + 1 for index, value in enumerate(grid[:4])}
    return tuple(names[value] for value in grid)


@functools.cache
def grid_class(grid: tuple[int, ...]) -> int:
    """The class (index into :data:`CLASS_GRIDS`) of a complete 4x4 solution grid."""
    canonical = min(_relabelled([grid[cell] for cell in symmetry]) for symmetry in _cell_symmetries())
    return CLASS_GRIDS.index(canonical)


def unique_puzzles(grid: Sequence[int], low: int, high: int) -> int:
    """How many distinct puzzles with ``low..high`` givens have the 4x4 solution ``grid``."""
    return sum(UNIQUE_PUZZLES[grid_class(tuple(grid))][low : high + 1])
