"""What a trainer recipe (``recipes/sft.py``, ``recipes/preference.py``) runs, in every process of a launch.

``run_trainer(parse_args, train)`` parses the command line, trains, then tears the process group down: every rank
waits for the others first, so gloo does not abort a rank that exits early.

Usage:

```python
from backtrack_trl.training.launch import run_trainer
from backtrack_trl.training.sft import train
from backtrack_trl.training.sft_config import parse_args

run_trainer(parse_args, train)  # the whole of recipes/sft.py's main()
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def shutdown_distributed() -> None:
    """Wait for every rank, then tear the process group down (avoids gloo aborting a rank that exits first)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run_trainer(parse_args: Callable[[], tuple], train: Callable[..., Any]) -> Any:
    """``train(*parse_args())`` (script, training and model arguments), then :func:`shutdown_distributed`."""
    result = train(*parse_args())
    shutdown_distributed()
    return result
