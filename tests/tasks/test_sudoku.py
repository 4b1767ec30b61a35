"""Sudoku: format, exact solver, generator (unique puzzles, held-out solution grids), strict checker, error steps."""

import random

import pytest

from backtrack_trl.decoding.base import to_prompt
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.sudoku.error_steps import ERROR_TYPES, make_error
from backtrack_trl.tasks.sudoku.format import (
    Step,
    SudokuProblem,
    format_prompt,
    geometry,
    parse_grid,
    parse_prompt,
    parse_step,
)
from backtrack_trl.tasks.sudoku.generator import DEFAULT_GIVENS, SudokuConfig, is_new_grid, iter_problems
from backtrack_trl.tasks.sudoku.solver import (
    all_solution_grids,
    candidates,
    count_solutions,
    grid_after,
    placement_error,
    random_solution,
    solve_grid,
    solve_path,
)


SUDOKU = get_task("sudoku")
PUZZLE = "1.3./..4./.1../3..."
PROMPT = f"###Question: sudoku [{PUZZLE}]\n###Response:\n"
# 1 2 3 4 / 3 4 1 2 / 2 1 4 3 / 4 3 2 1 with the 1-2 rectangle r1c1, r1c2, r3c1, r3c2 emptied: two solutions.
TWO_SOLUTIONS = "..34/3412/..43/4321"
# r1c3 and r1c4 need 3 and 4, but box 2 already has a 3 (r2c4): no solution, though no given repeats.
NO_SOLUTION = "12../...3/..../...."


def _is_solution(grid, size):
    """Every row, column and box of a full grid holds 1..size once."""
    units = {}
    for index, value in enumerate(grid):
        for axis, number in enumerate(geometry(size)[index]):
            units.setdefault((axis, number), []).append(value)
    return len(units) == 3 * size and all(sorted(values) == list(range(1, size + 1)) for values in units.values())


def _problems(size, n, split="train", seed=0, **config):
    stream = iter_problems(SudokuConfig(size=size, **config), split, random.Random(seed))
    return [next(stream) for _ in range(n)]


# -- format -----------------------------------------------------------------------------------------------------------
def test_prompt_row_and_step_round_trip():
    problem = parse_prompt(PROMPT)
    assert problem == SudokuProblem(4, (1, 0, 3, 0, 0, 0, 4, 0, 0, 1, 0, 0, 3, 0, 0, 0))
    assert format_prompt(problem) == PROMPT == SUDOKU.format_prompt(problem)
    assert SUDOKU.problem_to_row(problem) == {"size": 4, "puzzle": PUZZLE}
    assert SUDOKU.problem_from_row({"size": 4, "puzzle": PUZZLE}) == problem
    assert hash(problem) == hash(parse_grid(PUZZLE)) and SUDOKU.problem_key(problem) == problem.grid
    assert SUDOKU.format_step(Step(2, 3, 4)) == "r2c3=4" and SUDOKU.parse_step("r2c3=4") == Step(2, 3, 4)
    assert set(SUDOKU.problem_features) == set(SUDOKU.problem_columns) == {"size", "puzzle"}
    assert " sudoku" in SUDOKU.tokenizer_phrases() and "Sudoku" in SUDOKU.card_text()


@pytest.mark.parametrize(
    "line", ["", " r2c3=4", "r2c3=4 ", "r2c3=4\n", "r2c3 = 4", "R2C3=4", "r2c3=", "r0c1=1", "r10c1=2", "r2c3=\u0664",
             "c3r2=4", "r2c3=4=4", "__import__('os')"]
)  # fmt: skip
def test_parse_step_refuses_anything_but_the_exact_shape(line):
    assert parse_step(line) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("###Question: numbers [3, 5, 2]->target 16\n###Response:\n", "not in the Sudoku format"),
        (f"###Question: sudoku [{PUZZLE}]\n###Response:", "not in the Sudoku format"),
        ("###Question: sudoku [1.3/..4/.1./3..]\n###Response:\n", "wrong shape"),  # 3x3 is not a size
        ("###Question: sudoku [1.3./..4./.1../3..]\n###Response:\n", "wrong shape"),  # a short row
        ("###Question: sudoku [5.3./..4./.1../3...]\n###Response:\n", "not '.' or a digit 1..4"),
        ("###Question: sudoku [0.3./..4./.1../3...]\n###Response:\n", "not '.' or a digit 1..4"),
        ("###Question: sudoku [1.1./..4./.1../3...]\n###Response:\n", "1 appears twice in row 1"),
        ("###Question: sudoku [1.3./..4./1.../3...]\n###Response:\n", "1 appears twice in column 1"),
        ("###Question: sudoku [1.3./.1../..../....]\n###Response:\n", "1 appears twice in box 1"),
    ],
)
def test_parse_prompt_names_the_expected_format(text, match):
    with pytest.raises(ValueError, match=match) as error:
        parse_prompt(text)
    assert "###Question: sudoku [" in str(error.value)


