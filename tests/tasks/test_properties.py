"""Hypothesis property tests: parsers and checkers never crash, and verdicts agree with an independent derivation."""

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from backtrack_trl.tasks.countdown.checkers import REASONS, check
from backtrack_trl.tasks.countdown.format import Problem, format_prompt, format_response, parse_prompt, parse_response
from backtrack_trl.tasks.countdown.solver import legal_steps


PIECES = ["1", "2", "3", "5", "10", "12", "+", "-", "*", "/", "=", "\n", " ", "Goal Reached!", "<backtrack>", "</s>"]
fragments = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
free_text = st.one_of(fragments, st.text(max_size=60))
problems = st.builds(Problem, st.lists(st.integers(0, 12), min_size=1, max_size=5).map(tuple), st.integers(0, 40))
SETTINGS = settings(max_examples=300, deadline=None)


def rederive_strict(problem: Problem, response: str) -> bool:
    """An independent strict re-derivation: split, simulate the multiset, require [target] at the goal line."""
    text = response.rstrip()
    while text.endswith("</s>") or text.endswith("<pad>"):
        text = text[: -len("</s>") if text.endswith("</s>") else -len("<pad>")].rstrip()
    lines = text.split("\n")
    if lines[-1] != "Goal Reached!":
        return False
    pool = Counter(problem.numbers)
    for line in lines[:-1]:
        if "=" not in line:
            return False
        left, result = line.split("=", 1)
        op = next((c for c in "+-*/" if c in left[1:]), None)
        if op is None:
            return False
        a, b = left.split(op, 1)
        if not (a.isascii() and b.isascii() and result.isascii() and a.isdigit() and b.isdigit() and result.isdigit()):
            return False
        a, b, result = int(a), int(b), int(result)
        true = {"+": a + b, "*": a * b, "-": a - b, "/": a // b if b and a % b == 0 else None}[op]
        if true != result or true < 0 or pool[a] < 1:
            return False
        pool[a] -= 1
        if pool[b] < 1:
            return False
        pool[b] -= 1
        pool[result] += 1
    return +pool == Counter([problem.target])


@SETTINGS
@given(free_text)
def test_parsers_never_crash(text):
    parsed = parse_response(text)
    assert len(parsed.lines) == text.count("\n") + 1
    try:
        problem = parse_prompt(text)
    except ValueError:
        pass
    else:
        assert format_prompt(problem) == text


@SETTINGS
@given(problems, free_text)
def test_checkers_never_crash_and_strict_correct_implies_rederivation(problem, text):
    for mode in ("strict", "official"):
        verdict = check(problem, text, mode=mode)
        assert verdict.reason in REASONS and verdict.correct == (verdict.reason == "correct")
    assert check(problem, text).correct == rederive_strict(problem, text)


@st.composite
def solved(draw):
    """A random problem with a random legal path to its target (the target is where the path ends)."""
    numbers = tuple(draw(st.lists(st.integers(1, 15), min_size=2, max_size=4)))
    state, steps, collision = numbers, [], False
    while len(state) > 1:
        step, next_state = draw(st.sampled_from(legal_steps(state)))
        pool = Counter(state)
        # The released checker removes every copy of an operand value: only paths that never rely on a second copy
        # can be expected to pass it.
        collision |= any(pool[v] != c for v, c in Counter((step.a, step.b)).items())
        steps.append(step)
        state = next_state
    return Problem(numbers, state[0]), steps, collision


@SETTINGS
@given(solved(), st.sampled_from(["", "</s>", "\n", "</s>\n"]))
def test_official_accepts_what_strict_accepts_for_well_formed_solutions(case, suffix):
    problem, steps, collision = case
    text = format_response(steps) + suffix
    assert check(problem, text, mode="strict").correct
    assert rederive_strict(problem, text)
    if not collision:
        assert check(problem, text, mode="official").correct
