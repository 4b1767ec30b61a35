"""Rule checkers for Countdown answers: a strict one and one that reproduces the paper's released checker.

Both take the problem and the *response* (the text after ``###Response:\\n``) and return a :class:`Verdict` whose
``reason`` is one of :data:`REASONS`. Neither ever calls ``eval``.

Input tolerance (both modes): trailing whitespace and trailing ``</s>`` / ``<pad>`` texts at the very end of the
response are ignored, so a decode with ``skip_special_tokens=False`` can be passed as is. Nothing else is cleaned.

**Strict** (``mode="strict"``, the project's default). The response must be exactly ``len(numbers) - 1`` lines
``a<op>b=c`` (no spaces, ops ``+ - * /``, every number written canonically as ``str(int)`` writes it: no leading zero
as in ``09``, no ``+5``, no ``5.0``) and then the line ``Goal Reached!``, with nothing after it. The lines are checked in order and the first failure decides the reason:

1. ``invalid_format``: a line that is neither a step nor a marker (spaces, empty line, text, a number not written
   canonically such as ``09/3=3``), or anything after the goal marker (a step, junk, ``<backtrack>``).
2. ``unknown_numbers``: an operand not in the current multiset (never given, already used, or used twice when given
   once). Checked before the arithmetic of the same line.
3. ``incorrect_result``: wrong arithmetic, including floor division (``116/32=3``), a negative difference
   (``3-5=...``) and division by zero.
4. ``not_reached_target``: the steps are fine but the response stops (no goal marker, or a ``<backtrack>`` line),
   or the goal marker comes while the numbers left are not exactly ``[target]`` (last result not the target, or
   unused numbers).

``correct`` is returned only when all numbers were used exactly once and the last result is the target.

**Official** (``mode="official"``, the checker the paper's accuracies were measured with, reimplemented). The steps
are the lines before the *first* ``<backtrack>`` or ``Goal Reached!`` (either marker counts; text after it is
ignored); none -> ``invalid_format``. Each line is matched with ``(\\d+)\\s*([+\\-*/])\\s*(\\d+)\\s*=\\s*(\\d+)`` at its
start (spaces allowed, trailing text ignored; no match -> ``invalid_format``); its numbers are read with ``int``, so
leading zeros pass (``09/3=3`` is ``9/3=3``) while ``+5`` does not match and ``9/3=3.0`` reads as ``9/3=3`` (the
``.0`` is trailing text), exactly as the released checker reads them. An operand counts as available when
its *value* is in the current list (``unknown_numbers`` otherwise); arithmetic uses floor division (``incorrect_result``
when the written result differs or on division by zero); then *every* occurrence of both operand values is removed
and the result appended. Unused numbers are allowed: the answer is ``correct`` iff the last step's result equals the
target (else ``not_reached_target``). The value-based removal also rejects some valid answers with repeated numbers
(``[5, 5, 3, 7]``: after ``5+3=8`` no ``5`` is left), exactly as the released code does.

Usage:

```python
from backtrack_trl.tasks.countdown.checkers import check
from backtrack_trl.tasks.countdown.format import Problem

problem = Problem((2, 39, 45, 10), 62)
assert check(problem, "45-39=6\\n10*6=60\\n60+2=62\\nGoal Reached!").correct
verdict = check(problem, "45-39=6\\n10*6=60\\n60+2=63\\nGoal Reached!")
assert verdict.reason == "incorrect_result"
assert check(problem, "45/39=1\\n10*2=20\\nGoal Reached!", mode="strict").reason == "incorrect_result"
assert check(Problem((116, 32, 7), 10), "116/32=3\\n7+3=10\\nGoal Reached!", mode="official").correct
```
"""

from __future__ import annotations

import re
from collections import Counter

from backtrack_trl.tasks.countdown.format import BACKTRACK_TOKEN, GOAL_MARKER, NUMBER_PATTERN, Problem, parse_step
from backtrack_trl.tasks.frame import Verdict, clean_response


__all__ = ["MODES", "REASONS", "Verdict", "check", "check_official", "check_strict", "clean_response"]

REASONS = ("correct", "not_reached_target", "incorrect_result", "unknown_numbers", "invalid_format")
MODES = ("strict", "official")
_OFFICIAL_RESPONSE_RE = re.compile(r"(.*?)(?:<backtrack>|Goal Reached!)", re.DOTALL)
# [0-9] rather than \d: Python's \d also matches non-ASCII digits. The released code uses \d with re.match on
# str input; restricting it to ASCII only changes the verdict on text no tokenizer of this project can produce.
_OFFICIAL_STEP_RE = re.compile(rf"({NUMBER_PATTERN})\s*([+\-*/])\s*({NUMBER_PATTERN})\s*=\s*({NUMBER_PATTERN})")
# A step whose only fault is how a number is written (``09/3=3``, ``5+3=008``): the strict checker says so.
_DIGITS_STEP_RE = re.compile(rf"({NUMBER_PATTERN})([+\-*/])({NUMBER_PATTERN})=(-?)({NUMBER_PATTERN})")


