"""What limits a Countdown model: arithmetic of answers, the facts and prompts of the single-fact probe, the limit line."""

import pytest

from backtrack_trl.tasks.countdown.arithmetic import (
    answer_arithmetic,
    answer_steps,
    enumerate_facts,
    fact_split,
    limiting_factor,
    probe_prompt,
    training_facts,
)
from backtrack_trl.tasks.countdown.format import Problem, Step, parse_prompt


def test_answer_arithmetic_counts_positions_and_target_copies():
    problems = [Problem((15, 5, 20), 60), Problem((3, 5, 2), 16), Problem((3, 5, 2), 16), Problem((3, 5, 2), 16)]
    answers = [
        "15*5=75\n75-20=60\nGoal Reached!",  # last step copies the target: 75-20 is 55
        "5+3=8\n8*2=16\nGoal Reached!",  # right
        "5*3=14\n14+2=16\nGoal Reached!",  # first step wrong, last step right arithmetic on the wrong value
        "garbage",  # no step at all: counted in answers only
    ]
    stats = answer_arithmetic(problems, answers)
    assert stats["answers"] == 4 and stats["steps"] == 6
    assert stats["step_right"] == pytest.approx(4 / 6)
    assert stats["first_step_right"] == pytest.approx(2 / 3)
    assert stats["last_step_right"] == pytest.approx(2 / 3)
    assert stats["target_copy"] == pytest.approx(1 / 4)


def test_wrong_last_step_that_misses_the_target_is_not_a_copy():
    stats = answer_arithmetic([Problem((3, 5, 2), 16)], ["5+3=8\n8*2=17\nGoal Reached!"])
    assert stats["last_step_right"] == 0.0 and stats["target_copy"] == 0.0


def test_illegal_arithmetic_counts_as_wrong_and_steps_stop_at_markers():
    assert answer_steps("7/2=3\n3-5=0\n<backtrack>") == [Step(7, "/", 2, 3), Step(3, "-", 5, 0)]
    stats = answer_arithmetic([Problem((7, 2, 5), 0)], ["7/2=3\n3-5=0\n<backtrack>"])
    assert stats["step_right"] == 0.0  # floor division and a negative difference are both wrong
    assert answer_arithmetic([], [])["step_right"] is None
    with pytest.raises(ValueError, match="one answer per problem"):
        answer_arithmetic([Problem((1, 2), 3)], [])


def test_limiting_factor_names_arithmetic_selection_or_search():
    assert limiting_factor(0.60, 0.40, 0.90).startswith("arithmetic limits")
    assert limiting_factor(0.98, 0.50, 0.90).startswith("selection limits")
    assert limiting_factor(0.98, 0.88, 0.90).startswith("search limits")
    assert "format" in limiting_factor(None, 0.0, 0.0)


def test_enumerate_facts_and_split_by_training_steps():
    facts = enumerate_facts(1, 3)
    # pairs b <= a in 1..3: + and * always (6 each), - always (6), / exact: 1/1, 2/1, 2/2, 3/1, 3/3 (5)
    assert len(facts) == 23
    assert Step(2, "/", 2, 1) in facts and all(f.b <= f.a for f in facts)
    seen = training_facts(["3+2=5\n5*1=5\nGoal Reached!", "3*2=7\n<backtrack>"])  # the wrong 3*2=7 is not a fact
    assert seen == {(3, "+", 2), (5, "*", 1)}
    inside, held_out = fact_split(facts, seen)
    assert inside == [Step(3, "+", 2, 5)] and len(held_out) == 22
    with pytest.raises(ValueError, match="Unknown operator"):
        enumerate_facts(1, 3, ops=["^"])
    with pytest.raises(ValueError, match="empty"):
        enumerate_facts(5, 1)


def test_probe_prompt_puts_operands_in_the_problem_and_avoids_the_result_as_target():
    fact = Step(9, "*", 8, 72)
    text = probe_prompt(fact, num_numbers=4, seed=3)
    prompt, _, head = text.partition("###Response:\n")
    problem = parse_prompt(prompt + "###Response:\n")
    assert head == "9*8=" and len(problem.numbers) == 4
    assert 9 in problem.numbers and 8 in problem.numbers and problem.target != 72
    assert probe_prompt(fact, context="bare") == "9*8="
    with pytest.raises(ValueError, match="context"):
        probe_prompt(fact, context="chat")
