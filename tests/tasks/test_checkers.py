"""Strict and official checkers: each rule, each reason, and the official leniencies."""

import random

import pytest

from backtrack_trl.tasks.countdown.checkers import (
    REASONS,
    Verdict,
    check,
    check_official,
    check_strict,
    clean_response,
)
from backtrack_trl.tasks.countdown.format import Problem, format_response
from backtrack_trl.tasks.countdown.generator import CountdownConfig, generate_problems
from backtrack_trl.tasks.countdown.solver import solve


P = Problem((2, 39, 45, 10), 62)
GOOD = "45-39=6\n10*6=60\n60+2=62\nGoal Reached!"


def strict_reason(problem, text):
    verdict = check_strict(problem, text)
    assert verdict.reason in REASONS and verdict.correct == (verdict.reason == "correct")
    return verdict.reason


def test_strict_accepts_good_answer_and_tolerates_eos_and_trailing_whitespace():
    assert check_strict(P, GOOD) == Verdict(True, "correct", "")
    for suffix in ("</s>", "\n", " \n", "</s>\n", "</s><pad><pad>", "\n</s>"):
        assert check_strict(P, GOOD + suffix).correct, suffix
    # Operand order does not matter as long as the arithmetic is legal.
    assert check_strict(P, "45-39=6\n6*10=60\n2+60=62\nGoal Reached!").correct


@pytest.mark.parametrize(
    "problem, text, reason",
    [
        # floor division
        (Problem((116, 32, 7), 10), "116/32=3\n7+3=10\nGoal Reached!", "incorrect_result"),
        # reuse of a number already consumed (the paper's 39+6=45)
        (P, "45-39=6\n39+6=45\n45+2=47\nGoal Reached!", "unknown_numbers"),
        # a number used twice when given once
        (Problem((5, 3, 2), 10), "5+5=10\n10-3=7\nGoal Reached!", "unknown_numbers"),
        # a number never given
        (P, "45-40=5\nGoal Reached!", "unknown_numbers"),
        # an unused number (final value is the target)
        (Problem((2, 39, 45, 10, 7), 62), GOOD, "not_reached_target"),
        # wrong arithmetic
        (P, "45-39=6\n10*6=60\n60+2=63\nGoal Reached!", "incorrect_result"),
        # trailing junk after the goal marker
        (P, GOOD + "\nthanks", "invalid_format"),
        # trailing junk on a step line
        (P, "45-39=6 ok\n10*6=60\n60+2=62\nGoal Reached!", "invalid_format"),
        # negative intermediate (smaller minus larger), written either way
        (Problem((3, 5, 9), 7), "3-5=-2\n9-2=7\nGoal Reached!", "incorrect_result"),
        (Problem((3, 5, 9), 7), "3-5=2\n9-2=7\nGoal Reached!", "incorrect_result"),
        # division by zero
        (Problem((4, 4, 7), 7), "4-4=0\n7/0=7\nGoal Reached!", "incorrect_result"),
        # a result that is not the target
        (P, "45-39=6\n10*6=60\n60-2=58\nGoal Reached!", "not_reached_target"),
        # a step after the goal
        (P, GOOD + "\n62+1=63", "invalid_format"),
        # <backtrack> after the goal
        (P, GOOD + "\n<backtrack>", "invalid_format"),
        # missing goal marker
        (P, "45-39=6\n10*6=60\n60+2=62", "not_reached_target"),
        # a backtrack answer is not an answer
        (P, "45-39=6\n39+6=45\n<backtrack>", "unknown_numbers"),
        (P, "45-39=6\n10*6=60\n60+2=62\n<backtrack>", "not_reached_target"),
        # structure errors
        (P, "", "not_reached_target"),
        (P, "Goal Reached!", "not_reached_target"),
        (P, "45 - 39 = 6\n10*6=60\n60+2=62\nGoal Reached!", "invalid_format"),
        (P, "45-39=6\n\n10*6=60\n60+2=62\nGoal Reached!", "invalid_format"),
        (P, "45x39=6\nGoal Reached!", "invalid_format"),
        (P, "goal reached!", "invalid_format"),
    ],
)
def test_strict_rejections(problem, text, reason):
    assert strict_reason(problem, text) == reason


def test_strict_precedence_unknown_before_arithmetic_and_first_failure_wins():
    # Both an unknown operand and wrong arithmetic on one line: unknown_numbers.
    assert strict_reason(P, "99+1=7\nGoal Reached!") == "unknown_numbers"
    # Wrong arithmetic on line 0, unknown operand on line 1: the first failure decides.
    assert strict_reason(P, "45-39=7\n99+1=100\nGoal Reached!") == "incorrect_result"
    # A format error after a wrong line does not mask the wrong line.
    assert strict_reason(P, "45-39=7\njunk") == "incorrect_result"


def test_strict_accepts_every_solver_output():
    config = CountdownConfig(num_numbers=4, max_number=30, min_target=0, max_target=60)
    problems = generate_problems(config, 200, range(61), random.Random(0))
    for problem in problems:
        assert check_strict(problem, format_response(solve(problem.numbers, problem.target))).correct