def test_decoders_accept_a_sudoku_prompt_through_the_task():
    assert to_prompt(PROMPT, task=SUDOKU) == PROMPT
    assert to_prompt({"size": 4, "puzzle": PUZZLE}, task="sudoku") == PROMPT
    assert to_prompt(parse_grid(PUZZLE), task=SUDOKU) == PROMPT
    with pytest.raises(ValueError, match="not in the Sudoku format"):
        to_prompt("###Question: numbers [3, 5, 2]->target 16\n###Response:\n", task=SUDOKU)


# -- solver -----------------------------------------------------------------------------------------------------------
def test_count_solutions_on_hand_written_grids():
    assert count_solutions(parse_grid(PUZZLE).grid, 4) == 1
    two = parse_grid(TWO_SOLUTIONS).grid
    assert count_solutions(two, 4) == 2 and count_solutions(two, 4, limit=10) == 2 and count_solutions(two, 4, 1) == 1
    assert (
        count_solutions(parse_grid(NO_SOLUTION).grid, 4) == 0 and solve_grid(parse_grid(NO_SOLUTION).grid, 4) is None
    )
    assert count_solutions((1, 1) + (0,) * 14, 4) == 0  # a repeated value
    assert count_solutions((0,) * 16, 4, limit=1000) == 288 == len(all_solution_grids(4))
    full = solve_grid(parse_grid(PUZZLE).grid, 4)
    assert full == (1, 4, 3, 2, 2, 3, 4, 1, 4, 1, 2, 3, 3, 2, 1, 4) and count_solutions(full, 4) == 1


@pytest.mark.parametrize("size", [4, 6, 9])
def test_solver_completes_random_grids_and_keeps_the_givens(size):
    rng = random.Random(size)
    for _ in range(3):
        full = random_solution(size, rng)
        assert _is_solution(full, size)
        puzzle = [v if rng.random() < 0.5 else 0 for v in full]
        solved = solve_grid(puzzle, size)
        assert _is_solution(solved, size) and all(g in (0, s) for g, s in zip(puzzle, solved))


def test_geometry_of_the_boxes():
    assert {geometry(6)[r * 6 + c][2] for r in range(2) for c in range(3)} == {0}  # 6x6: 2 rows x 3 columns
    assert geometry(6)[2 * 6 + 3][2] == 3 and geometry(9)[4 * 9 + 4][2] == 4 and geometry(4)[3][2] == 1
    with pytest.raises(ValueError, match="size 5 is not supported"):
        geometry(5)


def test_solve_path_fills_the_most_constrained_cell_first():
    for problem in [parse_grid(PUZZLE), *_problems(6, 3), *_problems(9, 2)]:
        size = problem.size
        solution = solve_grid(problem.grid, size)
        for rng in (None, random.Random(0), random.Random(1)):
            path = solve_path(problem, rng, order="constrained")
            assert len(path) == problem.grid.count(0)
            grid = list(problem.grid)
            for step in path:
                counts = {i: mask.bit_count() for i, mask in candidates(grid, size).items()}
                assert counts[step.index(size)] == min(counts.values())
                assert step.value == solution[step.index(size)]
                grid[step.index(size)] = step.value
            assert tuple(grid) == solution
    problem = parse_grid(PUZZLE)
    assert solve_path(problem, order="constrained") == solve_path(problem, order="constrained")  # row-major ties
    assert len({tuple(solve_path(problem, random.Random(seed), order="constrained")) for seed in range(20)}) > 1
    assert solve_path(parse_grid(NO_SOLUTION)) is None
    with pytest.raises(ValueError, match="order='spiral'"):
        solve_path(problem, order="spiral")


