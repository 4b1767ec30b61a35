"""Sudoku (4x4, 6x6, 9x9) behind the :class:`~backtrack_trl.tasks.base.Task` interface.

Fill the empty cells so that every row, column and box holds each value once; one placement ``r<row>c<col>=<value>``
per line. The modules: ``format`` (problems, steps, text, grid geometry), ``solver`` (exact, bitmasks, the "most
constrained cell first" training path), ``checkers`` (strict), ``generator`` (unique-solution puzzles, held-out
solution grids), ``error_steps`` (exploration, rule-violation and filled-cell errors).

Usage:

```python
from backtrack_trl.tasks import get_task

sudoku = get_task("sudoku")
problem = sudoku.parse_prompt("###Question: sudoku [1.3./..4./.1../3...]\\n###Response:\\n")
print(sudoku.format_response(sudoku.solve(problem)))  # r1c2=4, r1c4=2, ... (most constrained cell first)
verdict = sudoku.check(problem, "r1c2=3\\nGoal Reached!")
assert verdict.reason == "rule_violation"  # 3 is already in row 1
```
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from datasets import Value

from backtrack_trl.tasks.base import Task, register_task
from backtrack_trl.tasks.frame import Verdict
from backtrack_trl.tasks.sudoku import checkers, error_steps, format, generator, solver
from backtrack_trl.tasks.sudoku.format import Step, SudokuProblem
from backtrack_trl.tasks.sudoku.generator import SudokuConfig


@register_task
class SudokuTask(Task):
    name = "sudoku"
    problem_columns = ("size", "puzzle")
    modes = checkers.MODES
    reasons = checkers.REASONS
    error_types = error_steps.ERROR_TYPES
    default_error_mix = error_steps.DEFAULT_ERROR_MIX
    config_class = SudokuConfig
    problem_features = {"size": Value("int64"), "puzzle": Value("string")}
    column_descriptions = {
        "size": "the grid size (4, 6 or 9)",
        "puzzle": "the puzzle, rows joined by '/', '.' for an empty cell",
    }
    diagnosis_columns = (
        ("step_legal", "Legal steps %"),
        ("step_right", "Right steps %"),
        ("grid_filled", "Filled grid %"),
    )

    def format_prompt(self, problem: SudokuProblem) -> str:
        return format.format_prompt(problem)

    def parse_prompt(self, text: str) -> SudokuProblem:
        return format.parse_prompt(text)

    def problem_from_row(self, row: Mapping[str, Any]) -> SudokuProblem:
        problem = format.parse_grid(row["puzzle"])
        if problem.size != int(row["size"]):
            raise ValueError(f"Row size {row['size']} does not match its puzzle {row['puzzle']!r}.")
        return problem

    def problem_to_row(self, problem: SudokuProblem) -> dict[str, Any]:
        return {"size": problem.size, "puzzle": problem.puzzle}

    def problem_key(self, problem: SudokuProblem):
        return generator.problem_key(problem)

    def format_step(self, step: Step) -> str:
        return format.format_step(step)

    def parse_step(self, line: str) -> Step | None:
        return format.parse_step(line)

    def solve(self, problem: SudokuProblem, rng: random.Random | None = None) -> list[Step] | None:
        return solver.solve_path(problem, rng)

    def is_solvable_after(self, problem: SudokuProblem, steps: Sequence[Step]) -> bool:
        grid = solver.grid_after(problem, steps)
        return grid is not None and solver.count_solutions(grid, problem.size, 1) > 0

    def check(self, problem: SudokuProblem, response: str, mode: str = "strict") -> Verdict:
        return checkers.check(problem, response, mode=mode)

    def iter_problems(self, config: SudokuConfig, split: str, rng: random.Random) -> Iterator[SudokuProblem]:
        return generator.iter_problems(config, split, rng)

    def generate_shard(self, config: SudokuConfig, split: str, n: int, seed: int) -> list[SudokuProblem]:
        total = generator.count_puzzles(config, split)
        if total is not None and n > total:  # before any draw: a stream would stop only when all are drawn
            raise ValueError(
                f"Only {total} distinct {split} puzzles exist for {config}, but {n} were asked for: ask for at most "
                f"{total}, or {generator.widen_hint(config)}."
            )
        return super().generate_shard(config, split, n, seed)

    def count_problems(self, config: SudokuConfig, split: str) -> int | None:
        return generator.count_puzzles(config, split)

    def widen_hint(self, config: SudokuConfig) -> str:
        return generator.widen_hint(config)

    def describe_splits(self, config: SudokuConfig) -> list[str]:
        return generator.describe_splits(config)

    def seed_text(self, problem: SudokuProblem) -> str:
        return problem.puzzle

    def diagnose(self, problems: Sequence[SudokuProblem], completions: Sequence[str]) -> dict:
        return checkers.answer_placements(problems, completions)

    def make_error(self, error_type: str, problem: SudokuProblem, prefix: Sequence[Step], rng: random.Random):
        return error_steps.make_error(error_type, problem, prefix, rng)

    def tokenizer_phrases(self) -> tuple[str, ...]:
        return (*super().tokenizer_phrases(), " sudoku")

    def card_text(self) -> str:
        return (
            "Sudoku: fill the empty cells of a 4x4, 6x6 or 9x9 grid (boxes 2x2, 2x3, 3x3) so that every row, column "
            "and box holds each value once. The puzzle is written row by row, rows joined by `/`, `.` for an empty "
            "cell; every puzzle has exactly one solution. One placement `r<row>c<col>=<value>` (1-based) per line, "
            "the most constrained cell first, then `Goal Reached!`."
        )


__all__ = ["Step", "SudokuConfig", "SudokuProblem", "SudokuTask"]
