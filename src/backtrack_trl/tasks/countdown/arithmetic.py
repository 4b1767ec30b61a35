"""What limits a Countdown model: its step arithmetic, measured on its answers and on single-step facts.

Two measurements:

- :func:`answer_arithmetic` reads answers (a decoder's chosen completions): the share of written steps whose result
  is the true result, split by position (first step, last step of the answer), and the share of answers whose last
  step *copies the target* with wrong arithmetic (``75-20=60`` for target 60), the forgery that likelihood selection
  cannot tell from a right answer.
- the single-fact probe (:mod:`backtrack_trl.evaluation.fact_probe`, which runs a model) asks for facts ``a<op>b=``
  written by :func:`probe_prompt` among :func:`enumerate_facts`; :func:`fact_split` divides a fact range into facts
  that occur as steps in the training data (:func:`training_facts`) and held-out ones, so the probe tells memorised
  facts from computed ones.

:func:`limiting_factor` turns the numbers into the one line a report prints.

Usage:

```python
from backtrack_trl.tasks.countdown.arithmetic import answer_arithmetic, enumerate_facts
from backtrack_trl.tasks.countdown.format import Problem

problems = [Problem((15, 5, 20), 60), Problem((3, 5, 2), 16)]
stats = answer_arithmetic(problems, ["15*5=75\\n75-20=60\\nGoal Reached!", "3*5=15\\n15+2=17\\nGoal Reached!"])
print(stats["last_step_right"], stats["target_copy"])  # 0.5 0.5
print(len(enumerate_facts(1, 9)))  # legal facts a<op>b with 1 <= b <= a <= 9
```
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from backtrack_trl.tasks.countdown.checkers import clean_response
from backtrack_trl.tasks.countdown.format import OPS, Problem, Step, apply_op, format_prompt, parse_step


__all__ = [
    "ARITHMETIC_LIMIT",
    "answer_arithmetic",
    "answer_steps",
    "enumerate_facts",
    "fact_split",
    "limiting_factor",
    "probe_prompt",
    "training_facts",
]

# Below this share of arithmetically right last steps, a model's answers are limited by its arithmetic: it cannot
# notice a wrong step it cannot compute (the bar for the CPU default is 95%).
ARITHMETIC_LIMIT = 0.95


def answer_steps(completion: str) -> list[Step]:
    """The step lines of an answer, in order, up to the first line that is not a step (markers included)."""
    steps = []
    for line in clean_response(completion).split("\n"):
        step = parse_step(line.strip())
        if step is None:
            break
        steps.append(step)
    return steps


def answer_arithmetic(problems: Sequence[Problem], completions: Sequence[str]) -> dict:
    """Arithmetic of a list of answers: shares of right steps (all, first, last) and of target-copy forgeries.

    A step is right when its written result equals the legal value of ``a<op>b`` (exact division, non-negative
    difference). ``target_copy`` is over all answers: the last step writes the target but computes something else.
    Shares are None when there is nothing to count (e.g. no answer has a step).
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions; pass one answer per problem.")
    steps = right = firsts = first_right = lasts = last_right = copies = 0
    for problem, completion in zip(problems, completions):
        written = answer_steps(completion)
        if not written:
            continue
        oks = [step.is_correct_arithmetic for step in written]
        steps += len(oks)
        right += sum(oks)
        firsts += 1
        first_right += oks[0]
        lasts += 1
        last_right += oks[-1]
        copies += (not oks[-1]) and written[-1].result == problem.target

    def share(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "answers": len(problems),
        "steps": steps,
        "step_right": share(right, steps),
        "first_step_right": share(first_right, firsts),
        "last_step_right": share(last_right, lasts),
        "target_copy": share(copies, len(problems)),
    }


def limiting_factor(last_step_right: float | None, accuracy: float, oracle: float | None) -> str:
    """One line: does arithmetic or the search (finding / choosing the right path) limit this decoder?"""
    if last_step_right is None:
        return "no steps written: the model does not follow the answer format"
    if last_step_right < ARITHMETIC_LIMIT:
        return (
            f"arithmetic limits the model: {100 * last_step_right:.1f}% of last steps are right "
            f"(< {100 * ARITHMETIC_LIMIT:.0f}%), so a wrong step cannot be noticed"
        )
    if oracle is not None and oracle - accuracy >= 0.05:
        return (
            f"selection limits the search: arithmetic is reliable ({100 * last_step_right:.1f}% right last steps) and "
            f"a right answer is among the candidates for {100 * oracle:.1f}% vs {100 * accuracy:.1f}% chosen"
        )
    return (
        f"search limits the model: arithmetic is reliable ({100 * last_step_right:.1f}% right last steps); the right "
        "path is not found"
    )


def enumerate_facts(min_operand: int, max_operand: int, ops: Iterable[str] = OPS) -> list[Step]:
    """Every legal fact ``a<op>b=c`` with ``min_operand <= b <= a <= max_operand`` (larger operand first, as the
    training data writes steps), in a fixed order."""
    if min_operand < 0 or max_operand < min_operand:
        raise ValueError(f"Operand range {min_operand}..{max_operand} is empty or negative; use e.g. 1..20.")
    ops = tuple(ops)
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"Unknown operator(s) {unknown}; use a subset of {list(OPS)}.")
    facts = []
    for a in range(min_operand, max_operand + 1):
        for b in range(min_operand, a + 1):
            for op in ops:
                value = apply_op(a, op, b)
                if value is not None:
                    facts.append(Step(a, op, b, value))
    return facts


def training_facts(completions: Iterable[str]) -> set[tuple[int, str, int]]:
    """``(a, op, b)`` of every arithmetically right step written in training completions (the facts a model saw)."""
    seen = set()
    for completion in completions:
        for step in answer_steps(completion):
            if step.is_correct_arithmetic:
                seen.add((step.a, step.op, step.b))
    return seen


def fact_split(facts: Sequence[Step], seen: set[tuple[int, str, int]]) -> tuple[list[Step], list[Step]]:
    """``(inside, held_out)``: the facts that occur in the training steps, and the others."""
    inside = [fact for fact in facts if (fact.a, fact.op, fact.b) in seen]
    held_out = [fact for fact in facts if (fact.a, fact.op, fact.b) not in seen]
    return inside, held_out


def probe_prompt(fact: Step, context: str = "prompt", num_numbers: int = 3, seed: int = 0) -> str:
    """The text the model continues for a fact probe.

    ``context="prompt"``: the fact as the first step of a Countdown answer, the way the model writes steps (a prompt
    with the operands among its numbers, fillers from the operands' range, and a target that is not the fact's
    result, so copying the target cannot pass); ``context="bare"``: the fact alone on a line (for models trained on
    fact lines, e.g. an arithmetic warm-up).
    """
    head = f"{fact.a}{fact.op}{fact.b}="
    if context == "bare":
        return head
    if context != "prompt":
        raise ValueError(f"context={context!r}; use 'prompt' (inside a Countdown answer) or 'bare' (a fact line).")
    if num_numbers < 2:
        raise ValueError(f"num_numbers={num_numbers} must be >= 2 (the fact's two operands).")
    rng = random.Random(((seed * 1_000_003 + fact.a) * 1_000_003 + fact.b) * 4 + OPS.index(fact.op))
    high = max(fact.a, 2)
    numbers = [fact.a, fact.b] + [rng.randint(1, high) for _ in range(num_numbers - 2)]
    rng.shuffle(numbers)
    target = rng.randint(1, 100)
    while target == fact.result:
        target = rng.randint(1, 100)
    return format_prompt(Problem(tuple(numbers), target)) + head
