"""The three kinds of single wrong steps of the paper's backtrack examples (proportion 1:2:2 by default).

Given a problem and a correct prefix (steps along a solution), each maker writes one wrong next step:

- **exploration**: a legal step (operands available, arithmetic right) after which the target is no longer reachable;
  the paper describes it as a step that departs from every solution. We draw it uniformly (from ``rng``) among the
  legal moves whose next state is unsolvable.
- **computational**: operands available, a legal operation, but the written result is wrong (off by a small delta,
  or, on the last step, the target written in place of the true result: the "fudge" seen in the paper's failures).
- **rule_violation**: arithmetic right, but at least one operand is not in the current multiset (an already used
  number or intermediate result, like the paper's ``39+6=45`` after ``45-39=6``, or another absent number).

All makers write the larger operand first (the training-data convention) and are deterministic for a seeded
``random.Random``. They return None when the error is impossible at that position.

Usage:

```python
import random

from backtrack_trl.tasks.countdown.error_steps import make_backtrack_example, sample_error_type
from backtrack_trl.tasks.countdown.solver import solve
from backtrack_trl.tasks.countdown.format import Problem, format_backtrack_response

rng = random.Random(0)
problem = Problem((2, 39, 45, 10), 62)
solution = solve(problem.numbers, problem.target)
example = make_backtrack_example(problem, solution, sample_error_type(rng), rng)
if example is not None:
    prefix, wrong_step = example
    print(format_backtrack_response(prefix, wrong_step))
```
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from backtrack_trl.tasks.countdown.format import Problem, Step, apply_op
from backtrack_trl.tasks.countdown.solver import canonical_state, is_solvable, legal_steps
from backtrack_trl.tasks.derived import backtrack_example, dispatch_error


__all__ = [
    "DEFAULT_ERROR_MIX",
    "ERROR_TYPES",
    "make_backtrack_example",
    "make_computational_error",
    "make_error",
    "make_exploration_error",
    "make_rule_violation",
    "sample_error_type",
    "state_after",
]

ERROR_TYPES = ("exploration", "computational", "rule_violation")
DEFAULT_ERROR_MIX = (1, 2, 2)
# Small slips of a written result; 10 mimics a carried/dropped digit.
_DELTAS = (-3, -2, -1, 1, 2, 3, -10, 10)


def state_after(numbers: Sequence[int], steps: Sequence[Step]) -> tuple[int, ...]:
    """The sorted multiset left after applying ``steps`` to ``numbers``; ValueError if a step is not legal there."""
    pool = Counter(int(n) for n in numbers)
    for i, step in enumerate(steps):
        if not step.is_correct_arithmetic:
            raise ValueError(f"Prefix step {i} {step} has wrong or illegal arithmetic; pass correct steps only.")
        need = Counter((step.a, step.b))
        if any(pool[v] < c for v, c in need.items()):
            raise ValueError(f"Prefix step {i} {step} uses numbers not available in {sorted(pool.elements())}.")
        pool -= need
        pool[step.result] += 1
    return canonical_state(pool.elements())


def _consumed_values(numbers: Sequence[int], steps: Sequence[Step]) -> list[int]:
    """Values that were available at some point before and are used up now (original numbers or results)."""
    values = set(numbers)
    for step in steps:
        values.add(step.result)
    return sorted(values)


def make_exploration_error(problem: Problem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """A legal next step after which the target cannot be reached any more; None if every legal step stays solvable."""
    state = state_after(problem.numbers, prefix)
    if len(state) < 2:
        return None
    candidates = [step for step, next_state in legal_steps(state) if not is_solvable(next_state, problem.target)]
    return rng.choice(candidates) if candidates else None


def make_computational_error(problem: Problem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """Available operands and a legal operation, but a wrong (non-negative) written result."""
    state = state_after(problem.numbers, prefix)
    if len(state) < 2:
        return None
    moves = [step for step, _ in legal_steps(state)]
    last_step = len(state) == 2
    if last_step and rng.random() < 0.5:
        # The paper's failure mode: fudge the final result so it "reaches" the target.
        fudges = [step for step in moves if step.result != problem.target]
        if fudges:
            step = rng.choice(fudges)
            return Step(step.a, step.op, step.b, problem.target)
    step = rng.choice(moves)
    wrong = [step.result + d for d in _DELTAS if step.result + d >= 0]
    return Step(step.a, step.op, step.b, rng.choice(wrong))


def make_rule_violation(problem: Problem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """Correct arithmetic on at least one operand that is not in the current multiset."""
    state = state_after(problem.numbers, prefix)
    if not state:
        return None
    available = set(state)
    consumed = [v for v in _consumed_values(problem.numbers, prefix) if v not in available]
    if consumed and rng.random() < 0.75:
        ghost = rng.choice(consumed)
    else:
        # Any absent number of the problem's scale.
        high = max(max(problem.numbers), max(state), 10)
        absent = [v for v in range(1, high + 1) if v not in available]
        ghost = rng.choice(absent)
    other = rng.choice(state)
    a, b = (ghost, other) if ghost >= other else (other, ghost)
    ops = [op for op in ("+", "-", "*", "/") if apply_op(a, op, b) is not None]
    op = rng.choice(ops)
    return Step(a, op, b, apply_op(a, op, b))


# The makers, in the order of ERROR_TYPES.
_MAKERS = dict(zip(ERROR_TYPES, (make_exploration_error, make_computational_error, make_rule_violation)))


def make_error(error_type: str, problem: Problem, prefix: Sequence[Step], rng: random.Random) -> Step | None:
    """Dispatch to the maker of ``error_type`` (one of :data:`ERROR_TYPES`)."""
    return dispatch_error(_MAKERS, error_type, problem, prefix, rng)


def sample_error_type(rng: random.Random, mix: Sequence[float] = DEFAULT_ERROR_MIX) -> str:
    """Draw an error type with weights ``mix`` (exploration, computational, rule_violation)."""
    if len(mix) != len(ERROR_TYPES) or any(w < 0 for w in mix) or sum(mix) <= 0:
        raise ValueError(
            f"Error mix {tuple(mix)} must be {len(ERROR_TYPES)} non-negative weights for {ERROR_TYPES} with a "
            "positive sum, e.g. (1, 2, 2)."
        )
    return rng.choices(ERROR_TYPES, weights=mix, k=1)[0]


def make_backtrack_example(
    problem: Problem, solution: Sequence[Step], error_type: str, rng: random.Random
) -> tuple[list[Step], Step] | None:
    """``(prefix, wrong_step)``: the first k steps of ``solution`` (k uniform in 0..n-2) and an error at step k.

    If the error is impossible at the drawn position, the other positions are tried in a random order; None if it is
    impossible everywhere. ``solution`` must be a full solution (n-1 correct steps), e.g. from ``solver.solve``.
    """
    n_steps = len(problem.numbers) - 1
    if len(solution) != n_steps:
        raise ValueError(f"solution has {len(solution)} steps, expected {n_steps} for {problem}; use solver.solve().")
    return backtrack_example(make_error, problem, solution, error_type, rng)
