"""Share a list of items over the ``accelerate launch`` processes and gather the results on the main process.

Process p solves its slice of the items (``PartialState.split_between_processes``) and item i always gets the seed
``seed + i``, whatever process it lands on, so the results do not depend on the number of processes. The main
process gets every result back (``gather_object``) in item order; the others get None.

Usage:

```python
from accelerate import PartialState

from backtrack_trl.distributed import solve_sharded


def solve(items, seeds, progress):  # as a decoder's solve(): one result per item
    return [f"{item}@{seed}" for item, seed in zip(items, seeds)]


print(solve_sharded(PartialState(cpu=True), solve, ["a", "b", "c"], seed=10))  # ['a@10', 'b@11', 'c@12'] (main)
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def _same(value: Any) -> Any:
    return value


def solve_sharded(
    state,
    solve: Callable[..., list[Any]],
    items: Sequence[Any],
    seed: int,
    progress: bool = False,
    encode: Callable[[Any], Any] = _same,
    decode: Callable[[Any], Any] = _same,
) -> list[Any] | None:
    """``solve(shard_items, seeds=[seed + i ...], progress=...)`` on this process's share of ``items`` (a progress
    bar on the main process only, when ``progress``); on the main process the decoded results of all items in item
    order, None on the others. ``encode`` turns a result into what ``gather_object`` pickles between processes (e.g.
    ``SearchResult.to_dict``) and ``decode`` turns it back (always applied, so one process gives the same objects as
    many)."""
    from accelerate.utils import gather_object

    with state.split_between_processes(list(range(len(items)))) as shard:
        shard = list(shard)
        results = solve(
            [items[i] for i in shard], seeds=[seed + i for i in shard], progress=progress and state.is_main_process
        )
        local = [(i, encode(result)) for i, result in zip(shard, results)]
    gathered = gather_object(local) if state.num_processes > 1 else local
    if not state.is_main_process:
        return None
    return [decode(data) for _, data in sorted(gathered, key=lambda item: item[0])]