def test_official_leniencies():
    # floor division
    assert check_official(Problem((116, 32, 7), 10), "116/32=3\n7+3=10\nGoal Reached!").correct
    # unused numbers allowed
    assert check_official(Problem((2, 39, 45, 10, 7), 62), GOOD).correct
    assert check_official(P, "45+10=55\n55+7=62\nGoal Reached!").reason == "unknown_numbers"
    assert check_official(Problem((60, 2, 9), 62), "60+2=62\nGoal Reached!").correct
    # trailing text on a line ignored, spaces allowed
    assert check_official(P, "45-39=6 because\n10 * 6 = 60\n60+2=62 done\nGoal Reached!").correct
    # text after the marker ignored; either marker ends the steps
    assert check_official(P, GOOD + "\n1+1=3 junk").correct
    assert check_official(P, "45-39=6\n10*6=60\n60+2=62\n<backtrack>").correct
    # value-based membership: a number given once can be used twice in one step
    assert check_official(Problem((5, 3, 2), 10), "5+5=10\nGoal Reached!").correct
    # value-based removal: every copy goes, so the second 5 is gone (a false negative of the released checker)
    assert check_strict(Problem((5, 5, 3, 7), 20), "5+3=8\n8+5=13\n13+7=20\nGoal Reached!").correct
    assert check_official(Problem((5, 5, 3, 7), 20), "5+3=8\n8+5=13\n13+7=20\nGoal Reached!").reason == (
        "unknown_numbers"
    )


@pytest.mark.parametrize(
    "text, reason",
    [
        ("45-39=6\n10*6=60\n60+2=62", "invalid_format"),  # no marker at all
        ("Goal Reached!", "invalid_format"),  # no step
        ("45-39=7\nGoal Reached!", "incorrect_result"),
        ("39-45=6\nGoal Reached!", "incorrect_result"),  # negative difference never matches a written \d+
        ("45-39=-6\nGoal Reached!", "invalid_format"),
        ("45-99=6\nGoal Reached!", "unknown_numbers"),
        ("45-39=6\n6/0=1\nGoal Reached!", "unknown_numbers"),
        ("45-39=6\n10*6=60\nGoal Reached!", "not_reached_target"),
        ("x\nGoal Reached!", "invalid_format"),
    ],
)
def test_official_reasons(text, reason):
    verdict = check_official(P, text)
    assert verdict.reason == reason and not verdict.correct


def test_official_division_by_zero():
    assert check_official(Problem((4, 4, 7), 7), "4-4=0\n7/0=7\nGoal Reached!").reason == "incorrect_result"


def test_check_dispatch_and_bad_mode():
    assert check(P, GOOD).correct and check(P, GOOD, mode="official").correct
    with pytest.raises(ValueError, match="strict"):
        check(P, GOOD, mode="lenient")


def test_clean_response():
    assert clean_response("a\nGoal Reached!</s>\n") == "a\nGoal Reached!"
    assert clean_response("</s>x") == "</s>x"  # only at the very end


@pytest.mark.parametrize("mode", ["strict", "official"])
def test_an_absurdly_long_number_is_a_wrong_answer_not_a_crash(mode):
    problem, huge = Problem((3, 5, 2), 16), "9" * 5000  # past int()'s 4,300-digit limit
    for text in (
        f"3+5=8\n8*2={huge}\nGoal Reached!",
        f"{huge}+5=8\nGoal Reached!",
        f"3+5=8\n{huge}*2=16\n<backtrack>",
    ):
        verdict = check(problem, text, mode=mode)
        assert not verdict.correct and verdict.reason in ("invalid_format", "incorrect_result")
    assert check(problem, "3+5=8\n8*2=16\nGoal Reached!", mode=mode).correct


# Issue 24: how each mode reads a number written other than canonically. Problem (9, 3, 4) -> 12, right answer
# "9/3=3\n3*4=12"; each line below changes how one number is written, not its value.
NUMBER_SPELLINGS = [
    # text, strict reason, official reason (the released checker reads numbers with int() after a \d+ regex)
    ("9/3=3\n3*4=12\nGoal Reached!", "correct", "correct"),
    ("09/3=3\n3*4=12\nGoal Reached!", "invalid_format", "correct"),  # leading zero on an operand
    ("9/3=3\n3*04=12\nGoal Reached!", "invalid_format", "correct"),
    ("9/3=03\n3*4=12\nGoal Reached!", "invalid_format", "correct"),  # on a result
    ("9/3=3\n3*4=0012\nGoal Reached!", "invalid_format", "correct"),
    ("9 / 03 = 3\n3*4=12\nGoal Reached!", "invalid_format", "correct"),  # official allows the spaces too
    ("9/3=3.0\n3*4=12\nGoal Reached!", "invalid_format", "correct"),  # official: ".0" is trailing text
    ("+9/3=3\n3*4=12\nGoal Reached!", "invalid_format", "invalid_format"),  # a sign matches neither
    ("9/+3=3\n3*4=12\nGoal Reached!", "invalid_format", "invalid_format"),
    ("9.0/3=3\n3*4=12\nGoal Reached!", "invalid_format", "invalid_format"),
    ("9/3=3\n3*4=12\n<backtrack>", "not_reached_target", "correct"),
]


@pytest.mark.parametrize(("text", "strict", "official"), NUMBER_SPELLINGS)
def test_each_mode_reads_non_canonical_numbers_as_documented(text, strict, official):
    problem = Problem((9, 3, 4), 12)
    assert check(problem, text, mode="strict").reason == strict
    assert check(problem, text, mode="official").reason == official


def test_strict_names_the_non_canonical_number_and_its_canonical_form():
    detail = check_strict(Problem((9, 3, 4), 12), "09/3=3\n3*4=12\nGoal Reached!").detail
    assert "'09/3=3' writes a number with a leading zero" in detail and "'9/3=3'" in detail
    detail = check_strict(Problem((3, 3, 4), 4), "3-3=-0\n0+4=4\nGoal Reached!").detail
    assert "'3-3=-0'" in detail and "'3-3=0'" in detail
    assert check_strict(Problem((3, 3, 4), 4), "3-3=0\n0+4=4\nGoal Reached!").correct  # 0 itself is canonical
    assert check_strict(Problem((10, 10, 4), 104), "10*10=100\n100+4=104\nGoal Reached!").correct
