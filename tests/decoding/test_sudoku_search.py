"""The self-backtracking search on a Sudoku prompt, with a scripted model planted over a real 4x4 puzzle."""

import random

from _decoding_utils import BT, GOAL, scripted, tokenizer

from backtrack_trl.decoding import SelfBacktrackingDecoder
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.sudoku import SudokuConfig


SUDOKU = get_task("sudoku")


def _planted():
    """The first generated 4x4 puzzle (4-5 givens) whose reading-order path has a choice after its first placement:
    a legal wrong value for the next cell, which leaves no solution. (A wrong *first* placement would roll back to
    the root, which the search has already expanded, so it could not be retried there.)"""
    for problem in SUDOKU.iter_problems(SudokuConfig(size=4, min_givens=4, max_givens=5), "train", random.Random(0)):
        path = SUDOKU.solve(problem)
        for k in range(1, len(path)):
            wrong = SUDOKU.make_error("exploration", problem, path[:k], random.Random(0))
            if wrong is not None:
                return problem, [SUDOKU.format_step(step) for step in path], k, SUDOKU.format_step(wrong)


PROBLEM, PATH, CUT, WRONG = _planted()


def policy(prompt, lines):
    lines = tuple(lines)
    if lines and lines[-1] == WRONG:
        return {BT: 1.0}
    if lines == tuple(PATH):
        return {GOAL: 1.0}
    if len(lines) == CUT:
        return {PATH[CUT]: 0.5, WRONG: 0.5}
    return {PATH[len(lines)]: 1.0}


def _solve(n, b, seed):
    decoder = SelfBacktrackingDecoder(
        scripted(policy=policy), tokenizer(), n=n, b=b, temperature=1.0, max_new_tokens=128, seed=seed, task=SUDOKU
    )
    return decoder.solve([SUDOKU.format_prompt(PROBLEM)])[0]


def test_backtracking_recovers_from_a_planted_wrong_placement():
    assert WRONG not in PATH and not SUDOKU.is_solvable_after(
        PROBLEM, SUDOKU.parse_steps("\n".join([*PATH[:CUT], WRONG]))
    )
    planted = SUDOKU.format_response(SUDOKU.parse_steps("\n".join(PATH)))
    for seed in range(4):  # N = 4, b = 1: always the planted solution
        result = _solve(n=4, b=1, seed=seed)
        assert result.completion == planted and SUDOKU.check(PROBLEM, result.completion).correct, seed
    greedy, recovered = set(), 0
    for seed in range(10):  # N = 1: one sample fails half of the time; b = 1 retries from the rolled-back state
        greedy.add(SUDOKU.check(PROBLEM, _solve(n=1, b=0, seed=seed).completion).correct)
        result = _solve(n=1, b=1, seed=seed)
        if any(c.reached_goal and c.round == 1 for c in result.candidates):
            assert result.rollbacks == 1 and result.completion == planted
            assert SUDOKU.check(PROBLEM, result.completion).correct
            recovered += 1
    assert greedy == {True, False} and recovered > 0
