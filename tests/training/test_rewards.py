"""The GRPO rewards from the task checkers, on hand-labelled answers (Countdown and Sudoku)."""

import pytest

from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
from backtrack_trl.training.rewards import REWARDS, completion_texts, get_reward


COUNTDOWN = get_task("countdown")
PROMPT = COUNTDOWN.format_prompt(COUNTDOWN.problem_from_row({"numbers": [3, 5, 2], "target": 16}))

# answer, strict, step_validity, backtrack_aware (credit 0.2, false goal penalty 0.5)
CASES = [
    ("3+5=8\n8*2=16\nGoal Reached!", 1.0, 1.0, 1.0),  # solved
    ("3+5=8\n8*2=17\n<backtrack>", 0.0, 0.5, 0.2),  # rolled back right after its first wrong step
    ("3+5=8\n8*2=17\nGoal Reached!", 0.0, 0.5, -0.5),  # a false goal claim (wrong arithmetic)
    ("3+5=8\n8*2=16\n<backtrack>", 0.0, 1.0, -0.2),  # rolled back from a solved problem
    ("3+5=8\n8+2=10\nGoal Reached!", 0.0, 1.0, -0.5),  # legal steps that miss, claimed as the goal
    ("3+5=8\n<backtrack>", 0.0, 1.0, 0.0),  # a rollback from a legal partial path: maybe a dead end
    ("3+5=9\n9*2=18\n<backtrack>", 0.0, 0.0, 0.0),  # the rollback came one step late
    ("3+5=8\n16=16\nGoal Reached!", 0.0, 0.5, -0.5),  # an unparsable line forges the target
    ("7*7=49\nGoal Reached!", 0.0, 0.0, -0.5),  # numbers it does not have
    ("3+5=8\n8*2=16", 0.0, 1.0, 0.0),  # stopped without claiming the goal
    ("", 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("name, column", [("strict", 1), ("step_validity", 2), ("backtrack_aware", 3)])
def test_each_reward_on_hand_labelled_answers(name, column):
    reward = get_reward(name, COUNTDOWN, **({"backtrack_credit": 0.2} if name == "backtrack_aware" else {}))
    answers = [case[0] for case in CASES]
    assert reward([PROMPT] * len(CASES), answers) == pytest.approx([case[column] for case in CASES])
    assert reward.__name__ == name  # TRL logs rewards by function name


def test_backtrack_aware_options_and_their_check():
    reward = get_reward("backtrack_aware", COUNTDOWN, backtrack_credit=0.5, false_goal_penalty=1.0)
    answers = ["3+5=8\n8*2=17\n<backtrack>", "3+5=8\n8*2=17\nGoal Reached!", "3+5=8\n8*2=16\n<backtrack>"]
    assert reward([PROMPT] * 3, answers) == [0.5, -1.0, -0.5]
    with pytest.raises(ValueError, match="false_goal_penalty=-1, no_answer_penalty=0.0 and search_credit=0.5 must be"):
        get_reward("backtrack_aware", COUNTDOWN, false_goal_penalty=-1)


def test_search_value_prices_a_rollback_right_after_the_first_wrong_step_and_nothing_else():
    answers = [
        "3+5=8\n8*2=17\n<backtrack>",  # right after the first wrong step: search_credit x value
        "3+5=8\n8*2=17\n<backtrack>",  # the same, no value (the state was not expanded): backtrack_credit
        "3+5=8\n<backtrack>",  # a rollback from a legal partial path: 0 whatever the value
        "3+5=9\n9*2=18\n<backtrack>",  # one step late: 0
        "3+5=8\n8*2=16\n<backtrack>",  # backed off a solved problem: -backtrack_credit, value or not
        "3+5=8\n8*2=16\nGoal Reached!",  # solved
        "3+5=8\n8*2=17\nGoal Reached!",  # a false goal
    ]
    values = [0.75, None, 0.8, 1.0, 1.0, None, None]
    reward = get_reward("backtrack_aware", COUNTDOWN, backtrack_credit=0.2)  # search_credit 0.5 by default
    assert reward([PROMPT] * 7, answers, search_value=values) == pytest.approx([0.375, 0.2, 0, 0, -0.2, 1, -0.5])
    assert reward([PROMPT] * 7, answers) == pytest.approx([0.2, 0.2, 0, 0, -0.2, 1, -0.5])  # no search: unchanged
    scaled = get_reward("backtrack_aware", COUNTDOWN, search_credit=0.4)
    assert scaled([PROMPT] * 2, answers[:2], search_value=[0.0, 1.0]) == pytest.approx([0.0, 0.4])
    with pytest.raises(ValueError, match="search_credit=-0.1 must be >= 0"):
        get_reward("backtrack_aware", COUNTDOWN, search_credit=-0.1)


def test_no_answer_penalty_charges_a_stop_and_a_rollback_from_the_root_not_one_after_a_step():
    reward = get_reward("backtrack_aware", COUNTDOWN, no_answer_penalty=0.3)
    answers = [
        "3+5=8\n8*2=17",
        "3+5=8\n8*2=17\n<backtrack>",
        "3+5=8\n8*2=16\nGoal Reached!",
        "3+5=8\n8*2=17\nGoal Reached!",
    ]
    assert reward([PROMPT] * 4, answers) == [-0.3, 0.0, 1.0, -0.5]
    assert reward([PROMPT], ["<backtrack>"]) == [-0.3]  # a rollback before any step: a give-up, not a free failure
    assert get_reward("backtrack_aware", COUNTDOWN)([PROMPT], answers[:1]) == [0.0]  # default: a stop is free
    with pytest.raises(ValueError, match=r"unknown reward 'strcit'; the rewards are backtrack_aware, step_validity"):
        get_reward("strcit", COUNTDOWN)
    assert {"strict", "step_validity", "backtrack_aware"} <= set(REWARDS)


def test_backtrack_is_read_from_completion_ids_when_trl_dropped_it_from_the_text():
    tokenizer = build_countdown_tokenizer()
    answer = "3+5=8\n8*2=16\n<backtrack>"  # backing off a solved problem
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids += [tokenizer.pad_token_id] * 3
    shown = tokenizer.decode(ids, skip_special_tokens=True)  # what TRL hands the reward as text
    assert "<backtrack>" not in shown
    assert completion_texts([shown], tokenizer, [ids]) == [answer]
    reward = get_reward("backtrack_aware", COUNTDOWN, tokenizer, backtrack_credit=0.2)
    assert reward([PROMPT], [shown], completion_ids=[ids]) == [-0.2]  # backed off a solved problem
    assert get_reward("backtrack_aware", COUNTDOWN)([PROMPT], [shown]) == [0.0]  # the text alone: a mere stop
    assert get_reward("strict", COUNTDOWN, tokenizer)([PROMPT], [shown], completion_ids=[ids]) == [0.0]


def test_conversational_completions_and_sudoku_with_its_own_checker():
    message = [{"role": "assistant", "content": "3+5=8\n8*2=16\nGoal Reached!"}]
    assert get_reward("strict", COUNTDOWN)([PROMPT], [message]) == [1.0]
    sudoku = get_task("sudoku")
    prompt = sudoku.format_prompt(sudoku.problem_from_row({"size": 4, "puzzle": "12../34../..../...."}))
    answers = [
        "r1c3=3\nr1c4=3\n<backtrack>",  # the second placement breaks its row: rolled back right after it
        "r1c3=3\nr1c4=3\nGoal Reached!",  # the same, claimed as the goal
        "r1c3=3\nGoal Reached!",  # legal, but the grid is not full
    ]
    assert get_reward("backtrack_aware", sudoku, backtrack_credit=0.2)([prompt] * 3, answers) == [0.2, -0.5, -0.5]
    assert get_reward("backtrack_aware", sudoku)([prompt] * 3, answers) == [0.0, -0.5, -0.5]  # default: no credit
    assert get_reward("step_validity", sudoku)([prompt] * 3, answers) == [0.5, 0.5, 1.0]
