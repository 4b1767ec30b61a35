"""Tasks as plug-ins: a name in the YAML (``task: countdown``) picks a :class:`Task` from the registry.

Importing this package registers the built-in tasks (``countdown``, ``sudoku``). What a new task writes is
:class:`~backtrack_trl.tasks.contract.TaskContract` (subclass :class:`Task`, decorate with :func:`register_task`).

Usage:

```python
from backtrack_trl.tasks import TASKS, get_task

print(sorted(TASKS))  # ['countdown', 'sudoku']
task = get_task("countdown")
```
"""

from backtrack_trl.tasks.base import (
    BACKTRACK_TOKEN,
    GOAL_MARKER,
    RESPONSE_HEADER,
    TASKS,
    Task,
    Verdict,
    get_task,
    register_task,
)


# The built-in tasks register themselves on import (they import tasks.base, never this package: no cycle).
from backtrack_trl.tasks.countdown import CountdownTask  # isort: skip
from backtrack_trl.tasks.sudoku import SudokuTask  # isort: skip


def prompt_is_of(task: str, prompt: str) -> bool:
    """Whether task ``task`` parses ``prompt``."""
    try:
        get_task(task).parse_prompt(prompt)
    except (ValueError, TypeError, KeyError):
        return False
    return True


def task_for_prompt(prompt: str) -> str | None:
    """The first registered task (by name) whose prompt format ``prompt`` follows, None if none reads it."""
    return next((name for name in sorted(TASKS) if prompt_is_of(name, prompt)), None)


__all__ = [
    "BACKTRACK_TOKEN",
    "GOAL_MARKER",
    "RESPONSE_HEADER",
    "TASKS",
    "CountdownTask",
    "SudokuTask",
    "Task",
    "Verdict",
    "get_task",
    "prompt_is_of",
    "register_task",
    "task_for_prompt",
]
