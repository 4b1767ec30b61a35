"""Countdown problem generation: configuration, seen/new target split and deterministic problem sampling.

A problem is ``num_numbers`` numbers drawn uniformly from ``min_number..max_number`` and a target drawn uniformly from
a target list; unsolvable draws are rejected (every number must be used), so problems are uniform over solvable
``(numbers, target)`` pairs. The paper's setting (Stream of Search): 4 numbers in 1..99, targets 10..100, 10% of the
targets (9 of 91) held out as "new targets".

Determinism: everything is driven by ``random.Random`` instances. For multiprocessing, derive one seed per shard
with :func:`shard_seed` and call :func:`generate_problems_shard` in each worker; the result only depends on
``(config, targets, n, shard_seed, exclude)``, never on the worker or the process start method. Shards are not
deduplicated against each other: merge them and drop repeated :func:`problem_key` values.

Usage:

```python
from backtrack_trl.tasks.countdown.generator import CountdownConfig, generate_problems_shard, shard_seed, split_targets

config = CountdownConfig(num_numbers=4, min_number=1, max_number=99, min_target=10, max_target=100, seed=42)
seen, new = split_targets(config)  # 82 seen targets, 9 held out
problems = generate_problems_shard(config, seen, n=10, shard_seed=shard_seed(config.seed, "train", 0))
assert all(p.target in seen for p in problems)
```
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations_with_replacement

from backtrack_trl.tasks.countdown.format import Problem
from backtrack_trl.tasks.countdown.solver import is_solvable, reachable_values
from backtrack_trl.tasks.derived import shard_seed


__all__ = [
    "CountdownConfig",
    "count_distinct_problems",
    "generate_problems",
    "generate_problems_shard",
    "iter_problems",
    "problem_key",
    "sample_problem",
    "shard_seed",
    "split_targets",
]

MIN_NUMBERS, MAX_NUMBERS = 2, 6


@dataclass
class CountdownConfig:
    """The problem distribution. ``new_target_fraction`` of the targets ``min_target..max_target`` are held out."""

    num_numbers: int = field(default=4, metadata={"help": "Numbers per problem (the paper: 4)."})
    min_number: int = field(default=1, metadata={"help": "Smallest number (inclusive)."})
    max_number: int = field(default=99, metadata={"help": "Largest number (inclusive; the paper: 99)."})
    min_target: int = field(default=10, metadata={"help": "Smallest target (inclusive; the paper: 10)."})
    max_target: int = field(default=100, metadata={"help": "Largest target (inclusive; the paper: 100)."})
    new_target_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of the targets held out for test_new (the paper: 9 of 91)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the target split, the problems and the error draws."})

    def validate(self) -> CountdownConfig:
        """Raise ValueError naming the bad field and the fix; return self so it can be chained."""
        if not MIN_NUMBERS <= self.num_numbers <= MAX_NUMBERS:
            raise ValueError(
                f"CountdownConfig.num_numbers={self.num_numbers} is outside {MIN_NUMBERS}..{MAX_NUMBERS}; "
                f"set num_numbers between {MIN_NUMBERS} and {MAX_NUMBERS} (the paper uses 4)."
            )
        if self.min_number < 1:
            raise ValueError(
                f"CountdownConfig.min_number={self.min_number} must be >= 1 (Countdown numbers are positive); "
                "set min_number=1."
            )
        if self.min_number > self.max_number:
            raise ValueError(
                f"CountdownConfig number range is empty (min_number={self.min_number} > max_number={self.max_number}); "
                "set max_number >= min_number."
            )
        if self.min_target < 0:
            raise ValueError(f"CountdownConfig.min_target={self.min_target} must be >= 0; set min_target >= 0.")
        if self.min_target > self.max_target:
            raise ValueError(
                f"CountdownConfig target range is empty (min_target={self.min_target} > max_target={self.max_target}); "
                "set max_target >= min_target."
            )
        if not 0.0 <= self.new_target_fraction < 1.0:
            raise ValueError(
                f"CountdownConfig.new_target_fraction={self.new_target_fraction} must be in [0, 1); "
                "use e.g. 0.1 (the paper holds out 9 of 91 targets) or 0 for no held-out targets."
            )
        n_targets = self.max_target - self.min_target + 1
        if n_targets - num_new_targets(self) < 1:
            raise ValueError(
                f"CountdownConfig.new_target_fraction={self.new_target_fraction} holds out all {n_targets} targets of "
                f"{self.min_target}..{self.max_target}, leaving no seen targets; lower new_target_fraction or widen "
                "the target range."
            )
        return self


def num_new_targets(config: CountdownConfig) -> int:
    """How many targets are held out: ``round(fraction * n_targets)`` (9 of 91 for the paper), at least 1 if > 0."""
    n_targets = config.max_target - config.min_target + 1
    if config.new_target_fraction <= 0:
        return 0
    return max(1, round(config.new_target_fraction * n_targets))


def split_targets(config: CountdownConfig) -> tuple[list[int], list[int]]:
    """``(seen_targets, new_targets)``, both sorted, deterministic from ``config.seed``."""
    config.validate()
    targets = list(range(config.min_target, config.max_target + 1))
    # A dedicated Random: the split must not depend on any other use of the seed.
    new = sorted(random.Random(f"split-targets-{config.seed}").sample(targets, num_new_targets(config)))
    new_set = set(new)
    return [t for t in targets if t not in new_set], new


def problem_key(problem: Problem) -> tuple[tuple[int, ...], int]:
    """Identity of a problem for deduplication: the multiset of numbers and the target (order does not matter)."""
    return tuple(sorted(problem.numbers)), problem.target


def sample_problem(
    rng: random.Random, config: CountdownConfig, targets: Iterable[int], max_tries: int = 100_000
) -> Problem:
    """One solvable problem: uniform numbers and a uniform target from ``targets``, redrawn until solvable.

    Raises ValueError when ``max_tries`` draws give nothing solvable (the configuration is nearly unsolvable).
    """
    targets = targets if isinstance(targets, (list, tuple)) else sorted(targets)
    if not targets:
        raise ValueError("sample_problem got an empty target list; pass the seen or new targets of split_targets().")
    for _ in range(max_tries):
        numbers = tuple(rng.randint(config.min_number, config.max_number) for _ in range(config.num_numbers))
        target = rng.choice(targets)
        if is_solvable(numbers, target):
            return Problem(numbers, target)
    raise ValueError(
        f"No solvable problem in {max_tries} draws for {config} with targets {targets[:5]}...; widen the number "
        "range or lower the targets."
    )


def iter_problems(
    config: CountdownConfig,
    targets: Iterable[int],
    rng: random.Random,
    exclude: set | frozenset = frozenset(),
    max_duplicate_draws: int = 100_000,
) -> Iterator[Problem]:
    """Endless stream of distinct solvable problems (by :func:`problem_key`), skipping keys in ``exclude``.

    Stops with ValueError after ``max_duplicate_draws`` consecutive repeats: the space of problems is exhausted.
    """
    config.validate()
    targets = sorted(targets)
    seen = set()
    duplicates = 0
    while True:
        problem = sample_problem(rng, config, targets)
        key = problem_key(problem)
        if key in seen or key in exclude:
            duplicates += 1
            if duplicates >= max_duplicate_draws:
                raise ValueError(
                    f"Only {len(seen)} distinct problems found for {config} ({max_duplicate_draws} repeats in a row); "
                    "ask for fewer problems or widen the number/target ranges."
                )
            continue
        duplicates = 0
        seen.add(key)
        yield problem


def generate_problems(
    config: CountdownConfig,
    n: int,
    targets: Iterable[int],
    rng: random.Random,
    exclude: set | frozenset = frozenset(),
) -> list[Problem]:
    """``n`` distinct solvable problems with targets from ``targets``, none of whose keys is in ``exclude``."""
    if n < 0:
        raise ValueError(f"generate_problems needs n >= 0, got {n}.")
    stream = iter_problems(config, targets, rng, exclude)
    return [next(stream) for _ in range(n)]


def generate_problems_shard(
    config: CountdownConfig,
    targets: Iterable[int],
    n: int,
    shard_seed: int,
    exclude: set | frozenset = frozenset(),
) -> list[Problem]:
    """Picklable entry point for worker processes: ``n`` problems from ``random.Random(shard_seed)``."""
    return generate_problems(config, n, targets, random.Random(shard_seed), exclude)


def count_distinct_problems(
    config: CountdownConfig, targets: Sequence[int], max_multisets: int = 20_000
) -> int | None:
    """Exact number of distinct solvable problems (numbers multiset, target) with a target in ``targets``.

    None when the space has more than ``max_multisets`` number multisets (too slow to enumerate, and large anyway).
    """
    span = config.max_number - config.min_number + 1
    if math.comb(span + config.num_numbers - 1, config.num_numbers) > max_multisets:
        return None
    wanted = set(targets)
    numbers = range(config.min_number, config.max_number + 1)
    return sum(len(reachable_values(ms) & wanted) for ms in combinations_with_replacement(numbers, config.num_numbers))