def test_the_tasks_paths_fill_the_cells_in_reading_order():
    for problem in [parse_grid(PUZZLE), *_problems(6, 3), *_problems(9, 2)]:
        size, solution = problem.size, solve_grid(problem.grid, problem.size)
        path = SUDOKU.solve(problem, random.Random(0))
        assert [step.index(size) for step in path] == [i for i, value in enumerate(problem.grid) if not value]
        assert all(step.value == solution[step.index(size)] for step in path) and path == SUDOKU.solve(problem)


def test_value_errors_hit_the_cell_the_path_fills_next():
    problem = parse_grid(PUZZLE)
    path = SUDOKU.solve(problem)
    rng = random.Random(0)
    for cut in range(len(path)):
        for error_type in ("exploration", "rule_violation"):
            wrong = SUDOKU.make_error(error_type, problem, path[:cut], rng)
            if wrong is not None:
                assert (wrong.row, wrong.col) == (path[cut].row, path[cut].col) and wrong.value != path[cut].value


def test_is_solvable_after_rejects_illegal_and_dead_end_placements():
    problem = parse_grid(PUZZLE)
    path = SUDOKU.solve(problem)
    assert all(SUDOKU.is_solvable_after(problem, path[:i]) for i in range(len(path) + 1))
    for illegal in [Step(1, 1, 2), Step(5, 1, 1), Step(1, 2, 5), Step(1, 2, 1), Step(2, 1, 3), Step(2, 2, 1)]:
        assert placement_error(list(problem.grid), 4, illegal) is not None, illegal
        assert not SUDOKU.is_solvable_after(problem, [illegal])
    assert not SUDOKU.is_solvable_after(problem, [path[0], path[0]])  # the same cell twice
    assert not SUDOKU.is_solvable_after(problem, [Step(1, 2, 2)])  # legal, but 4 belongs there


# -- generator --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "n"), [(4, 300), (6, 20), (9, 4)])
def test_generated_puzzles_are_unique_distinct_and_within_the_givens(size, n):
    low, high = DEFAULT_GIVENS[size]
    problems = _problems(size, n)
    assert len({p.grid for p in problems}) == n
    for problem in problems:
        assert problem.size == size and low <= sum(map(bool, problem.grid)) <= high
        assert count_solutions(problem.grid, size) == 1
    givens = {sum(map(bool, p.grid)) for p in _problems(4, 100, min_givens=5, max_givens=5)}
    assert givens == {5}


def test_generation_is_deterministic():
    assert _problems(4, 50, seed=3) == _problems(4, 50, seed=3)
    assert _problems(4, 50, seed=3) != _problems(4, 50, seed=4)
    assert SUDOKU.generate_shard(SudokuConfig(size=6), "test_new", 5, 7) == SUDOKU.generate_shard(
        SudokuConfig(size=6), "test_new", 5, 7
    )


