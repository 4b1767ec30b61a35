"""Tasks as plug-ins: a name in the YAML (``task: countdown``) picks a :class:`Task` from the registry.

Usage:

```python
from backtrack_trl.tasks import TASKS, get_task

print(sorted(TASKS))  # ['countdown', ...] once get_task has loaded the built-in tasks
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


__all__ = [
    "BACKTRACK_TOKEN",
    "GOAL_MARKER",
    "RESPONSE_HEADER",
    "TASKS",
    "Task",
    "Verdict",
    "get_task",
    "register_task",
]
