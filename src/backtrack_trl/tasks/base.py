"""The public :class:`Task` (the contract, what every task derives from it, the optional evaluation hooks) and the
registry of tasks by name.

A task's prompt ends with ``###Response:\\n``; its answer is one step per line, then ``Goal Reached!`` (solved) or a
line ``<backtrack>`` (the last step was wrong) (:mod:`backtrack_trl.tasks.frame`). What a new task writes is
:class:`~backtrack_trl.tasks.contract.TaskContract`; the rest comes with :class:`Task`.

Usage (the smallest complete task is in the docs, section "Adding a task"):

```python
from backtrack_trl.tasks import get_task

task = get_task("countdown")
problem = task.parse_prompt("###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n")
assert task.check(problem, "3+5=8\\n8*2=16\\nGoal Reached!").correct
```
"""

from __future__ import annotations

from backtrack_trl.tasks.derived import DerivedBehaviour, shard_seed
from backtrack_trl.tasks.frame import BACKTRACK_TOKEN, GOAL_MARKER, RESPONSE_HEADER, Verdict, clean_response
from backtrack_trl.tasks.hooks import EvaluationHooks


# The frame and shard_seed are re-exported: `from backtrack_trl.tasks.base import GOAL_MARKER` keeps working.
__all__ = [
    "BACKTRACK_TOKEN",
    "GOAL_MARKER",
    "RESPONSE_HEADER",
    "TASKS",
    "Task",
    "Verdict",
    "clean_response",
    "get_task",
    "register_task",
    "shard_seed",
]


class Task(DerivedBehaviour, EvaluationHooks):
    """One reasoning task. Subclass it, set the class attributes and implement the abstract methods of
    :class:`~backtrack_trl.tasks.contract.TaskContract`, and register it::

        @register_task
        class MyTask(Task):
            name = "my_task"
            ...

    Optional: the defaults of :class:`~backtrack_trl.tasks.derived.DerivedBehaviour` (e.g. ``problem_key``,
    ``card_text``) and the evaluation hooks of :class:`~backtrack_trl.tasks.hooks.EvaluationHooks`.
    """


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``task: <cls.name>`` in every recipe."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered.")
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"A task named {cls.name!r} is already registered ({TASKS[cls.name].__name__}).")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str | Task = "countdown") -> Task:
    """The registered task ``name`` (an instance is returned as is); a ValueError lists the known tasks."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        import difflib  # tasks/ imports nothing else of the package (not errors.closest)

        guess = difflib.get_close_matches(str(name).lower(), list(TASKS), n=1)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        raise ValueError(
            f"Unknown task {name!r}; known tasks: {sorted(TASKS)}{hint}. Set --task (`task:` in a YAML) to one of "
            "them, or register a new one with @register_task."
        )
    return TASKS[name]()
