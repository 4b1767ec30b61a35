"""The rows of one engine run: why a row may stop (as bits, one host transfer) and which of them stop, in order."""

import torch
from _decoding_utils import GOAL, PROMPT, tokenizer

from backtrack_trl.decoding.engine_io import Expansion, State
from backtrack_trl.decoding.row_batch import RowBatch, StopTokens
from backtrack_trl.decoding.tokens import TaskTokens


def _ids(text):
    return tokenizer()(text, add_special_tokens=False)["input_ids"]


def _batch(n=4, limit=5):
    tokens = TaskTokens.from_tokenizer(tokenizer())
    prompt = tokenizer()(PROMPT)["input_ids"]
    expansions = [Expansion(problem=0, state=State(tokens=(7,)), seed=1)]
    contexts = [prompt + [7]]
    mask = torch.ones(1, len(contexts[0]) - 1, dtype=torch.long)
    batch = RowBatch.start([prompt], expansions, contexts, mask, n, limits=[limit], ban=None, tabu_tokens=0)
    return batch, tokens, expansions


def test_rows_start_with_their_context_keys_and_limits():
    batch, tokens, _ = _batch(n=3)
    assert batch.sample_of.tolist() == [0, 1, 2] and batch.expansion_of.tolist() == [0, 0, 0]
    assert batch.current.tolist() == [7, 7, 7] and batch.out_tokens.shape == (3, 5)
    assert len(set(batch.keys.tolist())) == 3  # one sampling key per sample
    assert batch.tabu is None and batch.full_context is None and not batch.ban.any()


def test_flags_and_finish_name_the_stop_of_each_row():
    batch, tokens, expansions = _batch(n=4, limit=2)
    stops = StopTokens.on(tokens, "cpu")
    digit, newline = _ids("5")[0], _ids("\n")[0]
    batch.out_tokens[:, 0] = digit
    step0 = torch.tensor([digit, digit, digit, digit])
    exact, candidates = batch.flag(step0, 1, stops, torch.tensor([False, True, False, False]))
    assert exact == [1] and candidates == []  # nothing stops; row 1 needs the exact log(1 - p)
    step1 = torch.tensor([tokens.backtrack_id, tokens.eos_ids[0], newline, digit])
    batch.out_tokens[:, 1] = step1
    batch.alive[3] = False  # a finished row is never flagged again
    _, candidates = batch.flag(step1, 2, stops, torch.zeros(4, dtype=torch.bool))
    assert [row for row, _ in candidates] == [0, 1, 2]  # all at the length limit (2 tokens)
    finished = batch.finish(candidates, 2, expansions, tokens, cache=None, keep_prefix=None, reuse_cache=False)
    ends = {row: sample.end for row, sample in finished}
    assert ends == {0: "backtrack", 1: "eos", 2: "length"}  # <backtrack> wins over the length limit
    assert finished[0][1].tokens == (7, digit, tokens.backtrack_id) and finished[0][1].new_tokens == 2


def test_a_goal_marker_stops_its_row():
    goal = _ids(GOAL)
    batch, tokens, expansions = _batch(n=1, limit=len(goal) + 3)
    stops = StopTokens.on(tokens, "cpu")
    batch.out_tokens[0, : len(goal)] = torch.tensor(goal)
    _, candidates = batch.flag(torch.tensor(goal[-1:]), len(goal), stops, torch.zeros(1, dtype=torch.bool))
    finished = batch.finish(candidates, len(goal), expansions, tokens, None, keep_prefix=None, reuse_cache=False)
    assert [sample.end for _, sample in finished] == ["goal"]
