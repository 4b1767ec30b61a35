"""Each error maker produces the kind of wrong step it claims, over many random problems and prefixes."""

import random
from collections import Counter

import pytest

from backtrack_trl.tasks.countdown.checkers import check_strict
from backtrack_trl.tasks.countdown.error_steps import (
    DEFAULT_ERROR_MIX,
    ERROR_TYPES,
    make_backtrack_example,
    make_computational_error,
    make_exploration_error,
    make_rule_violation,
    sample_error_type,
    state_after,
)
from backtrack_trl.tasks.countdown.format import Problem, Step, format_backtrack_response, format_steps
from backtrack_trl.tasks.countdown.generator import CountdownConfig, generate_problems
from backtrack_trl.tasks.countdown.solver import is_solvable, solve


def cases(count=150, seed=0):
    rng = random.Random(seed)
    for num_numbers in (2, 3, 4):
        config = CountdownConfig(num_numbers=num_numbers, max_number=40, min_target=0, max_target=100)
        for problem in generate_problems(config, count // 3, range(101), rng):
            solution = solve(problem.numbers, problem.target)
            for k in range(len(solution)):
                yield problem, solution[:k]


def available(step: Step, state) -> bool:
    pool = Counter(state)
    return all(pool[v] >= c for v, c in Counter((step.a, step.b)).items())


def test_exploration_errors_are_legal_and_leave_every_solution():
    made = 0
    for problem, prefix in cases():
        rng = random.Random(len(prefix))
        step = make_exploration_error(problem, prefix, rng)
        if step is None:
            continue
        made += 1
        state = state_after(problem.numbers, prefix)
        assert available(step, state) and step.is_correct_arithmetic and step.a >= step.b
        after = Counter(state)
        after -= Counter((step.a, step.b))
        after[step.result] += 1
        assert not is_solvable(list(after.elements()), problem.target), (problem, prefix, step)
        # The strict checker sees a legal prefix that can no longer reach the goal.
        assert check_strict(problem, format_steps([*prefix, step])).reason == "not_reached_target"
    assert made > 100


def test_computational_errors_have_wrong_results_on_available_operands():
    results = Counter()
    for problem, prefix in cases():
        step = make_computational_error(problem, prefix, random.Random(7))
        state = state_after(problem.numbers, prefix)
        assert available(step, state) and step.result >= 0
        assert step.true_result is not None and step.true_result != step.result
        assert check_strict(problem, format_steps([*prefix, step]) + "Goal Reached!").reason == "incorrect_result"
        results[step.result == problem.target] += 1
    assert results[True] > 0 and results[False] > 0  # includes final-step "fudges" of the target


def test_rule_violations_use_an_absent_operand_with_right_arithmetic():
    reused = 0
    for problem, prefix in cases():
        step = make_rule_violation(problem, prefix, random.Random(3))
        state = state_after(problem.numbers, prefix)
        assert step.a not in state or step.b not in state
        assert step.is_correct_arithmetic and step.a >= step.b
        assert check_strict(problem, format_steps([*prefix, step]) + "Goal Reached!").reason == "unknown_numbers"
        reused += bool(prefix) and (step.a in problem.numbers or step.b in problem.numbers)
    assert reused > 0


def test_makers_are_deterministic_under_seed():
    problem = Problem((2, 39, 45, 10), 62)
    prefix = solve(problem.numbers, problem.target)[:1]
    for maker in (make_exploration_error, make_computational_error, make_rule_violation):
        assert maker(problem, prefix, random.Random(5)) == maker(problem, prefix, random.Random(5))


def test_backtrack_example_positions_and_format():
    rng = random.Random(0)
    positions = Counter()
    for problem, prefix in cases(60, seed=1):
        if prefix:
            continue
        solution = solve(problem.numbers, problem.target)
        for error_type in ERROR_TYPES:
            example = make_backtrack_example(problem, solution, error_type, rng)
            if example is None:
                assert error_type == "exploration"
                continue
            got_prefix, wrong = example
            assert got_prefix == solution[: len(got_prefix)] and len(got_prefix) <= len(solution) - 1
            positions[len(problem.numbers), len(got_prefix)] += 1
            text = format_backtrack_response(got_prefix, wrong)
            assert text.endswith(f"{wrong}\n<backtrack>")
    assert positions[4, 0] and positions[4, 1] and positions[4, 2]


def test_backtrack_example_none_when_impossible_and_bad_solution():
    # (1, 1) -> 2: 1+1=2 is the only way; 1-1=0 and 1*1=1 are unsolvable, so exploration exists...
    problem = Problem((1, 1), 2)
    assert make_backtrack_example(problem, solve(problem.numbers, problem.target), "exploration", random.Random(0))
    # ... but with (0, 0) -> 0 every legal step gives 0 = target: no exploration error.
    problem = Problem((0, 0), 0)
    assert (
        make_backtrack_example(problem, solve(problem.numbers, problem.target), "exploration", random.Random(0))
        is None
    )
    with pytest.raises(ValueError, match="steps"):
        make_backtrack_example(Problem((1, 2, 3), 6), [], "computational", random.Random(0))
    with pytest.raises(ValueError, match="error_type"):
        make_backtrack_example(Problem((1, 2), 3), [Step(2, "+", 1, 3)], "typo", random.Random(0))


def test_state_after_rejects_bad_prefix():
    with pytest.raises(ValueError, match="arithmetic"):
        state_after((2, 3), [Step(3, "+", 2, 6)])
    with pytest.raises(ValueError, match="not available"):
        state_after((2, 3), [Step(3, "+", 3, 6)])


def test_sample_error_type_mix():
    rng = random.Random(0)
    counts = Counter(sample_error_type(rng) for _ in range(5000))
    assert DEFAULT_ERROR_MIX == (1, 2, 2) and set(counts) == set(ERROR_TYPES)
    assert 0.17 < counts["exploration"] / 5000 < 0.23
    assert Counter(sample_error_type(rng, (0, 0, 1)) for _ in range(50)) == {"rule_violation": 50}
    with pytest.raises(ValueError, match="mix"):
        sample_error_type(rng, (1, 2))
