"""The vLLM server client without vLLM: the request body and the response parsing against responses recorded from
vLLM 0.32's OpenAI-compatible server (tests/fixtures), and a fake server over HTTP."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backtrack_trl.decoding.vllm_backend import make_vllm_client
from backtrack_trl.decoding.vllm_client import Request, SamplingSettings
from backtrack_trl.decoding.vllm_http import VLLMServer, parse_completion_response, request_body
from backtrack_trl.errors import run_recipe
from backtrack_trl.tasks.base import GOAL_MARKER


DATA = Path(__file__).resolve().parents[1] / "fixtures"


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


def test_no_server_is_one_clear_error(capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ConnectionError, match=f"--vllm_server_base_url {url}: no vLLM server answers there"):
        VLLMServer(url)
    with pytest.raises(SystemExit) as exit_info:  # a user error: one line, how to start a server
        run_recipe(lambda: VLLMServer(url))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and "`make vllm-serve MODEL=<model folder>`" in err


def test_a_server_on_another_model_folder_is_refused(fake_server, tmp_path):
    (tmp_path / "round_0").mkdir()
    (tmp_path / "round_1").mkdir()
    _FakeVLLM.root = str(tmp_path / "round_0")
    assert make_vllm_client(str(tmp_path / "round_0"), fake_server).root == str(tmp_path / "round_0")
    with pytest.raises(ValueError, match=r"serves .*round_0, not .*round_1: restart it"):
        make_vllm_client(str(tmp_path / "round_1"), fake_server)
    with pytest.raises(ValueError, match=r"serves \['tiny'\], not 'other'"):
        VLLMServer(fake_server, model="other")
