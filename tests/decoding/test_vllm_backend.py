"""The vLLM backend without vLLM: the request body and the response parsing against responses recorded from vLLM
0.32's OpenAI-compatible server (tests/data), the engine and the search on a scripted client, a fake server over
HTTP, and the option checks. The slow comparison with a real vLLM server is in test_vllm_server.py."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _decoding_utils import PROMPT, tokenizer

from backtrack_trl.decoding import BestOfNDecoder, GreedyDecoder, SelfBacktrackingDecoder
from backtrack_trl.decoding.api import check_decoder_options
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.decoding.vllm_backend import (
    Completion,
    Request,
    SamplingSettings,
    VLLMClient,
    VLLMEngine,
    VLLMServer,
    parse_completion_response,
    request_body,
)
from backtrack_trl.tasks.base import BACKTRACK_TOKEN, GOAL_MARKER


DATA = Path(__file__).resolve().parents[1] / "fixtures"
BT = BACKTRACK_TOKEN


def _recorded(name):
    return json.loads((DATA / name).read_text())


def test_request_body_asks_for_what_the_search_needs():
    settings = SamplingSettings(0.7, 0.9, 50, (4, 2), (GOAL_MARKER,), 4)
    body = request_body(Request((1, 5, 8), n=3, max_tokens=20, seed=11), settings, "tiny")
    assert body["prompt"] == [1, 5, 8] and body["model"] == "tiny"
    assert (body["n"], body["max_tokens"], body["seed"]) == (3, 20, 11)
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.7, 0.9, 50)
    assert body["stop_token_ids"] == [4, 2] and body["stop"] == [GOAL_MARKER] and body["include_stop_str_in_output"]
    assert body["logprobs"] == 1 and body["logprob_token_ids"] == [4] and body["return_tokens_as_token_ids"]
    assert body["skip_special_tokens"] is False and body["add_special_tokens"] is False
    no_top_k = request_body(Request((1,), 1, 2, 0), SamplingSettings(0.7, 1.0, 0, (4,), (), 4), None)
    assert no_top_k["top_k"] == -1 and "model" not in no_top_k  # vLLM's "off"


def test_recorded_goal_response_parses_to_ids_and_logprobs():
    data = _recorded("vllm_completion_response.json")
    completions = parse_completion_response(data, Request((1,), n=2, max_tokens=64, seed=0), backtrack_id=4)
    assert len(completions) == 2
    for choice, completion in zip(data["choices"], completions):
        assert completion.token_ids == tuple(choice["token_ids"]) and completion.finish_reason == "stop"
        assert completion.logprobs == tuple(choice["logprobs"]["token_logprobs"])
        # <backtrack> (id 4) at every position, from top_logprobs "token_id:4"
        tops = choice["logprobs"]["top_logprobs"]
        assert completion.backtrack_logprobs == tuple(entry["token_id:4"] for entry in tops)
        assert all(value < 0 for value in completion.backtrack_logprobs)


def test_recorded_stop_token_is_kept_in_the_output():
    data = _recorded("vllm_completion_response_stops.json")
    completions = parse_completion_response(data, Request((1,), n=2, max_tokens=8, seed=5), backtrack_id=4)
    assert [c.token_ids for c in completions] == [(4,), (4,)]  # <backtrack> stops the sample and is returned
    assert completions[0].backtrack_logprobs == completions[0].logprobs  # the sampled token is <backtrack>


def test_bad_responses_name_what_is_wrong():
    data = _recorded("vllm_completion_response.json")
    with pytest.raises(ValueError, match="expected 3 choices, got 2"):
        parse_completion_response(data, Request((1,), n=3, max_tokens=4, seed=0), 4)
    broken = json.loads(json.dumps(data))
    broken["choices"][0]["logprobs"] = None
    with pytest.raises(ValueError, match="has no logprobs"):
        parse_completion_response(broken, Request((1,), n=2, max_tokens=4, seed=0), 4)
    broken = json.loads(json.dumps(data))
    broken["choices"][0]["logprobs"]["tokens"][0] = "r"
    broken["choices"][0].pop("token_ids")
    with pytest.raises(ValueError, match="expected a token as 'token_id:<int>', got 'r'"):
        parse_completion_response(broken, Request((1,), n=2, max_tokens=4, seed=0), 4)


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


class _FakeVLLM(BaseHTTPRequestHandler):
    bodies: list = []

    def log_message(self, *args):
        pass

    def _send(self, payload, status=200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    root = None

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "tiny", "object": "model", "root": type(self).root}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if body["n"] != 2:
            self._send({"error": {"message": "n must be 2 here"}}, status=400)
        else:
            self._send(_recorded("vllm_completion_response.json"))


@pytest.fixture
def fake_server():
    _FakeVLLM.bodies, _FakeVLLM.root = [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeVLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_server_client_over_http(fake_server):
    client = VLLMServer(fake_server + "/v1")  # a base URL ending in /v1 works too
    assert client.model == "tiny"
    settings = SamplingSettings(0.7, 1.0, 0, (4, 2), (GOAL_MARKER,), 4)
    out = client.generate([Request((1, 2), 2, 64, 1), Request((1, 3), 2, 64, 2)], settings)
    assert len(out) == 2 and all(len(c) == 2 for c in out)
    assert sorted(b["prompt"] for b in _FakeVLLM.bodies) == [[1, 2], [1, 3]]
    assert all(b["model"] == "tiny" for b in _FakeVLLM.bodies)
    with pytest.raises(RuntimeError, match="answered HTTP 400: .*n must be 2 here"):
        client.generate([Request((1,), 3, 8, 0)], settings)


def test_no_server_is_one_clear_error():
    with pytest.raises(ConnectionError, match="No vLLM server at http://127.0.0.1:9 .*vllm serve"):
        VLLMServer("http://127.0.0.1:9")


def test_a_server_on_another_model_folder_is_refused(fake_server, tmp_path):
    from backtrack_trl.decoding.vllm_backend import make_vllm_client

    (tmp_path / "round_0").mkdir()
    (tmp_path / "round_1").mkdir()
    _FakeVLLM.root = str(tmp_path / "round_0")
    assert make_vllm_client(str(tmp_path / "round_0"), fake_server).root == str(tmp_path / "round_0")
    with pytest.raises(ValueError, match=r"serves .*round_0, not .*round_1: restart it"):
        make_vllm_client(str(tmp_path / "round_1"), fake_server)
    with pytest.raises(ValueError, match=r"serves \['tiny'\], not 'other'"):
        VLLMServer(fake_server, model="other")
