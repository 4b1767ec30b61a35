"""Sharding over accelerate processes: every item once, in item order, item i seeded seed + i on any process."""

import contextlib

from backtrack_trl.distributed import solve_sharded


class FakeState:
    """Process ``index`` of ``count``, with accelerate's contiguous split (what PartialState does)."""

    def __init__(self, index: int, count: int):
        self.process_index, self.num_processes = index, count
        self.is_main_process = index == 0

    @contextlib.contextmanager
    def split_between_processes(self, indices):
        size, extra = divmod(len(indices), self.num_processes)
        start = self.process_index * size + min(self.process_index, extra)
        yield indices[start : start + size + (self.process_index < extra)]


def _solve(calls):
    def solve(items, seeds, progress):
        calls.append({"items": items, "seeds": seeds, "progress": progress})
        return [{"item": item, "seed": seed} for item, seed in zip(items, seeds)]

    return solve


def test_one_process_solves_every_item_in_order_with_its_seed():
    calls = []
    results = solve_sharded(FakeState(0, 1), _solve(calls), ["a", "b", "c"], seed=10, progress=True)
    assert results == [{"item": "a", "seed": 10}, {"item": "b", "seed": 11}, {"item": "c", "seed": 12}]
    assert calls[0]["progress"] is True


def test_other_processes_solve_their_share_with_the_same_seeds_and_return_none():
    calls = []
    assert solve_sharded(FakeState(1, 2), _solve(calls), ["a", "b", "c"], seed=10, progress=True) is None
    assert calls == [{"items": ["c"], "seeds": [12], "progress": False}]  # progress bar on the main process only


def test_results_are_encoded_for_the_gather_and_decoded_in_item_order():
    results = solve_sharded(
        FakeState(0, 1), _solve([]), ["x", "y"], seed=0, encode=lambda r: (r["item"], r["seed"]), decode=list
    )
    assert results == [["x", 0], ["y", 1]]
