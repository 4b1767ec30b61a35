"""Sudoku puzzle generation: configuration, the seen / held-out split of solution grids, deterministic sampling.

A puzzle is made from a random complete grid (a randomised backtracking fill) by emptying cells in a random order,
skipping a cell when emptying it would allow a second solution, until the drawn number of givens (uniform in
``min_givens..max_givens``) is reached; when the uniqueness of the solution blocks that, a new grid is drawn. Every
puzzle therefore has exactly one solution.

Held-out split: a solution grid is *new* when a stable hash (sha256 of the seed and the grid) falls in the
``new_grid_fraction`` share. ``train`` and ``test_seen`` puzzles come from the other (*seen*) grids, ``test_new``
puzzles from new ones only, so no ``test_new`` puzzle shares its solution with a training puzzle.

Determinism: everything is driven by the ``random.Random`` passed in (and ``config.seed`` for the split).

Usage:

```python
import random

from backtrack_trl.tasks.sudoku.generator import SudokuConfig, is_new_grid, iter_problems
from backtrack_trl.tasks.sudoku.solver import count_solutions, solve_grid

config = SudokuConfig(size=4, seed=42)
stream = iter_problems(config, "test_new", random.Random(0))
problem = next(stream)
assert count_solutions(problem.grid, 4) == 1
assert is_new_grid(solve_grid(problem.grid, 4), config)
```
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from backtrack_trl.tasks.sudoku.format import SIZES, SudokuProblem, format_grid
from backtrack_trl.tasks.sudoku.solver import all_solution_grids, count_solutions, random_solution


__all__ = [
    "DEFAULT_GIVENS",
    "MIN_UNIQUE_GIVENS",
    "SPLITS",
    "SudokuConfig",
    "carve_puzzle",
    "is_new_grid",
    "iter_problems",
    "problem_key",
]

SPLITS = ("train", "test_seen", "test_new")
#: Givens drawn per size when ``min_givens`` / ``max_givens`` are left unset.
DEFAULT_GIVENS = {4: (6, 8), 6: (16, 20), 9: (30, 36)}
#: Fewest givens a puzzle of each size with a unique solution can have (4x4: 4, 6x6: 8, 9x9: 17).
MIN_UNIQUE_GIVENS = {4: 4, 6: 8, 9: 17}


@dataclass
class SudokuConfig:
    """The puzzle distribution: grid size, number of givens, held-out share of solution grids, seed."""

    size: int = field(default=4, metadata={"help": "Grid size: 4 (2x2 boxes), 6 (2x3 boxes) or 9 (3x3 boxes)."})
    min_givens: int | None = field(
        default=None, metadata={"help": "Fewest givens per puzzle (None: 6 for 4x4, 16 for 6x6, 30 for 9x9)."}
    )
    max_givens: int | None = field(
        default=None, metadata={"help": "Most givens per puzzle (None: 8 for 4x4, 20 for 6x6, 36 for 9x9)."}
    )
    new_grid_fraction: float = field(
        default=0.1, metadata={"help": "Share of the solution grids held out for test_new (by a hash of the grid)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the held-out split, the puzzles and the error draws."})

    def givens_range(self) -> tuple[int, int]:
        """``(min_givens, max_givens)`` with the defaults of :data:`DEFAULT_GIVENS` filled in."""
        low, high = DEFAULT_GIVENS.get(self.size, (None, None))
        return (
            low if self.min_givens is None else self.min_givens,
            high if self.max_givens is None else self.max_givens,
        )

    def validate(self) -> SudokuConfig:
        """Raise ValueError naming the bad field and the fix; return self so it can be chained."""
        if self.size not in SIZES:
            raise ValueError(f"SudokuConfig.size={self.size!r} is not supported; set size to one of {SIZES}.")
        low, high = self.givens_range()
        fewest, most = MIN_UNIQUE_GIVENS[self.size], self.size * self.size - 1
        for name, value in (("min_givens", low), ("max_givens", high)):
            if isinstance(value, bool) or not isinstance(value, int) or not fewest <= value <= most:
                raise ValueError(
                    f"SudokuConfig.{name}={value!r} is outside {fewest}..{most} for a {self.size}x{self.size} grid "
                    f"(a unique solution needs at least {fewest} givens, and one cell must be empty); set {name} in "
                    f"that range, or leave it unset for {DEFAULT_GIVENS[self.size]}."
                )
        if low > high:
            raise ValueError(
                f"SudokuConfig givens range is empty (min_givens={low} > max_givens={high}); set max_givens >= "
                "min_givens."
            )
        if not 0.0 <= self.new_grid_fraction < 1.0:
            raise ValueError(
                f"SudokuConfig.new_grid_fraction={self.new_grid_fraction} must be in [0, 1); use e.g. 0.1, or 0 for "
                "no held-out grids."
            )
        return self


def problem_key(problem: SudokuProblem) -> tuple[int, ...]:
    """Identity of a puzzle for deduplication: its grid (the size is implied by the length)."""
    return problem.grid


def is_new_grid(solution, config: SudokuConfig) -> bool:
    """Whether the solution grid is held out for ``test_new``: sha256 of the seed and the grid, as a number in
    [0, 1), below ``config.new_grid_fraction``."""
    text = f"sudoku-grid/{config.seed}/{format_grid(solution, config.size)}"
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
    return value < config.new_grid_fraction


def carve_puzzle(solution, size: int, givens: int, rng: random.Random) -> tuple[int, ...] | None:
    """Empty cells of ``solution`` in a random order, keeping the solution unique, until ``givens`` are left; None
    if uniqueness stops it before."""
    grid = list(solution)
    cells = list(range(size * size))
    rng.shuffle(cells)
    left = len(cells)
    for index in cells:
        if left == givens:
            break
        value, grid[index] = grid[index], 0
        if count_solutions(grid, size, 2) == 1:
            left -= 1
        else:
            grid[index] = value
    return tuple(grid) if left == givens else None


def iter_problems(
    config: SudokuConfig, split: str, rng: random.Random, max_failed_draws: int = 100_000
) -> Iterator[SudokuProblem]:
    """Endless stream of distinct puzzles of ``split`` (``train``/``test_seen``: seen grids, ``test_new``: new grids).

    Stops with ValueError after ``max_failed_draws`` draws in a row that give no new puzzle (the split has no grids,
    or its puzzles are used up)."""
    config.validate()
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    want_new = split == "test_new"
    size = config.size
    if want_new and config.new_grid_fraction == 0:
        raise ValueError(
            "The test_new split needs held-out solution grids but SudokuConfig.new_grid_fraction=0 holds out none; "
            "raise new_grid_fraction (e.g. 0.1) or ask for no test_new puzzles."
        )
    if size == 4 and not any(is_new_grid(grid, config) == want_new for grid in all_solution_grids(4)):
        raise ValueError(
            f"No 4x4 solution grid is {'held out' if want_new else 'seen'} with new_grid_fraction="
            f"{config.new_grid_fraction} and seed={config.seed}; change new_grid_fraction or seed."
        )
    low, high = config.givens_range()
    keys = set()
    failed = 0
    while True:
        if failed >= max_failed_draws:
            raise ValueError(
                f"Only {len(keys)} distinct {split} puzzles found for {config} ({max_failed_draws} failed draws in a "
                "row); ask for fewer puzzles, widen min_givens..max_givens or change new_grid_fraction."
            )
        failed += 1
        solution = random_solution(size, rng)
        if is_new_grid(solution, config) != want_new:
            continue
        puzzle = carve_puzzle(solution, size, rng.randint(low, high), rng)
        if puzzle is None or puzzle in keys:
            continue
        keys.add(puzzle)
        failed = 0
        yield SudokuProblem(size, puzzle)


def describe_splits(config: SudokuConfig) -> list[str]:
    """Markdown lines for the dataset card: the puzzle distribution and what is held out for ``test_new``."""
    config.validate()
    low, high = config.givens_range()
    size = config.size
    lines = [
        f"Puzzles: {size}x{size}, {low}..{high} givens, each with exactly one solution.",
        "",
        f"Held out for test_new: the solution grids whose sha256 hash (with seed {config.seed}) falls in the "
        f"{100 * config.new_grid_fraction:g}% share; train and test_seen puzzles come from the other grids only, so "
        "no test_new puzzle shares its solution grid with a training puzzle.",
    ]
    if size == 4:
        grids = all_solution_grids(4)
        new = sum(is_new_grid(grid, config) for grid in grids)
        lines += ["", f"Held-out 4x4 solution grids: {new} of {len(grids)}."]
    return lines
