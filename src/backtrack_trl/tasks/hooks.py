"""Optional evaluation hooks of a task: table labels, a diagnosis of the chosen answers, a limit line, reference
figures and an ``evaluate`` metric. A task that sets none of them is evaluated by its checkers alone.

(A task's single-step probe of a model lives on the evaluation side: :mod:`backtrack_trl.evaluation.fact_probe`.)

Usage:

```python
from backtrack_trl.tasks import get_task

countdown = get_task("countdown")
diagnosis = countdown.diagnose([countdown.parse_prompt("###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n")],
                               ["3+5=8\\n8*2=16\\nGoal Reached!"])
print(countdown.limiting_factor(diagnosis, accuracy=0.5, oracle=0.9))  # selection limits the search: ...
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class EvaluationHooks:
    """What the evaluation table and the study report ask a task; every hook has a default."""

    #: Short table headers of ``reasons`` (default: the reason with spaces).
    reason_labels: ClassVar[Mapping[str, str]] = {}
    #: Columns of :meth:`diagnose` for the evaluation table: ``(key, header)`` pairs (values are shares, 0..1).
    diagnosis_columns: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: A sentence explaining :attr:`diagnosis_columns` under the evaluation table.
    diagnosis_text: ClassVar[str] = ""
    #: Published figures the study report prints beside its own: ``{"label": column header, "note": where they come
    #: from, "table": {(model, decoder key): (seen, new)}, "rounds": {"seen": (...), "new": (...)}}`` (Countdown:
    #: the paper's Table 1).
    reference_results: ClassVar[Mapping[str, Any]] = {}
    #: Folder name of the task's ``evaluate`` metric under ``metrics/`` (None: the checkers alone).
    metric_name: ClassVar[str | None] = None

    def diagnose(self, problems: Sequence, completions: Sequence[str]) -> dict[str, float | None]:
        """Task-specific shares of the chosen answers for the evaluation table (e.g. Countdown's step arithmetic)."""
        return {}

    def limiting_factor(self, diagnosis: Mapping[str, Any], accuracy: float, oracle: float | None) -> str:
        """One line: what limits a decoder whose answers got ``diagnosis`` (see :meth:`diagnose`)?"""
        if oracle is not None and oracle - accuracy >= 0.05:
            return (
                f"selection limits the search: a right answer is among the candidates for {100 * oracle:.1f}% vs "
                f"{100 * accuracy:.1f}% chosen"
            )
        return "search limits the model: the right path is not among the candidates"
