"""Where an answer first goes wrong: the first step line a task's strict checker rejects.

Shared by the mistake rows of the study (:mod:`backtrack_trl.study.mistakes`) and the step rewards of GRPO
(:mod:`backtrack_trl.training.rewards`). Works for every task whose strict checker reads the lines in order.

Usage:

```python
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.wrong_steps import first_wrong_line

task = get_task("countdown")
problem = task.problem_from_row({"numbers": [3, 5, 2], "target": 16})
assert first_wrong_line(task, problem, ["3+5=8", "8*2=17"]) == (1, "incorrect_result")
assert first_wrong_line(task, problem, ["3+5=8", "8*2=16"]) is None
```
"""

from __future__ import annotations


def first_wrong_line(task, problem, lines: list[str]) -> tuple[int, str] | None:
    """Index and strict-checker reason of the first line that makes the answer wrong before its end, or None.

    A prefix of legal steps gets the checker's verdict for an answer that simply stops (the reason an empty answer
    gets); any other reason names the last line of the prefix as the wrong one."""
    stopped = task.check(problem, "", mode="strict").reason
    for index in range(len(lines)):
        verdict = task.check(problem, "\n".join(lines[: index + 1]), mode="strict")
        if verdict.reason != stopped:
            return index, verdict.reason
    return None
