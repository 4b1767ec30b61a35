"""The vLLM backend without vLLM: the engine and the search on a scripted client, and the option checks. The client
over HTTP is in test_vllm_http.py; the slow comparison with a real vLLM server is in test_vllm_server.py."""

import pytest
from _decoding_utils import PROMPT, tokenizer

from backtrack_trl.decoding import BestOfNDecoder, GreedyDecoder, SelfBacktrackingDecoder
from backtrack_trl.decoding.api import check_decoder_options
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.decoding.vllm_backend import VLLMEngine
from backtrack_trl.decoding.vllm_client import Completion, VLLMClient
from backtrack_trl.tasks.base import BACKTRACK_TOKEN, GOAL_MARKER


BT = BACKTRACK_TOKEN


class ScriptedClient(VLLMClient):
    """Answers each request from a table ``{response text so far: [continuation of sample 0, 1, ...]}``."""

    def __init__(self, tok, table):
        self.tok, self.table, self.requests = tok, table, []
        self.prompt_len = len(tok(PROMPT)["input_ids"])

    def generate(self, requests, settings):
        self.requests.extend(requests)
        out = []
        for request in requests:
            state = self.tok.decode(request.prompt_ids[self.prompt_len :])
            texts = self.table[state]
            completions = []
            for index in range(request.n):
                ids = tuple(self.tok(texts[index % len(texts)], add_special_tokens=False)["input_ids"])
                ids = ids[: request.max_tokens]
                finish = "length" if len(ids) == request.max_tokens else "stop"
                completions.append(Completion(ids, (-0.1,) * len(ids), (-3.0,) * len(ids), finish))
            out.append(completions)
        return out


TABLE = {
    "": ["5+3=8\n8*3=24\n" + BT, "5-3=2\n" + BT],  # the first rolls back to "5+3=8\n", the second to the root
    "5+3=8\n": ["8*2=16\n" + GOAL_MARKER],
}


def test_search_on_vllm_rolls_back_and_resends_the_kept_prefix():
    tok = tokenizer()
    client = ScriptedClient(tok, TABLE)
    decoder = SelfBacktrackingDecoder(client, tok, n=2, b=1, k=1, seed=3)
    assert decoder.backend == "vllm" and isinstance(decoder.engine, VLLMEngine)
    result = decoder.solve([PROMPT])[0]
    assert result.completion == "5+3=8\n8*2=16\n" + GOAL_MARKER
    assert result.rollbacks == 1
    prompt_ids = tuple(tok(PROMPT)["input_ids"])
    first, second = client.requests
    assert first.prompt_ids == prompt_ids and first.n == 2 and first.max_tokens == 64
    assert second.prompt_ids == prompt_ids + tuple(tok("5+3=8\n", add_special_tokens=False)["input_ids"])
    assert second.max_tokens == 64 - 6  # the kept prefix counts towards the length limit
    assert first.seed != second.seed  # one seed per (problem seed, round, state)
    ends = sorted(c.end_reason for c in result.candidates)
    assert ends == ["backtrack", "backtrack", "goal"]
    chosen = result.candidates[result.chosen_index]
    assert chosen.mean_logprob == pytest.approx(-0.1)  # the state's log-probs travel with the rolled-back prefix

    again = ScriptedClient(tok, TABLE)
    SelfBacktrackingDecoder(again, tok, n=2, b=1, k=1, seed=3).solve([PROMPT])
    assert [r.seed for r in again.requests] == [r.seed for r in client.requests]


def test_length_limit_and_baselines_on_vllm():
    tok = tokenizer()
    client = ScriptedClient(tok, {"": ["5+3=8\n8*2=16\n" + GOAL_MARKER]})
    cut = SelfBacktrackingDecoder(client, tok, n=1, b=0, max_new_tokens=4).solve([PROMPT])[0]
    assert cut.candidates[0].end_reason == "length" and cut.candidates[0].num_tokens == 4
    greedy = GreedyDecoder(ScriptedClient(tok, {"": ["5+3=8\n8*2=16\n" + GOAL_MARKER]}), tok).solve([PROMPT])[0]
    assert greedy.completion.endswith(GOAL_MARKER)
    best = BestOfNDecoder(ScriptedClient(tok, TABLE), tok, n=2).solve([PROMPT])[0]
    assert best.rollbacks == 0 and len(best.candidates) == 2


def test_backend_options_are_checked():
    tok = tokenizer()
    from _decoding_utils import tiny_llama

    with pytest.raises(ValueError, match="backend='vllm' needs a vLLM engine"):
        SelfBacktrackingDecoder(tiny_llama(), tok, backend="vllm")
    with pytest.raises(ValueError, match="backend must be one of 'hf', 'vllm'"):
        SelfBacktrackingDecoder(tiny_llama(), tok, backend="tgi")
    client = ScriptedClient(tok, TABLE)
    for option in ({"tabu": True}, {"sampling": "beam"}, {"max_backtracks": 1}):
        with pytest.raises(ValueError, match="backend='vllm' does not support"):
            SelfBacktrackingDecoder(client, tok, **option)
    check_decoder_options("self_backtracking", {"n": 8, "b": 1, "backend": "vllm"})
    with pytest.raises(ValueError, match="does not support tabu"):
        check_decoder_options("self_backtracking", {"backend": "vllm", "tabu": True})
    with pytest.raises(ValueError, match="unknown option"):
        check_decoder_options("beam", {"n": 4, "backend": "vllm"})


def test_task_tokens_are_the_same_for_both_backends():
    tok = tokenizer()
    decoder = SelfBacktrackingDecoder(ScriptedClient(tok, TABLE), tok)
    assert decoder.tokens == TaskTokens.from_tokenizer(tok)
