"""One logging set-up for every recipe (open-r1's format): timestamps, level and logger name on stdout.

Usage:

```python
from backtrack_trl.logs import setup_logging

setup_logging()  # a plain recipe: INFO for backtrack_trl
setup_logging(training_args)  # a trainer recipe: per-process levels from log_level / log_level_replica
```
"""

from __future__ import annotations

import logging
import sys


FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"


def setup_logging(training_args=None) -> None:
    """Configure the root handler once; with ``training_args`` (a ``TrainingArguments``) also the per-process level of
    this package, ``datasets`` and ``transformers``, as TRL's scripts do."""
    logging.basicConfig(format=FORMAT, datefmt="%Y-%m-%d %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    if training_args is None:
        logging.getLogger("backtrack_trl").setLevel(logging.INFO)
        return
    import datasets
    import transformers

    log_level = training_args.get_process_log_level()
    # backtrack-trl's own messages (token added, rank summaries) show at INFO on the main process by default.
    ours = logging.INFO if training_args.log_level == "passive" and training_args.should_log else log_level
    logging.getLogger("backtrack_trl").setLevel(ours)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
