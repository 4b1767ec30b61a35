"""Problem generation: target split, determinism, uniqueness, validation errors."""

import random

import pytest

from backtrack_trl.tasks.countdown.generator import (
    CountdownConfig,
    generate_problems,
    generate_problems_shard,
    iter_problems,
    problem_key,
    sample_problem,
    shard_seed,
    split_targets,
)
from backtrack_trl.tasks.countdown.solver import is_solvable


def test_paper_split_holds_out_9_of_91_targets_deterministically():
    config = CountdownConfig()
    seen, new = split_targets(config)
    assert len(seen) == 82 and len(new) == 9
    assert sorted(seen + new) == list(range(10, 101))
    assert split_targets(CountdownConfig()) == (seen, new)
    assert split_targets(CountdownConfig(seed=43))[1] != new


def test_seen_split_never_produces_held_out_targets_and_problems_are_solvable_and_unique():
    config = CountdownConfig(num_numbers=4, max_number=99)
    seen, new = split_targets(config)
    problems = generate_problems(config, 300, seen, random.Random(0))
    assert all(p.target in seen and p.target not in new for p in problems)
    assert all(len(p.numbers) == 4 and all(1 <= n <= 99 for n in p.numbers) for p in problems)
    assert all(is_solvable(p.numbers, p.target) for p in problems)
    assert len({problem_key(p) for p in problems}) == 300


def test_deterministic_under_seed_and_exclude():
    config = CountdownConfig(num_numbers=3, max_number=20, min_target=1, max_target=50)
    seen, _ = split_targets(config)
    first = generate_problems_shard(config, seen, 50, shard_seed=7)
    assert first == generate_problems_shard(config, seen, 50, shard_seed=7)
    assert first != generate_problems_shard(config, seen, 50, shard_seed=8)
    excluded = {problem_key(p) for p in first}
    others = generate_problems_shard(config, seen, 50, shard_seed=7, exclude=excluded)
    assert not excluded & {problem_key(p) for p in others}
    assert shard_seed(42, "train", 0) == shard_seed(42, "train", 0) != shard_seed(42, "train", 1)
    assert shard_seed(42, "train", 0) != shard_seed(42, "test_seen", 0)
    problem = sample_problem(random.Random(1), config, seen)
    assert problem == sample_problem(random.Random(1), config, seen)


def test_exhausted_problem_space_raises():
    config = CountdownConfig(
        num_numbers=2, min_number=1, max_number=2, min_target=1, max_target=4, new_target_fraction=0
    )
    stream = iter_problems(config, range(1, 5), random.Random(0), max_duplicate_draws=200)
    with pytest.raises(ValueError, match="distinct problems"):
        for _ in range(100):
            next(stream)


def test_unsolvable_configuration_raises():
    config = CountdownConfig(num_numbers=2, min_number=1, max_number=1, min_target=50, max_target=60)
    with pytest.raises(ValueError, match="No solvable problem"):
        sample_problem(random.Random(0), config, [50], max_tries=100)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_numbers": 1}, "num_numbers"),
        ({"num_numbers": 7}, "num_numbers"),
        ({"min_number": 0}, "min_number"),
        ({"min_number": 50, "max_number": 10}, "max_number"),
        ({"min_target": 100, "max_target": 10}, "max_target"),
        ({"min_target": -1}, "min_target"),
        ({"new_target_fraction": 1.0}, "new_target_fraction"),
        ({"new_target_fraction": -0.1}, "new_target_fraction"),
        ({"min_target": 5, "max_target": 5, "new_target_fraction": 0.5}, "no seen targets"),
    ],
)
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CountdownConfig(**kwargs).validate()


def test_small_fraction_still_holds_out_one_target_and_zero_holds_out_none():
    assert len(split_targets(CountdownConfig(min_target=1, max_target=5, new_target_fraction=0.01))[1]) == 1
    seen, new = split_targets(CountdownConfig(new_target_fraction=0))
    assert new == [] and len(seen) == 91
