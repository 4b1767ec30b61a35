"""Text format round trips and parse errors."""

import pytest

from backtrack_trl.tasks.countdown.format import (
    BACKTRACK_TOKEN,
    GOAL_MARKER,
    Problem,
    Step,
    format_backtrack_response,
    format_prompt,
    format_response,
    parse_prompt,
    parse_response,
    parse_step,
)
from backtrack_trl.tasks.countdown.solver import solve


def test_prompt_round_trip_matches_released_format():
    problem = Problem((2, 39, 45, 10), 62)
    prompt = format_prompt(problem)
    assert prompt == "###Question: numbers [2, 39, 45, 10]->target 62\n###Response:\n"
    assert parse_prompt(prompt) == problem
    for numbers, target in [((1, 1), 2), ((99, 98, 97, 96, 95, 94), 100), ((7,), 0)]:
        assert parse_prompt(format_prompt(Problem(numbers, target))) == Problem(numbers, target)


def test_response_round_trip():
    problem = Problem((2, 39, 45, 10), 62)
    steps = solve(problem.numbers, problem.target)
    parsed = parse_response(format_response(steps))
    assert parsed.steps == steps and parsed.goal_reached and not parsed.backtrack and not parsed.invalid_lines
    wrong = Step(39, "+", 6, 45)
    text = format_backtrack_response(steps[:1], wrong)
    assert text == f"{steps[0]}\n39+6=45\n{BACKTRACK_TOKEN}"
    parsed = parse_response(text)
    assert parsed.steps == [steps[0], wrong] and parsed.backtrack and not parsed.goal_reached
    parsed = parse_response(format_response(steps) + "\n1+1=2")
    assert parsed.invalid_lines == ["1+1=2"]
    assert format_response([]) == GOAL_MARKER


@pytest.mark.parametrize(
    "text",
    [
        "",
        "###Question: numbers [2,39]->target 62\n###Response:\n",  # not str(list) spacing
        "###Question: numbers [2, 39]->target 62\n###Response:\n\n",  # extra newline
        "###Question: numbers [2, 39]->target 62\n###Response:",
        "###Question: numbers [2, , 39]->target 62\n###Response:\n",
        "###Question: numbers [2, -39]->target 62\n###Response:\n",
        "###Question: numbers [2, 39]->target\n###Response:\n",
        " ###Question: numbers [2, 39]->target 62\n###Response:\n",
    ],
)
def test_parse_prompt_rejects_bad_text(text):
    with pytest.raises(ValueError, match="format_prompt"):
        parse_prompt(text)


def test_parse_step():
    assert parse_step("45-39=6") == Step(45, "-", 39, 6)
    assert parse_step("3-5=-2") == Step(3, "-", 5, -2)
    for bad in ("45 - 39 = 6", "45-39=6\n", "45-39=6 ", "45^2=2025", "٣+1=4", "", "=", "1+2=", "+1=1"):
        assert parse_step(bad) is None, bad
