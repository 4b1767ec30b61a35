"""Which checkpoint a training run resumes from: ``resume_from_checkpoint`` as recipes and the study loop use it.

- unset / ``false``: the last ``checkpoint-*`` of ``output_dir`` when there is one (an interrupted run continues),
  else None (a fresh start);
- ``true`` / ``last``: the last checkpoint, and an error when ``output_dir`` holds none;
- a path: that checkpoint.

Usage:

```python
from trl import SFTConfig

from backtrack_trl.training.checkpoints import resume_checkpoint

training_args = SFTConfig("models/countdown-tiny/backtrack-sft", use_cpu=True, bf16=False)
checkpoint = resume_checkpoint(training_args)  # None, or ".../checkpoint-40"
```
"""

from __future__ import annotations

import os

from transformers.trainer_utils import get_last_checkpoint


def resume_checkpoint(training_args) -> str | None:
    """The checkpoint to pass to ``trainer.train(resume_from_checkpoint=...)`` (see the module docstring)."""
    requested = training_args.resume_from_checkpoint
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if requested in (None, "", "False", "false"):
        return last
    if requested in ("True", "true", True, "last"):
        if last is None:
            raise ValueError(
                f"resume_from_checkpoint asks for the last checkpoint but {training_args.output_dir!r} has none."
            )
        return last
    return requested
