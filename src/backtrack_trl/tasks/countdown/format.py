"""The Countdown task's problems, steps and exact text format (the frame around them is in ``tasks/base.py``).

The format is the one of the paper's released model and dataset (``yangxw/countdown-backtracking``)::

    ###Question: numbers [2, 39, 45, 10]->target 62
    ###Response:
    45-39=6
    10*6=60
    2+60=62
    Goal Reached!

A backtrack response is a correct prefix, one wrong step and the ``<backtrack>`` special token on its own line.
EOS is not part of the text: the tokenizer side appends it.

Usage:

```python
from backtrack_trl.tasks.countdown.format import Problem, Step, format_prompt, format_response, parse_response

problem = Problem((2, 39, 45, 10), 62)
steps = [Step(45, "-", 39, 6), Step(10, "*", 6, 60), Step(60, "+", 2, 62)]
text = format_prompt(problem) + format_response(steps)
assert parse_response(format_response(steps)).steps == steps
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from backtrack_trl.tasks.frame import BACKTRACK_TOKEN, GOAL_MARKER, RESPONSE_HEADER  # noqa: F401  (the frame, re-exported)


QUESTION_PREFIX = "###Question: numbers "
TARGET_SEPARATOR = "->target "
OPS = ("+", "-", "*", "/")

# Patterns are used with fullmatch: `$` would also accept a trailing newline. [0-9] rather than \d, which also matches
# non-ASCII digits that int() would silently accept.
_PROMPT_RE = re.compile(
    r"###Question: numbers \[(?P<numbers>(?:[0-9]+(?:, [0-9]+)*)?)\]->target (?P<target>[0-9]+)\n###Response:\n"
)
# Model output is untrusted: a number longer than this is no step (a wrong answer), never int()'s 4,300-digit
# ValueError. Countdown's numbers have a few digits.
MAX_DIGITS = 1000
NUMBER_PATTERN = f"[0-9]{{1,{MAX_DIGITS}}}"
# A step is written with canonical numbers only, as str(int) writes them: no leading zero (``09``), no sign (``+5``),
# no decimals (``5.0``); a result may be negative (``3-5=-2``: wrong arithmetic, not a format error) but not ``-0``.
# ``09/3=3`` is therefore no step: a strict answer and the training data mean one text per step.
CANONICAL_NUMBER_PATTERN = f"(?:0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}})"
_STEP_RE = re.compile(
    rf"(?P<a>{CANONICAL_NUMBER_PATTERN})(?P<op>[+\-*/])(?P<b>{CANONICAL_NUMBER_PATTERN})"
    rf"=(?P<result>0|-?[1-9][0-9]{{0,{MAX_DIGITS - 1}}})"
)


@dataclass(frozen=True)
class Problem:
    """A Countdown problem: reach ``target`` using every number of ``numbers`` exactly once."""

    numbers: tuple[int, ...]
    target: int

    def __post_init__(self):
        object.__setattr__(self, "numbers", tuple(int(n) for n in self.numbers))
        object.__setattr__(self, "target", int(self.target))


@dataclass(frozen=True)
class Step:
    """One written step ``a<op>b=result``. ``result`` is what was written, which may be wrong arithmetic."""

    a: int
    op: str
    b: int
    result: int

    def __str__(self) -> str:
        return f"{self.a}{self.op}{self.b}={self.result}"

    @property
    def true_result(self) -> int | None:
        """The legal value of ``a<op>b`` (None for a negative difference, division by zero or inexact division)."""
        return apply_op(self.a, self.op, self.b)

    @property
    def is_correct_arithmetic(self) -> bool:
        return self.true_result is not None and self.true_result == self.result


def apply_op(a: int, op: str, b: int) -> int | None:
    """Exact Countdown arithmetic: ``+``, ``*``, non-negative ``-`` and exact ``/``; None when the step is illegal."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a >= b else None
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    raise ValueError(f"Unknown operator {op!r}: expected one of {OPS}.")


def format_prompt(problem: Problem) -> str:
    """``###Question: numbers [a, b, c, d]->target T\\n###Response:\\n`` (``str(list)`` formatting of the numbers)."""
    return f"{QUESTION_PREFIX}{list(problem.numbers)}{TARGET_SEPARATOR}{problem.target}\n{RESPONSE_HEADER}"


def format_steps(steps: list[Step]) -> str:
    """Steps one per line, each line ending in a newline."""
    return "".join(f"{step}\n" for step in steps)


def format_response(steps: list[Step]) -> str:
    """An answer: the steps then the goal marker (no trailing newline; EOS follows in token space)."""
    return format_steps(steps) + GOAL_MARKER


def format_backtrack_response(prefix: list[Step], wrong_step: Step) -> str:
    """A backtrack example: correct prefix, the wrong step, then ``<backtrack>`` on its own line."""
    return format_steps(prefix) + f"{wrong_step}\n" + BACKTRACK_TOKEN


def parse_prompt(text: str) -> Problem:
    """Parse a prompt built by :func:`format_prompt` back into a :class:`Problem`."""
    match = _PROMPT_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"Prompt {text!r} is not in the Countdown format; expected e.g. "
            f"{format_prompt(Problem((2, 39, 45, 10), 62))!r} (build it with backtrack_trl.tasks.countdown.format.format_prompt)."
        )
    raw = match.group("numbers")
    numbers = tuple(int(x) for x in raw.split(", ")) if raw else ()
    return Problem(numbers, int(match.group("target")))


def parse_step(line: str) -> Step | None:
    """Parse one ``a<op>b=c`` line (no surrounding text); None if the line is not exactly a step, which includes a
    number not written canonically (``09``, ``+5``, ``5.0``), so ``str(parse_step(line)) == line`` for every step."""
    match = _STEP_RE.fullmatch(line)
    if match is None:
        return None
    return Step(int(match.group("a")), match.group("op"), int(match.group("b")), int(match.group("result")))


@dataclass
class ParsedResponse:
    """A response split into its parts. ``lines`` are the raw lines; ``steps`` the leading lines that parse."""

    lines: list[str]
    steps: list[Step] = field(default_factory=list)
    goal_reached: bool = False
    backtrack: bool = False
    # Lines that are neither a step nor a marker, or that come after the goal marker.
    invalid_lines: list[str] = field(default_factory=list)


def parse_response(text: str) -> ParsedResponse:
    """Split a response (text after ``###Response:\\n``) into steps and markers, without judging correctness.

    Parsing stops at the goal marker or ``<backtrack>``; any later non-empty text is recorded in ``invalid_lines``.
    """
    lines = text.split("\n")
    parsed = ParsedResponse(lines=lines)
    ended = False
    for line in lines:
        if ended:
            if line.strip():
                parsed.invalid_lines.append(line)
            continue
        if line == GOAL_MARKER:
            parsed.goal_reached = True
            ended = True
        elif line == BACKTRACK_TOKEN:
            parsed.backtrack = True
            ended = True
        elif (step := parse_step(line)) is not None and not parsed.invalid_lines:
            parsed.steps.append(step)
        else:
            parsed.invalid_lines.append(line)
    return parsed
