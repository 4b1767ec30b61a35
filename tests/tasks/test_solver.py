"""The solver against an independent brute force, and its paths against the strict checker."""

import random

import pytest

from backtrack_trl.tasks.countdown.checkers import check_strict
from backtrack_trl.tasks.countdown.format import Problem, Step, format_response
from backtrack_trl.tasks.countdown.solver import is_solvable, legal_steps, reachable_values, solve


def brute_force_values(numbers: list[int]) -> set[int]:
    """Every value reachable using all numbers: try every ordered pair and every legal op, recursively."""
    if len(numbers) == 1:
        return {numbers[0]}
    values = set()
    for i in range(len(numbers)):
        for j in range(len(numbers)):
            if i == j:
                continue
            x, y = numbers[i], numbers[j]
            rest = [numbers[k] for k in range(len(numbers)) if k not in (i, j)]
            results = [x + y, x * y]
            if x >= y:
                results.append(x - y)
            if y != 0 and x % y == 0:
                results.append(x // y)
            for r in results:
                values |= brute_force_values(rest + [r])
    return values


def random_problems(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.randint(2, 4)
        high = rng.choice([5, 10, 25])
        numbers = tuple(rng.randint(1, high) for _ in range(n))
        yield numbers, rng.randint(0, 60)


def test_solver_matches_brute_force_and_paths_are_valid():
    checked = solvable = 0
    brute_cache = {}
    for numbers, target in random_problems(0, 600):
        key = tuple(sorted(numbers))
        if key not in brute_cache:
            brute_cache[key] = brute_force_values(list(numbers))
        expected = target in brute_cache[key]
        assert is_solvable(numbers, target) == expected, (numbers, target)
        steps = solve(numbers, target)
        if expected:
            solvable += 1
            assert len(steps) == len(numbers) - 1
            assert all(step.a >= step.b for step in steps)  # larger operand first
            verdict = check_strict(Problem(numbers, target), format_response(steps))
            assert verdict.correct, (numbers, target, steps, verdict)
        else:
            assert steps is None
        checked += 1
    # Both outcomes must be well represented for the comparison to mean something.
    assert 150 < solvable < checked - 150


def test_reachable_values_matches_brute_force():
    for numbers, _ in random_problems(1, 60):
        assert reachable_values(numbers) == brute_force_values(list(numbers))


def test_known_cases():
    assert solve((2, 39, 45, 10), 62) is not None
    assert is_solvable((116, 32, 7), 10) is False  # only with floor division
    assert is_solvable((5,), 5) and not is_solvable((5,), 6)
    assert not is_solvable((), 0)
    assert solve((1, 1), 5) is None
    # Zeros from a subtraction are legal intermediate values: 3-3=0, 0*7=0, 0+4=4.
    assert is_solvable((3, 3, 7, 4), 4)


def test_five_and_six_numbers_match_brute_force_on_small_cases():
    rng = random.Random(3)
    for _ in range(6):
        numbers = [rng.randint(1, 4) for _ in range(5)]
        values = brute_force_values(numbers)
        for target in (0, 7, 23, 61, 97):
            assert is_solvable(numbers, target) == (target in values)
    assert is_solvable((1, 2, 3, 4, 5, 6), 720) and solve((1, 2, 3, 4, 5, 6), 720)[-1].result == 720


def test_solve_is_deterministic_and_rng_variant_is_valid():
    problem = Problem((2, 39, 45, 10), 62)
    assert solve(problem.numbers, problem.target) == solve(list(reversed(problem.numbers)), problem.target)
    problem = Problem((1, 2, 3, 4), 10)  # many solutions: 1+2+3+4, 1*2*3+4, ...
    paths = set()
    for seed in range(20):
        steps = solve(problem.numbers, problem.target, rng=random.Random(seed))
        assert steps == solve(problem.numbers, problem.target, rng=random.Random(seed))
        assert check_strict(problem, format_response(steps)).correct
        paths.add(tuple(steps))
    assert len(paths) > 1


def test_legal_steps():
    moves = legal_steps((6, 3))
    assert [str(step) for step, _ in moves] == ["6+3=9", "6-3=3", "6*3=18", "6/3=2"]
    assert [state for _, state in moves] == [(9,), (3,), (18,), (2,)]
    # a*1 and a/1 lead to the same state: listed once; 7/2 is not exact: absent.
    assert [str(step) for step, _ in legal_steps((7, 1))] == ["7+1=8", "7-1=6", "7*1=7"]
    assert all(step.op != "/" for step, _ in legal_steps((7, 2)))
    for step, state in legal_steps((4, 4, 9)):
        assert step.is_correct_arithmetic and step.a >= step.b and len(state) == 2
    assert Step(4, "-", 4, 0) in [step for step, _ in legal_steps((4, 4, 9))]


def test_negative_numbers_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        is_solvable((-1, 3), 2)
