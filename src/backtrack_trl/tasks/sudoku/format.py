"""Sudoku problems, steps, grid geometry and the exact text format (the frame around them is in ``tasks/base.py``).

A puzzle is written row by row, rows joined by ``/``, a digit for a given and ``.`` for an empty cell; an answer
places one digit per line as ``r<row>c<col>=<value>`` (1-based)::

    ###Question: sudoku [1.3./..4./.1../3...]
    ###Response:
    r1c2=4
    ...
    Goal Reached!

Grids are 4x4 (boxes of 2x2), 6x6 (boxes of 2 rows x 3 columns) or 9x9 (3x3). A grid is a row-major tuple of
``size * size`` ints, 0 for empty.

Usage:

```python
from backtrack_trl.tasks.sudoku.format import SudokuProblem, Step, format_prompt, parse_prompt, parse_step

problem = parse_prompt("###Question: sudoku [1.3./..4./.1../3...]\\n###Response:\\n")
assert problem.size == 4 and problem.grid[:4] == (1, 0, 3, 0)
assert format_prompt(problem) == "###Question: sudoku [1.3./..4./.1../3...]\\n###Response:\\n"
assert parse_step("r2c3=4") == Step(2, 3, 4) and parse_step("r2c3 = 4") is None
```
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from backtrack_trl.tasks.frame import BACKTRACK_TOKEN, GOAL_MARKER, RESPONSE_HEADER  # noqa: F401  (the frame, re-exported)


__all__ = [
    "BOX_SHAPES",
    "SIZES",
    "Step",
    "SudokuProblem",
    "first_conflict",
    "format_grid",
    "format_prompt",
    "format_step",
    "geometry",
    "parse_grid",
    "parse_prompt",
    "parse_step",
]

#: Box shape (rows, columns) of each supported grid size.
BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
SIZES = tuple(BOX_SHAPES)
QUESTION_PREFIX = "###Question: sudoku "
EXAMPLE_PROMPT = "###Question: sudoku [1.3./..4./.1../3...]\n###Response:\n"

# fullmatch only ([0-9], not \d: \d also matches non-ASCII digits that int() would accept).
_PROMPT_RE = re.compile(r"###Question: sudoku \[(?P<puzzle>[0-9./]*)\]\n###Response:\n")
_STEP_RE = re.compile(r"r(?P<row>[1-9])c(?P<col>[1-9])=(?P<value>[1-9])")


@functools.lru_cache(maxsize=None)
def geometry(size: int) -> tuple[tuple[int, int, int], ...]:
    """``(row, col, box)`` (0-based) of every cell index of a ``size`` grid; ValueError for an unsupported size."""
    if size not in BOX_SHAPES:
        raise ValueError(f"Sudoku size {size!r} is not supported; use one of {SIZES}.")
    box_rows, box_cols = BOX_SHAPES[size]
    boxes_per_row = size // box_cols
    return tuple((r, c, (r // box_rows) * boxes_per_row + c // box_cols) for r in range(size) for c in range(size))


@dataclass(frozen=True)
class SudokuProblem:
    """A puzzle: ``size`` (4, 6 or 9) and its row-major ``grid`` (``size * size`` ints, 0 = empty)."""

    size: int
    grid: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "grid", tuple(int(v) for v in self.grid))
        geometry(self.size)  # ValueError for an unsupported size
        if len(self.grid) != self.size * self.size:
            raise ValueError(f"A {self.size}x{self.size} Sudoku grid has {self.size**2} cells, got {len(self.grid)}.")
        if any(not 0 <= v <= self.size for v in self.grid):
            raise ValueError(f"Sudoku cells hold 0 (empty) or 1..{self.size}, got {self.grid}.")

    @property
    def puzzle(self) -> str:
        """The grid as text: rows joined by ``/``, ``.`` for empty (the dataset column ``puzzle``)."""
        return format_grid(self.grid, self.size)


@dataclass(frozen=True)
class Step:
    """One placement: ``value`` in the cell at ``row``, ``col`` (1-based), written ``r<row>c<col>=<value>``."""

    row: int
    col: int
    value: int

    def __str__(self) -> str:
        return f"r{self.row}c{self.col}={self.value}"

    def index(self, size: int) -> int:
        """The row-major cell index (only meaningful when row and col are in 1..size)."""
        return (self.row - 1) * size + (self.col - 1)


def format_grid(grid, size: int) -> str:
    """``"1.3./..4./.1../3..."``: rows joined by ``/``, digits for values, ``.`` for empty cells."""
    return "/".join("".join(str(v) if v else "." for v in grid[r * size : (r + 1) * size]) for r in range(size))


def parse_grid(text: str) -> SudokuProblem:
    """The problem written by :func:`format_grid`; ValueError naming what is wrong (shape, digits, givens)."""
    rows = text.split("/")
    size = len(rows)
    if size not in BOX_SHAPES or any(len(row) != size for row in rows):
        raise ValueError(
            f"Sudoku puzzle {text!r} has the wrong shape: it needs 4, 6 or 9 rows joined by '/', each row as long as "
            "the number of rows (e.g. '1.3./..4./.1../3...')."
        )
    grid = []
    for row in rows:
        for char in row:
            if char == ".":
                grid.append(0)
            elif char.isascii() and char.isdigit() and 1 <= int(char) <= size:
                grid.append(int(char))
            else:
                raise ValueError(f"Sudoku puzzle {text!r}: {char!r} is not '.' or a digit 1..{size}.")
    conflict = first_conflict(grid, size)
    if conflict is not None:
        raise ValueError(f"Sudoku puzzle {text!r} breaks a rule: {conflict}.")
    return SudokuProblem(size, tuple(grid))


def first_conflict(grid, size: int) -> str | None:
    """A description of the first repeated value in a row, column or box of ``grid``; None if there is none."""
    seen = set()
    for index, value in enumerate(grid):
        if not value:
            continue
        r, c, b = geometry(size)[index]
        for unit in (("row", r), ("column", c), ("box", b)):
            key = (*unit, value)
            if key in seen:
                return f"{value} appears twice in {unit[0]} {unit[1] + 1}"
            seen.add(key)
    return None


def format_prompt(problem: SudokuProblem) -> str:
    """``###Question: sudoku [<puzzle>]\\n###Response:\\n``."""
    return f"{QUESTION_PREFIX}[{problem.puzzle}]\n{RESPONSE_HEADER}"


def parse_prompt(text: str) -> SudokuProblem:
    """The problem of a prompt built by :func:`format_prompt`; a ValueError naming the expected format otherwise."""
    match = _PROMPT_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"Prompt {text!r} is not in the Sudoku format; expected e.g. {EXAMPLE_PROMPT!r} (rows joined by '/', "
            "'.' for empty; build it with backtrack_trl.tasks.sudoku.format.format_prompt)."
        )
    try:
        return parse_grid(match.group("puzzle"))
    except ValueError as error:
        raise ValueError(f"Prompt {text!r}: {error} Expected e.g. {EXAMPLE_PROMPT!r}.") from None


def format_step(step: Step) -> str:
    """``r<row>c<col>=<value>``."""
    return str(step)


def parse_step(line: str) -> Step | None:
    """The placement a line spells (exactly ``r<row>c<col>=<value>``, single digits 1-9); None for anything else."""
    match = _STEP_RE.fullmatch(line) if isinstance(line, str) else None
    if match is None:
        return None
    return Step(int(match.group("row")), int(match.group("col")), int(match.group("value")))
