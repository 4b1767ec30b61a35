"""Sudoku puzzle generation: configuration, the seen / held-out split of solution grids, deterministic sampling.

A puzzle is made from a random complete grid (a randomised backtracking fill) by emptying cells in a random order,
skipping a cell when emptying it would allow a second solution, until the drawn number of givens (uniform in
``min_givens..max_givens``) is reached; when the uniqueness of the solution blocks that, a new grid is drawn. Every
puzzle therefore has exactly one solution.

Reach: one carving pass stops where no single cell can be emptied any more, which for a random 9x9 grid is 21..28
givens, almost never the 17 that some 9x9 puzzles have. :data:`REACHABLE_GIVENS` is the fewest givens a size accepts
(measured: at that count a puzzle still costs seconds, one fewer costs tens of seconds or never comes), and
``validate`` refuses fewer before any work; :data:`MAX_FAILED_CARVES` carving failures in a row stop the stream with
the same range named, as a safety net. A 4x4 split's puzzles run out: :func:`count_puzzles` counts them exactly
(module ``space``), so asking for more fails at once with the counts instead of drawing until a bound.

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
from backtrack_trl.tasks.sudoku.space import unique_puzzles


__all__ = [
    "DEFAULT_GIVENS",
    "MAX_FAILED_CARVES",
    "MIN_UNIQUE_GIVENS",
    "REACHABLE_GIVENS",
    "SPLITS",
    "SudokuConfig",
    "carve_puzzle",
    "count_puzzles",
    "is_new_grid",
    "iter_problems",
    "problem_key",
    "widen_hint",
]

SPLITS = ("train", "test_seen", "test_new")
#: Givens drawn per size when ``min_givens`` / ``max_givens`` are left unset.
DEFAULT_GIVENS = {4: (6, 8), 6: (16, 20), 9: (30, 36)}
#: Fewest givens a puzzle of each size with a unique solution can have (4x4: 4, 6x6: 8, 9x9: 17).
MIN_UNIQUE_GIVENS = {4: 4, 6: 8, 9: 17}
#: Fewest givens the generator reaches per size in bounded time. Share of carving passes (a random grid, one pass)
#: that get down to this many givens, measured on one busy CPU core: 4x4 69% (1 ms a pass), 6x6 0.4% (5 ms a pass, so
#: about 1 s a puzzle), 9x9 3.4% at 22 givens (90 ms a pass, about 3 s a puzzle) but 0.3% at 21 (30 s a puzzle) and
#: none of 2,944 passes at 20 or fewer.
REACHABLE_GIVENS = {4: 4, 6: 8, 9: 22}
#: Carving failures in a row after which :func:`iter_problems` gives up: at the fewest reachable givens a false alarm
#: has odds below 1e-9 (9x9: 0.966**700, 6x6: 0.996**6000), and the wait before it stays under a minute.
MAX_FAILED_CARVES = {4: 100, 6: 6000, 9: 700}


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
        fewest, most = REACHABLE_GIVENS[self.size], self.size * self.size - 1
        for name, value in (("min_givens", low), ("max_givens", high)):
            if isinstance(value, bool) or not isinstance(value, int) or not fewest <= value <= most:
                raise ValueError(
                    f"SudokuConfig.{name}={value!r} is outside {fewest}..{most} for a {self.size}x{self.size} grid "
                    f"({_why_fewest(self.size)}; one cell must be empty); set {name} in that range, or leave it unset "
                    f"for {DEFAULT_GIVENS[self.size]}."
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


def _why_fewest(size: int) -> str:
    if REACHABLE_GIVENS[size] == MIN_UNIQUE_GIVENS[size]:
        return f"a unique solution needs at least {MIN_UNIQUE_GIVENS[size]} givens"
    return (
        f"the generator reaches no fewer than {REACHABLE_GIVENS[size]} givens in bounded time: puzzles with "
        f"{MIN_UNIQUE_GIVENS[size]}..{REACHABLE_GIVENS[size] - 1} givens exist, but random carving almost never finds "
        "them"
    )


def _check_split(config: SudokuConfig, split: str) -> str:
    """``split``, once the config is valid and the split has solution grids (one error naming the fix if not)."""
    config.validate()
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    want_new = split == "test_new"
    if want_new and config.new_grid_fraction == 0:
        raise ValueError(
            "The test_new split needs held-out solution grids but SudokuConfig.new_grid_fraction=0 holds out none; "
            "raise new_grid_fraction (e.g. 0.1) or ask for no test_new puzzles."
        )
    if config.size == 4 and not any(is_new_grid(grid, config) == want_new for grid in all_solution_grids(4)):
        raise ValueError(
            f"No 4x4 solution grid is {'held out' if want_new else 'seen'} with new_grid_fraction="
            f"{config.new_grid_fraction} and seed={config.seed}; change new_grid_fraction or seed."
        )
    return split


def count_puzzles(config: SudokuConfig, split: str) -> int | None:
    """How many distinct puzzles ``split`` has (4x4: counted exactly, see ``space``; None for 6x6 and 9x9, whose
    spaces no dataset exhausts)."""
    want_new = _check_split(config, split) == "test_new"
    if config.size != 4:
        return None
    low, high = config.givens_range()
    return sum(
        unique_puzzles(grid, low, high) for grid in all_solution_grids(4) if is_new_grid(grid, config) == want_new
    )


def widen_hint(config: SudokuConfig) -> str:
    """What to change for more distinct puzzles (the end of a "too few puzzles" error)."""
    low, high = config.givens_range()
    # 4x4: a grid has the most puzzles at 8 or 9 givens (space.UNIQUE_PUZZLES), the fewest at the ends of the range.
    peak = "; the most puzzles per grid at 8..9" if config.size == 4 else ""
    return (
        f"widen min_givens..max_givens ({low}..{high} now, {REACHABLE_GIVENS[config.size]}..{config.size**2 - 1} "
        f"possible{peak}), or change new_grid_fraction ({config.new_grid_fraction} now; higher: more test_new "
        "puzzles, lower: more train and test_seen ones)"
    )


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
    config: SudokuConfig,
    split: str,
    rng: random.Random,
    max_failed_draws: int = 100_000,
    max_failed_carves: int | None = None,
) -> Iterator[SudokuProblem]:
    """Endless stream of distinct puzzles of ``split`` (``train``/``test_seen``: seen grids, ``test_new``: new grids).

    Stops with ValueError as soon as every puzzle of a 4x4 split has been drawn (:func:`count_puzzles`), after
    ``max_failed_draws`` draws in a row that give no new puzzle (a split nearly used up), or after
    ``max_failed_carves`` (default :data:`MAX_FAILED_CARVES` of the size) carving passes in a row that could not get
    down to the drawn number of givens."""
    total = count_puzzles(config, split)  # checks the split; 4x4: stop at once when all are drawn
    want_new = split == "test_new"
    size = config.size
    low, high = config.givens_range()
    if max_failed_carves is None:
        max_failed_carves = MAX_FAILED_CARVES[size]
    keys = set()
    failed = failed_carves = 0
    while True:
        if total is not None and len(keys) >= total:
            raise ValueError(
                f"All {total} distinct {split} puzzles of {config} are drawn and more were asked for: ask for at "
                f"most {total}, or {widen_hint(config)}."
            )
        if failed_carves >= max_failed_carves:
            givens = low if low == high else f"{low}..{high}"
            raise ValueError(
                f"Could not carve a {size}x{size} puzzle with {givens} givens in {max_failed_carves} tries in a row "
                f"(the generator reaches {REACHABLE_GIVENS[size]}..{size * size - 1} givens, rarely its lower end); "
                "raise min_givens / max_givens."
            )
        if failed >= max_failed_draws:
            raise ValueError(
                f"Only {len(keys)} distinct {split} puzzles found for {config} ({max_failed_draws} failed draws in a "
                f"row); ask for fewer puzzles, or {widen_hint(config)}."
            )
        failed += 1
        solution = random_solution(size, rng)
        if is_new_grid(solution, config) != want_new:
            continue
        puzzle = carve_puzzle(solution, size, rng.randint(low, high), rng)
        failed_carves = failed_carves + 1 if puzzle is None else 0
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