def _show(values: Counter) -> list[int]:
    return sorted(values.elements())


def _not_a_step(index: int, line: str) -> str:
    digits = _DIGITS_STEP_RE.fullmatch(line)
    if digits is None:
        return f"line {index} {line!r} is not 'a<op>b=c' or a marker"
    a, op, b, sign, result = digits.groups()
    canonical = f"{int(a)}{op}{int(b)}={sign if int(result) else ''}{int(result)}"
    return f"line {index} {line!r} writes a number with a leading zero (or -0); strict reads {canonical!r} only"


def check_strict(problem: Problem, response: str) -> Verdict:
    """Strict check (see the module docstring for the rules and the precedence of the reasons)."""
    text = clean_response(response)
    lines = text.split("\n") if text else []  # an empty answer simply stops: not_reached_target
    pool = Counter(problem.numbers)
    last_result = None
    for index, line in enumerate(lines):
        if line == GOAL_MARKER:
            if index + 1 < len(lines):
                return Verdict(False, "invalid_format", f"text after {GOAL_MARKER!r}: {lines[index + 1]!r}")
            if pool == Counter([problem.target]):
                return Verdict(True, "correct", "")
            if last_result != problem.target:
                return Verdict(False, "not_reached_target", f"final value {last_result} != target {problem.target}")
            return Verdict(False, "not_reached_target", f"numbers left unused: {_show(pool)}")
        if line == BACKTRACK_TOKEN:
            return Verdict(False, "not_reached_target", f"line {index} is {BACKTRACK_TOKEN}: the answer gave up")
        step = parse_step(line)
        if step is None:
            return Verdict(False, "invalid_format", _not_a_step(index, line))
        need = Counter((step.a, step.b))
        if any(pool[value] < count for value, count in need.items()):
            return Verdict(False, "unknown_numbers", f"line {index} {line!r} uses numbers not in {_show(pool)}")
        if not step.is_correct_arithmetic:
            true = step.true_result
            why = "illegal operation" if true is None else f"{step.a}{step.op}{step.b} is {true}"
            return Verdict(False, "incorrect_result", f"line {index} {line!r}: {why}")
        pool -= need
        pool[step.result] += 1
        last_result = step.result
    return Verdict(False, "not_reached_target", f"no {GOAL_MARKER!r} line (numbers left: {_show(pool)})")


def check_official(problem: Problem, response: str) -> Verdict:
    """Lenient check reproducing the paper's released checker (see the module docstring)."""
    match = _OFFICIAL_RESPONSE_RE.match(clean_response(response))
    if match is None:
        return Verdict(False, "invalid_format", f"no {BACKTRACK_TOKEN!r} or {GOAL_MARKER!r} marker")
    current = list(problem.numbers)
    current_result = None
    for line in match.group(1).strip().split("\n"):
        step = _OFFICIAL_STEP_RE.match(line)
        if step is None:
            return Verdict(False, "invalid_format", f"invalid step format: {line!r}")
        a, op, b, written = int(step.group(1)), step.group(2), int(step.group(3)), int(step.group(4))
        if a not in current or b not in current:
            return Verdict(False, "unknown_numbers", f"unknown number in step: {line!r}")
        if op == "+":
            current_result = a + b
        elif op == "-":
            current_result = a - b
        elif op == "*":
            current_result = a * b
        elif b == 0:
            return Verdict(False, "incorrect_result", f"division by zero in step: {line!r}")
        else:
            current_result = a // b
        if current_result != written:
            return Verdict(False, "incorrect_result", f"incorrect result in step: {line!r}")
        # Value-based removal, as released: every copy of each operand value goes.
        current = [n for n in current if n != a and n != b]
        current.append(current_result)
    if current_result == problem.target:
        return Verdict(True, "correct", "")
    return Verdict(False, "not_reached_target", f"not reached target: {current_result} != {problem.target}")


def check(problem: Problem, response: str, mode: str = "strict") -> Verdict:
    """Check ``response`` (text after ``###Response:\\n``) for ``problem`` with the ``"strict"`` or ``"official"`` rules."""
    if mode == "strict":
        return check_strict(problem, response)
    if mode == "official":
        return check_official(problem, response)
    raise ValueError(f"Unknown checker mode {mode!r}; use one of {MODES}.")