def test_test_new_solution_grids_are_never_seen_in_training():
    config = SudokuConfig(size=4)

    def grids(split, n, seed):
        return {solve_grid(p.grid, 4) for p in SUDOKU.generate_shard(config, split, n, seed)}

    train, seen, new = grids("train", 400, 0), grids("test_seen", 100, 1), grids("test_new", 100, 2)
    assert new and not new & (train | seen)
    assert all(is_new_grid(g, config) for g in new) and not any(is_new_grid(g, config) for g in train | seen)
    held_out = {g for g in all_solution_grids(4) if is_new_grid(g, config)}
    assert new <= held_out and 0 < len(held_out) < 288
    assert f"{len(held_out)} of 288" in "\n".join(SUDOKU.describe_splits(config))
    other_seed = {g for g in all_solution_grids(4) if is_new_grid(g, SudokuConfig(size=4, seed=7))}
    assert other_seed != held_out  # the split follows the seed
    big = SUDOKU.generate_shard(SudokuConfig(size=9), "test_new", 2, 0)
    assert all(is_new_grid(solve_grid(p.grid, 9), SudokuConfig(size=9)) for p in big)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 5}, r"SudokuConfig.size=5 .* set size to one of \(4, 6, 9\)"),
        ({"size": 4, "min_givens": 3}, r"SudokuConfig.min_givens=3 is outside 4..15"),
        ({"size": 9, "max_givens": 81}, r"SudokuConfig.max_givens=81 is outside 22..80"),
        ({"size": 9, "min_givens": 17}, r"min_givens=17 is outside 22..80 .*no fewer than 22 givens in bounded time"),
        ({"size": 9, "min_givens": 17, "max_givens": 17}, r"min_givens=17 is outside 22..80"),
        ({"size": 6, "min_givens": 20, "max_givens": 18}, r"min_givens=20 > max_givens=18"),
        ({"size": 4, "max_givens": 5}, r"min_givens=6 > max_givens=5"),
        ({"new_grid_fraction": 1.0}, r"new_grid_fraction=1.0 must be in \[0, 1\)"),
        ({"new_grid_fraction": -0.1}, r"new_grid_fraction=-0.1 must be in \[0, 1\)"),
    ],
)
def test_config_validation_names_the_field_and_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SudokuConfig(**kwargs).validate()


def test_fewest_reachable_givens_are_reached_and_fewer_stop_with_the_range():
    """Issue 24: 9x9 with 17 givens hung; the floor of validate() is reachable, and the loop has a bound of its own."""
    config = SudokuConfig(size=9, min_givens=22, max_givens=22)
    puzzle = next(iter_problems(config, "train", random.Random(1))).grid
    assert sum(map(bool, puzzle)) == 22 and count_solutions(puzzle, 9) == 1
    stream = iter_problems(SudokuConfig(size=6, min_givens=8, max_givens=8), "train", random.Random(0), 100, 3)
    with pytest.raises(ValueError, match=r"Could not carve a 6x6 puzzle with 8 givens in 3 tries .* reaches 8..35"):
        next(stream)


def test_no_held_out_grids_and_unknown_splits_fail_fast():
    with pytest.raises(ValueError, match="new_grid_fraction=0 holds out none"):
        next(iter_problems(SudokuConfig(new_grid_fraction=0.0), "test_new", random.Random(0)))
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        next(iter_problems(SudokuConfig(), "dev", random.Random(0)))
    assert SudokuConfig().givens_range() == (6, 8) and SUDOKU.config_class is SudokuConfig


# -- the 4x4 problem space (issue 24: a used-up split spun through 100,000 failed draws) -----------------------------
def test_4x4_puzzle_counts_are_the_brute_forced_ones():
    import itertools

    from backtrack_trl.tasks.sudoku.space import CLASS_GRIDS, UNIQUE_PUZZLES, grid_class

    for index, grid in enumerate(CLASS_GRIDS):
        assert grid_class(grid) == index and count_solutions(grid, 4) == 1
        for k in range(17):
            unique = sum(
                count_solutions([grid[i] if i in cells else 0 for i in range(16)], 4) == 1
                for cells in map(set, itertools.combinations(range(16), k))
            )
            assert unique == UNIQUE_PUZZLES[index][k], (index, k)
    classes = [grid_class(grid) for grid in all_solution_grids(4)]
    assert (classes.count(0), classes.count(1)) == (96, 192)
    # A symmetry of the puzzle keeps the class: swap the bands, relabel 1<->4.
    swapped = [4 if v == 1 else 1 if v == 4 else v for v in CLASS_GRIDS[1][8:] + CLASS_GRIDS[1][:8]]
    assert grid_class(tuple(swapped)) == 1


