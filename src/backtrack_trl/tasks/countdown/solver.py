"""Exact Countdown solver: is a state solvable, one optimal solution, and the legal moves of a state.

A *state* is the multiset of numbers still available, kept as a sorted tuple so that equal multisets share one cache
entry. A move combines two of them with ``+``, ``*``, larger-minus-smaller or exact division and puts the result back.
A state is solvable for ``target`` when some sequence of moves that uses every number ends at exactly ``target``
(a single number is solvable iff it equals the target). Every solution therefore has ``len(numbers) - 1`` steps.

Every value reachable with a smaller-operand-first order (``b - a`` is negative, ``b / a`` is only exact for
``b == 0``) is also reachable with the larger operand first, so the solver only writes steps as ``a<op>b`` with
``a >= b``: the convention of the training data.

Speed: the values reachable from a state of up to three numbers are memoised per state (independent of the target),
and a four-number state needs at most 24 set look-ups, so a 4-number problem in 1..99 is decided in tens of
microseconds once the caches are warm. Larger states recurse with ``(state, target)`` memoisation.

Usage:

```python
from backtrack_trl.tasks.countdown.solver import is_solvable, legal_steps, solve

assert is_solvable((2, 39, 45, 10), 62)
steps = solve((2, 39, 45, 10), 62)  # e.g. [45-39=6, 10*6=60, 60+2=62]
assert len(steps) == 3 and steps[-1].result == 62
assert not is_solvable((1, 1), 5)
first_moves = legal_steps((2, 39, 45, 10))  # [(Step, remaining state), ...]
```
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import lru_cache

from backtrack_trl.tasks.countdown.format import Step


__all__ = ["is_solvable", "legal_steps", "reachable_values", "solve", "canonical_state", "clear_caches"]

# Large caches: paper-scale generation touches millions of distinct small states. Entries are small tuples/frozensets.
_CACHE_SIZE = 1 << 21


def canonical_state(numbers: Iterable[int]) -> tuple[int, ...]:
    """The sorted tuple used as the key of a multiset of numbers."""
    return tuple(sorted(int(n) for n in numbers))


def _pair_values(a: int, b: int) -> list[tuple[str, int]]:
    """Legal ``(op, result)`` for ``a >= b``, in the fixed order + - * /, skipping results already produced.

    Duplicates (``a*1`` and ``a/1``, ``2+2`` and ``2*2``) lead to the same state, so keeping the first one prunes the
    search without losing any solution.
    """
    out = [("+", a + b)]
    seen = {a + b}
    for op, value in (("-", a - b), ("*", a * b)):
        if value not in seen:
            out.append((op, value))
            seen.add(value)
    if b != 0 and a % b == 0 and a // b not in seen:
        out.append(("/", a // b))
    return out


@lru_cache(maxsize=_CACHE_SIZE)
def _successors(state: tuple[int, ...]) -> tuple[tuple[Step, tuple[int, ...]], ...]:
    """All distinct legal moves of a sorted state: each is ``(step, next_state)``; one move per next state."""
    moves = []
    seen_states = set()
    n = len(state)
    seen_pairs = set()
    for i in range(n):
        for j in range(i + 1, n):
            b, a = state[i], state[j]  # state is sorted, so a >= b
            if (a, b) in seen_pairs:
                continue
            seen_pairs.add((a, b))
            rest = state[:i] + state[i + 1 : j] + state[j + 1 :]
            for op, value in _pair_values(a, b):
                next_state = tuple(sorted(rest + (value,)))
                if next_state in seen_states:
                    continue
                seen_states.add(next_state)
                moves.append((Step(a, op, b, value), next_state))
    return tuple(moves)


def _combine(left: frozenset[int] | set[int], right: frozenset[int] | set[int]) -> set[int]:
    """Values of ``v op w`` for v in left, w in right (either order, legal ops only)."""
    values: set[int] = set()
    for v in left:
        for w in right:
            a, b = (v, w) if v >= w else (w, v)
            values.update(value for _, value in _pair_values(a, b))
    return values


@lru_cache(maxsize=None)
def _split_indices(n: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Index splits of ``range(n)`` into two non-empty parts; index 0 always goes left so each split appears once."""
    out = []
    for mask in range(1 << (n - 1)):
        left = (0,) + tuple(i + 1 for i in range(n - 1) if mask >> i & 1)
        right = tuple(i + 1 for i in range(n - 1) if not mask >> i & 1)
        if right:
            out.append((left, right))
    return tuple(out)


def _splits(state: tuple[int, ...]):
    """Unordered splits of a sorted state into two non-empty sorted sub-multisets (duplicates by value skipped)."""
    seen = set()
    for left_idx, right_idx in _split_indices(len(state)):
        split = (tuple(state[i] for i in left_idx), tuple(state[i] for i in right_idx))
        if split not in seen:
            seen.add(split)
            yield split


