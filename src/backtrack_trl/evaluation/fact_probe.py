"""Single-step fact probes of a model (a task's probe runs the model, so it lives here, not in the task), keyed by
task name: Countdown's asks for facts ``a<op>b=`` (greedy, one line) inside vs held out from the training steps.

``recipes/evaluate_decoders.py --probe_facts true`` runs the task's probe (:func:`fact_probe_for`) on the train split
and writes ``fact_probe.json``, which the evaluation table and the study report show. A task without a probe has
None; a new task registers one with :func:`register_fact_probe`.

Usage:

```python
from backtrack_trl.evaluation.fact_probe import fact_probe_for, run_fact_probe
from backtrack_trl.tasks import get_task

assert fact_probe_for(get_task("sudoku")) is None
probe = fact_probe_for(get_task("countdown"))  # probe(model, tokenizer, train_rows, options) -> report dict
# report = run_fact_probe(model, tokenizer, ["3+5=8\\n8*2=16\\nGoal Reached!"], max_operand=9)
```
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from backtrack_trl.decoding.tokens import stock_generate
from backtrack_trl.tasks.base import Task
from backtrack_trl.tasks.countdown.arithmetic import enumerate_facts, fact_split, probe_prompt, training_facts
from backtrack_trl.tasks.countdown.format import OPS, Step


__all__ = ["FACT_PROBES", "fact_probe_for", "probe_facts", "register_fact_probe", "run_fact_probe"]

#: Task name -> ``probe(model, tokenizer, train_rows, options) -> dict`` (``options``: the evaluation's ``probe_*``).
FACT_PROBES: dict[str, Callable[..., dict]] = {}


def register_fact_probe(task_name: str):
    """Decorator: make the function the fact probe of task ``task_name``."""

    def register(probe: Callable[..., dict]) -> Callable[..., dict]:
        FACT_PROBES[task_name] = probe
        return probe

    return register


def fact_probe_for(task: Task) -> Callable[..., dict] | None:
    """The fact probe of ``task``, or None when the task has none."""
    return FACT_PROBES.get(task.name)


def probe_facts(
    model,
    tokenizer,
    facts: Sequence[Step],
    context: str = "prompt",
    num_numbers: int = 3,
    batch_size: int = 256,
    seed: int = 0,
) -> list[bool]:
    """Greedy completion of each fact's ``a<op>b=``: True where the digits written before the line ends are the
    fact's result. Left-padded batches; at most a few tokens per fact."""
    import torch

    if not facts:
        return []
    device = next(model.parameters()).device
    max_new = len(str(max(fact.result for fact in facts))) + 2
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    right = []
    try:
        for start in range(0, len(facts), batch_size):
            chunk = facts[start : start + batch_size]
            texts = [probe_prompt(fact, context, num_numbers, seed) for fact in chunk]
            batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                out = stock_generate(
                    model,
                    **batch,
                    max_new_tokens=max_new,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for fact, text in zip(chunk, new):
                digits = text.split("\n", 1)[0].strip()
                right.append(digits == str(fact.result))
    finally:
        tokenizer.padding_side = side
    return right


def run_fact_probe(
    model,
    tokenizer,
    train_completions: Iterable[str],
    min_operand: int = 1,
    max_operand: int = 20,
    max_facts: int = 1000,
    context: str = "prompt",
    num_numbers: int = 3,
    seed: int = 0,
) -> dict:
    """Greedy fact accuracy over ``min_operand..max_operand``, inside vs held out from the training steps.

    At most ``max_facts`` facts of each group are asked (a seeded sample). Returns ``{"inside": ..., "held_out":
    ...}`` with ``facts``, ``accuracy`` (None for an empty group) and ``by_op`` accuracies, plus the settings.
    """
    inside, held_out = fact_split(enumerate_facts(min_operand, max_operand), training_facts(train_completions))
    rng = random.Random(seed)
    report = {"min_operand": min_operand, "max_operand": max_operand, "context": context}
    for name, group in (("inside", inside), ("held_out", held_out)):
        sample = group if len(group) <= max_facts else rng.sample(group, max_facts)
        right = probe_facts(model, tokenizer, sample, context=context, num_numbers=num_numbers, seed=seed)
        by_op = {}
        for op in OPS:
            oks = [ok for fact, ok in zip(sample, right) if fact.op == op]
            by_op[op] = sum(oks) / len(oks) if oks else None
        report[name] = {
            "facts": len(sample),
            "of": len(group),
            "accuracy": sum(right) / len(right) if right else None,
            "by_op": by_op,
        }
    return report


@register_fact_probe("countdown")
def countdown_fact_probe(model, tokenizer, train_rows, options: Mapping[str, Any]) -> dict:
    """Countdown's probe: facts ``a<op>b=`` inside vs held out from the steps of the train split's solutions."""
    num_numbers = len(train_rows[0]["numbers"]) if len(train_rows) else 3
    # The facts a model was trained to write: the steps of the solutions (wrong steps may be masked).
    kinds = train_rows["kind"] if "kind" in train_rows.column_names else ["optimal"] * len(train_rows)
    solutions = [completion for completion, kind in zip(train_rows["completion"], kinds) if kind == "optimal"]
    return run_fact_probe(model, tokenizer, solutions, num_numbers=num_numbers, **options)