def test_the_split_counts_are_what_the_stream_draws_then_it_stops_at_once():
    config = SudokuConfig(size=4, min_givens=15, max_givens=15, new_grid_fraction=0.02)
    new_grids = sum(is_new_grid(grid, config) for grid in all_solution_grids(4))
    assert SUDOKU.count_problems(config, "test_new") == 16 * new_grids == 48
    assert SUDOKU.count_problems(config, "train") == 16 * (288 - new_grids)
    assert SUDOKU.count_problems(SudokuConfig(size=6), "train") is None  # too many to count
    stream = iter_problems(config, "test_new", random.Random(0))
    assert len({next(stream).grid for _ in range(48)}) == 48
    with pytest.raises(ValueError, match=r"All 48 distinct test_new puzzles of .* are drawn.*min_givens"):
        next(stream)
    with pytest.raises(ValueError, match=r"Only 48 distinct test_new puzzles exist for .*, but 49 were asked for"):
        SUDOKU.generate_shard(config, "test_new", 49, 0)


# -- checker ----------------------------------------------------------------------------------------------------------
def _lines(steps):
    return "".join(f"{step}\n" for step in steps)


def test_checker_accepts_the_solution_and_tolerates_trailing_eos():
    problem = parse_grid(PUZZLE)
    response = SUDOKU.format_response(SUDOKU.solve(problem))
    assert SUDOKU.check(problem, response) == SUDOKU.check(problem, response + " \n</s><pad>")
    assert SUDOKU.check(problem, response + "\n</s>").correct
    assert SUDOKU.reasons[0] == "correct" and SUDOKU.modes == ("strict",)
    with pytest.raises(ValueError, match="Unknown checker mode 'official'"):
        SUDOKU.check(problem, response, mode="official")


def test_checker_rejects_each_known_cheat():
    problem = parse_grid(PUZZLE)
    path = SUDOKU.solve(problem)
    first = path[0]
    wrong = Step(first.row, first.col, 1 + first.value % 4)
    cut, guess = next(  # the first position where the next cell has a legal wrong value
        (k, g) for k in range(len(path)) if (g := make_error("exploration", problem, path[:k], random.Random(0)))
    )
    cases = {
        "missing goal": (_lines(path), "not_reached_goal"),
        "empty answer": ("", "not_reached_goal"),
        "overwritten given": ("r1c1=2\n" + SUDOKU.format_response(path), "filled_cell"),
        "given rewritten as is": ("r1c1=1\n" + SUDOKU.format_response(path), "filled_cell"),
        "refilled cell": (_lines(path[:2]) + f"{wrong}\nGoal Reached!", "filled_cell"),
        "same cell twice": (_lines([first, *path]) + "Goal Reached!", "filled_cell"),
        "incomplete grid": (SUDOKU.format_response(path[:-1]), "incomplete"),
        "goal only": ("Goal Reached!", "incomplete"),
        "malformed line": (SUDOKU.format_response(path).replace(str(path[1]), f"{path[1]} ", 1), "invalid_format"),
        "spaces": (SUDOKU.format_response(path).replace("=", " = ", 1), "invalid_format"),
        "empty line": (_lines(path[:2]) + "\n" + SUDOKU.format_response(path[2:]), "invalid_format"),
        "text after goal": (SUDOKU.format_response(path) + "\nr1c1=1", "invalid_format"),
        "backtrack inside": (_lines(path[:cut]) + f"{guess}\n<backtrack>\n" + SUDOKU.format_response(path[cut:]),
                             "not_reached_goal"),
        "out of range cell": ("r5c1=1\n" + SUDOKU.format_response(path), "out_of_range"),
        "out of range value": ("r1c2=7\n" + SUDOKU.format_response(path), "out_of_range"),
    }  # fmt: skip
    for name, (response, reason) in cases.items():
        verdict = SUDOKU.check(problem, response)
        assert not verdict.correct and verdict.reason == reason, (name, verdict)
        assert verdict.reason in SUDOKU.reasons


@pytest.mark.parametrize(("line", "unit"), [("r1c4=1", "row 1"), ("r3c1=1", "column 1"), ("r1c3=2", "box 2")])
def test_checker_names_the_row_column_or_box_conflict(line, unit):
    problem = parse_grid("1.../...2/..../....")
    verdict = SUDOKU.check(problem, f"{line}\nGoal Reached!")
    assert verdict.reason == "rule_violation" and unit in verdict.detail