@lru_cache(maxsize=_CACHE_SIZE)
def _reachable_small(state: tuple[int, ...]) -> frozenset[int]:
    """Values reachable using every number of a sorted state of 1..3 numbers.

    Any expression tree splits at its root into two sub-multisets, so the value set is the union over splits of the
    combined value sets of the parts. Keys are sub-multisets of the problem's own numbers, which recur a lot across
    random problems (there are only ~166k multisets of three numbers in 1..99).
    """
    if len(state) == 1:
        return frozenset(state)
    if len(state) == 2:
        b, a = state
        return frozenset(value for _, value in _pair_values(a, b))
    values: set[int] = set()
    for left, right in _splits(state):
        values |= _combine(_reachable_small(left), _reachable_small(right))
    return frozenset(values)


def _reaches(left_values, right_values, target: int) -> bool:
    """Whether some ``v op w`` equals target, for v in left_values and w in right_values (target-directed)."""
    for v in left_values:
        if v == 0 and target == 0:
            return True  # 0 * w
        candidates = {target - v, v - target, v + target, v * target}
        if v and target % v == 0:
            candidates.add(target // v)
        if target and v % target == 0:
            candidates.add(v // target)
        for w in candidates:
            if w >= 0 and w in right_values:
                a, b = (v, w) if v >= w else (w, v)
                # Confirm with the real arithmetic: handles the zero edge cases of the candidate formulas.
                if any(value == target for _, value in _pair_values(a, b)):
                    return True
    return False


@lru_cache(maxsize=_CACHE_SIZE)
def _solvable_large(state: tuple[int, ...], target: int) -> bool:
    """Solvability of a sorted state of 4+ numbers.

    Four numbers: target-directed over the root splits (3+1 and 2+2), using the memoised value sets of the parts.
    More numbers: recurse over moves with ``(state, target)`` memoisation down to four numbers.
    """
    if len(state) == 4:
        for left, right in _splits(state):
            left_values, right_values = _reachable_small(left), _reachable_small(right)
            if len(left_values) > len(right_values):
                left_values, right_values = right_values, left_values
            if _reaches(left_values, right_values, target):
                return True
        return False
    return any(_solvable_large(next_state, target) for _, next_state in _successors(state))


def _solvable_sorted(state: tuple[int, ...], target: int) -> bool:
    if not state:
        return False
    if len(state) <= 2:
        return target in _reachable_small(state)
    if len(state) == 3:
        # Target-directed over the three 1+2 splits: cheaper than building the whole value set of a state that
        # holds an intermediate result (those rarely recur, so caching their value sets would not pay off).
        return any(_reaches(_reachable_small(left), _reachable_small(right), target) for left, right in _splits(state))
    return _solvable_large(state, target)


def reachable_values(numbers: Iterable[int]) -> frozenset[int]:
    """Every value reachable using all of ``numbers`` (exhaustive; meant for up to ~5 numbers)."""
    state = canonical_state(numbers)
    if not state:
        return frozenset()
    if len(state) <= 3:
        return _reachable_small(state)
    values: set[int] = set()
    for left, right in _splits(state):
        values |= _combine(reachable_values(left), reachable_values(right))
    return frozenset(values)


def is_solvable(numbers: Iterable[int], target: int) -> bool:
    """True iff combining all of ``numbers`` (each exactly once) can end at exactly ``target``."""
    state = canonical_state(numbers)
    if any(n < 0 for n in state):
        raise ValueError(f"Countdown numbers must be non-negative, got {state}.")
    return _solvable_sorted(state, int(target))


def legal_steps(numbers: Iterable[int]) -> list[tuple[Step, tuple[int, ...]]]:
    """Distinct legal moves of a state: ``(step, remaining sorted state)``, larger operand first, in a fixed order.

    Moves that lead to the same next state (``a*1`` vs ``a/1``, ``2+2`` vs ``2*2``) are listed once (the first).
    """
    return list(_successors(canonical_state(numbers)))


def solve(numbers: Iterable[int], target: int, rng: random.Random | None = None) -> list[Step] | None:
    """One solution using every number exactly once (``len(numbers) - 1`` steps), or None if there is none.

    Without ``rng`` the result is deterministic: at each state the first legal move (pairs in ascending sorted order,
    ops in the order + - * /) that keeps the state solvable. With ``rng`` the moves are tried in a random order drawn
    from it, which is deterministic for a seeded ``random.Random`` and gives more varied training paths.
    """
    state = canonical_state(numbers)
    target = int(target)
    if not state or not is_solvable(state, target):
        return None
    steps: list[Step] = []
    while len(state) > 1:
        moves = _successors(state)
        if rng is not None:
            moves = list(moves)
            rng.shuffle(moves)
        for step, next_state in moves:
            if _solvable_sorted(next_state, target):
                steps.append(step)
                state = next_state
                break
        else:  # pragma: no cover - is_solvable guarantees a solvable successor
            raise RuntimeError(f"Solver inconsistency on state {state} -> {target}.")
    return steps


def clear_caches() -> None:
    """Free the memoisation caches (e.g. between very different workloads)."""
    for cached in (_successors, _reachable_small, _solvable_large):
        cached.cache_clear()