# -- error steps ------------------------------------------------------------------------------------------------------
def test_error_makers_make_the_error_they_claim():
    rng = random.Random(0)
    problems = [parse_grid(PUZZLE), *_problems(4, 10), *_problems(6, 2), *_problems(9, 1)]
    assert SUDOKU.error_types == ERROR_TYPES == ("exploration", "rule_violation", "filled_cell")
    assert SUDOKU.default_error_mix == (1.0, 1.0, 1.0)
    explored = 0
    for problem in problems:
        size = problem.size
        path = SUDOKU.solve(problem)
        solution = solve_grid(problem.grid, size)
        for cut in range(len(path) + 1):
            prefix = path[:cut]
            grid = grid_after(problem, prefix)
            explore = make_error("exploration", problem, prefix, rng)
            violation = make_error("rule_violation", problem, prefix, rng)
            filled = make_error("filled_cell", problem, prefix, rng)
            if cut == len(path):  # a full grid: nothing is empty
                assert explore is None and violation is None and filled is not None
            if explore is not None:
                assert placement_error(grid, size, explore) is None  # legal
                assert explore.value != solution[explore.index(size)]
                assert not SUDOKU.is_solvable_after(problem, [*prefix, explore])
                assert SUDOKU.check(problem, SUDOKU.format_response([*prefix, explore])).reason == "incomplete"
            if violation is not None:
                assert grid[violation.index(size)] == 0
                assert placement_error(grid, size, violation)[0] == "rule_violation"
                assert SUDOKU.check(problem, SUDOKU.format_response([*prefix, violation])).reason == "rule_violation"
            assert filled is not None  # a puzzle always has givens
            assert grid[filled.index(size)] not in (0, filled.value)
            assert SUDOKU.check(problem, SUDOKU.format_response([*prefix, filled])).reason == "filled_cell"
        made = {kind: [make_error(kind, problem, path[:k], rng) for k in range(len(path))] for kind in ERROR_TYPES}
        assert any(made["rule_violation"]) and all(made["filled_cell"])
        explored += any(made["exploration"])
    assert explored > len(problems) // 2  # a legal wrong value at the next cell exists somewhere in most puzzles


def test_exploration_errors_are_drawn_from_every_legal_wrong_placement():
    problem = parse_grid(PUZZLE)
    solution = solve_grid(problem.grid, 4)
    path = SUDOKU.solve(problem)
    cut = 0  # the next cell is r1c2: legal values 2 and 4 (the solution); after it every next cell is forced
    grid = grid_after(problem, path[:cut])
    first_empty = min(candidates(grid, 4))
    expected = {
        Step(i // 4 + 1, i % 4 + 1, v)
        for i, mask in candidates(grid, 4).items()
        for v in range(1, 5)
        if mask >> v & 1 and v != solution[i] and i == first_empty
    }
    rng = random.Random(0)
    drawn = {make_error("exploration", problem, path[:cut], rng) for _ in range(100)}
    assert drawn == expected and expected
    with pytest.raises(ValueError, match="Unknown error_type 'computational'"):
        make_error("computational", problem, [], rng)
    with pytest.raises(ValueError, match="illegal placement"):
        make_error("exploration", problem, [Step(1, 1, 2)], rng)


def test_backtrack_rows_and_diagnosis():
    problem = parse_grid(PUZZLE)
    path = SUDOKU.solve(problem)
    rng = random.Random(0)
    prefix, wrong = SUDOKU.make_backtrack_example(problem, path, "rule_violation", rng)
    row = SUDOKU.backtrack_row(problem, prefix, wrong, "rule_violation")
    assert row["puzzle"] == PUZZLE and row["size"] == 4 and row["completion"].endswith(f"{wrong}\n<backtrack>")
    good = SUDOKU.format_response(path)
    half = _lines(path[:3]) + "r1c1=2\nGoal Reached!"
    diagnosis = SUDOKU.diagnose([problem, problem], [good, half])
    assert diagnosis == {"step_legal": 14 / 15, "step_right": 14 / 15, "grid_filled": 0.5}
    assert SUDOKU.diagnose([], []) == {"step_legal": None, "step_right": None, "grid_filled": None}
    assert {key for key, _ in SUDOKU.diagnosis_columns} == set(diagnosis)
