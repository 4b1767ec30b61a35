"""vLLM as the generation engine of the search (``backend="vllm"``): offline ``vllm.LLM`` or an OpenAI-compatible
server (``vllm serve``).

The search keeps its own logic (frontier, visited set, rollbacks, K, selection, duplicates); only the sampling moves
to vLLM. Every expanded state is one request: its token ids (prompt + state) as the prompt, ``n`` samples, each
stopping at ``<backtrack>`` or EOS (stop token ids, kept in the output) or at ``Goal Reached!`` (a stop string, kept),
with the log-probability of every sampled token and of ``<backtrack>`` at every position (``logprob_token_ids``) from
the model's raw distribution (vLLM's default ``logprobs_mode="raw_logprobs"``, as the HF engine's). A rolled-back
state is re-sent as a prompt that the engine has already seen, so with prefix caching its prefill is nearly free.

What differs from the HF backend: the random draws are vLLM's (seeded per state: the same problem seed, round and
state index give the same samples, but not the HF backend's samples), and ``sampling="beam"``, ``tabu``,
``max_backtracks`` and logits processors are HF-only (the decoder refuses them with this backend).

Usage:

```python
from backtrack_trl.decoding import SelfBacktrackingDecoder

# in-process engine (needs `pip install vllm` in this environment), or a server started with
# `vllm serve models/countdown-tiny/backtrack-sft --enable-prefix-caching`:
decoder = SelfBacktrackingDecoder.from_pretrained("models/countdown-tiny/backtrack-sft", backend="vllm", n=32, b=1)
decoder = SelfBacktrackingDecoder.from_pretrained(
    "models/countdown-tiny/backtrack-sft", backend="vllm", vllm_server_base_url="http://localhost:8000", n=32, b=1
)
result = decoder.solve(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"])[0]
```
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from backtrack_trl.decoding.engine import EngineOutput, Expansion, Sample, log1mexp_fast
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.tasks.base import GOAL_MARKER


BACKENDS = ("hf", "vllm")
INSTALL_HINT = (
    "install vLLM in this environment (`pip install vllm` on a GPU node, `make vllm-env` for the CPU build in its own "
    "virtual environment), or start a server there (`vllm serve <model folder> --enable-prefix-caching`) and pass "
    "vllm_server_base_url"
)
# Log-probability given to a token vLLM did not report (it cannot happen with logprob_token_ids; kept finite).
_FLOOR = -1e4


@dataclass(frozen=True)
class Request:
    """One expanded state: ``n`` samples of at most ``max_tokens`` new tokens after ``prompt_ids``."""

    prompt_ids: tuple[int, ...]
    n: int
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class SamplingSettings:
    """What every request of a search shares (the decoder's options and the task's stop tokens)."""

    temperature: float
    top_p: float
    top_k: int
    stop_token_ids: tuple[int, ...]
    stop: tuple[str, ...]
    backtrack_id: int


@dataclass(frozen=True)
class Completion:
    """One sample: its new token ids, the log-probability of each, and of ``<backtrack>`` at each position."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    backtrack_logprobs: tuple[float, ...]
    finish_reason: str


class VLLMClient(abc.ABC):
    """A vLLM engine the search sends requests to. ``generate`` returns, per request, its ``n`` completions."""

    name_or_path: str = ""

    @abc.abstractmethod
    def generate(self, requests: list[Request], settings: SamplingSettings) -> list[list[Completion]]:
        """Sample every request (all of them together: the engine batches them)."""


def request_body(request: Request, settings: SamplingSettings, model: str | None) -> dict:
    """The OpenAI-compatible ``/v1/completions`` body of one request (vLLM's extra sampling fields included)."""
    body = {
        "prompt": list(request.prompt_ids),
        "n": request.n,
        "max_tokens": request.max_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k if settings.top_k > 0 else -1,
        "seed": request.seed,
        "stop": list(settings.stop),
        "stop_token_ids": list(settings.stop_token_ids),
        "include_stop_str_in_output": True,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "add_special_tokens": False,
        "logprobs": 1,
        "logprob_token_ids": [settings.backtrack_id],
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
    }
    if model:
        body["model"] = model
    return body


def _token_id(token: str) -> int:
    """``"token_id:42"`` (``return_tokens_as_token_ids``) -> 42."""
    prefix, _, value = token.partition(":")
    if prefix != "token_id" or not value.lstrip("-").isdigit():
        raise ValueError(f"vLLM server response: expected a token as 'token_id:<int>', got {token!r}.")
    return int(value)


def parse_completion_response(data: dict, request: Request, backtrack_id: int) -> list[Completion]:
    """The ``n`` completions of one ``/v1/completions`` response, in sample order; a clear error for a bad shape."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != request.n:
        got = len(choices) if isinstance(choices, list) else type(choices).__name__
        raise ValueError(
            f"vLLM server response: expected {request.n} choices, got {got} (response: {str(data)[:300]})."
        )
    completions = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0)):
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens")
        if tokens is None:
            raise ValueError(
                "vLLM server response: a choice has no logprobs; the server must accept `logprobs` and "
                "`return_tokens_as_token_ids` (vLLM's OpenAI-compatible server does)."
            )
        token_ids = tuple(choice["token_ids"]) if choice.get("token_ids") is not None else None
        parsed = tuple(_token_id(t) for t in tokens)
        if token_ids is None:
            token_ids = parsed
        sampled = tuple(_FLOOR if v is None else float(v) for v in logprobs.get("token_logprobs", []))
        key = f"token_id:{backtrack_id}"
        top = logprobs.get("top_logprobs") or [None] * len(parsed)
        backtrack = tuple(float((entry or {}).get(key, _FLOOR)) for entry in top)
        if not (len(token_ids) == len(sampled) == len(backtrack)):
            raise ValueError(
                f"vLLM server response: {len(token_ids)} tokens but {len(sampled)} log-probs and {len(backtrack)} "
                "<backtrack> log-probs."
            )
        completions.append(Completion(token_ids, sampled, backtrack, str(choice.get("finish_reason"))))
    return completions


class VLLMServer(VLLMClient):
    """An OpenAI-compatible vLLM server (``vllm serve <folder> --enable-prefix-caching``) at ``base_url``.

    Requests go out in parallel (``max_workers`` at once) so the server batches them; many harvest or evaluation
    processes can share one server. ``model``: the served model name (None: the server's first model).
    """

    def __init__(self, base_url: str, model: str | None = None, timeout: float = 600.0, max_workers: int = 64):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.timeout = timeout
        self.max_workers = max_workers
        served = self._call("/v1/models").get("data") or []
        if not served:
            raise RuntimeError(f"The vLLM server at {self.base_url} serves no model.")
        entry = next((m for m in served if m.get("id") == model), None) if model else served[0]
        if entry is None:
            raise ValueError(
                f"The vLLM server at {self.base_url} serves {[m.get('id') for m in served]}, not {model!r}."
            )
        self.model = entry["id"]
        # The folder the server loaded (vLLM reports it as "root"), to check it is the model the caller means.
        self.root = entry.get("root") or self.model
        self.name_or_path = self.model

    def check_serves(self, folder: str | os.PathLike) -> None:
        """Raise a ValueError when the server loaded another folder than ``folder`` (a stale server of an earlier
        round would otherwise sample from the wrong model)."""
        if Path(folder).exists() and Path(self.root).exists() and Path(folder).resolve() != Path(self.root).resolve():
            raise ValueError(
                f"The vLLM server at {self.base_url} serves {self.root}, not {folder}: restart it on {folder} (the "
                "study can start one per round itself: vllm_serve: true)."
            )

    def _call(self, path: str, body: dict | None = None) -> dict:
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise RuntimeError(f"vLLM server {url} answered HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise ConnectionError(
                f"No vLLM server at {self.base_url} ({error}). Start one with `vllm serve <model folder> "
                "--enable-prefix-caching` (or `python -m vllm.entrypoints.openai.api_server --model <folder>`) and "
                "pass its address as vllm_server_base_url."
            ) from None

    def generate(self, requests, settings):
        def one(request: Request) -> list[Completion]:
            data = self._call("/v1/completions", request_body(request, settings, self.model))
            return parse_completion_response(data, request, settings.backtrack_id)

        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(requests))) as pool:
            return list(pool.map(one, requests))


class VLLMOffline(VLLMClient):
    """vLLM's in-process engine: ``vllm.LLM(model, enable_prefix_caching=True, **engine_options)``."""

    def __init__(self, model: str, **engine_options):
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(f"backend='vllm' without a server needs vLLM ({error}): {INSTALL_HINT}.") from None
        engine_options.setdefault("enable_prefix_caching", True)
        self.llm = LLM(model=str(model), **engine_options)
        self.name_or_path = str(model)

    def generate(self, requests, settings):
        from vllm import SamplingParams

        prompts, params = [], []
        for request in requests:
            prompts.append({"prompt_token_ids": list(request.prompt_ids)})
            params.append(
                SamplingParams(
                    n=request.n,
                    max_tokens=request.max_tokens,
                    seed=request.seed,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    top_k=settings.top_k if settings.top_k > 0 else 0,
                    stop=list(settings.stop),
                    stop_token_ids=list(settings.stop_token_ids),
                    include_stop_str_in_output=True,
                    skip_special_tokens=False,
                    logprobs=1,
                    logprob_token_ids=[settings.backtrack_id],
                )  # fmt: skip
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if requests else []
        results = []
        for output in outputs:
            completions = []
            for sample in sorted(output.outputs, key=lambda o: o.index):
                sampled, backtrack = [], []
                for token, entry in zip(sample.token_ids, sample.logprobs or []):
                    sampled.append(float(entry[token].logprob) if token in entry else _FLOOR)
                    item = entry.get(settings.backtrack_id)
                    backtrack.append(float(item.logprob) if item is not None else _FLOOR)
                completions.append(
                    Completion(tuple(sample.token_ids), tuple(sampled), tuple(backtrack), str(sample.finish_reason))
                )
            results.append(completions)
        return results


def make_vllm_client(
    model: str, vllm_server_base_url: str | None = None, served_model_name: str | None = None, **engine_options
) -> VLLMClient:
    """A server client when ``vllm_server_base_url`` is given, else the in-process engine on folder ``model``."""
    if vllm_server_base_url:
        client = VLLMServer(vllm_server_base_url, model=served_model_name)
        client.check_serves(model)
        return client
    return VLLMOffline(model, **engine_options)


@contextlib.contextmanager
def launch_vllm_server(
    model: str,
    python: str = sys.executable,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    log_file: str | Path | None = None,
    timeout: float = 900.0,
    env: dict | None = None,
):
    """Start vLLM's OpenAI-compatible server on ``model`` with ``python`` (an environment where vLLM is installed,
    e.g. ``.venv-vllm/bin/python``), wait until it answers, yield its base URL, stop it on exit.

    It runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` command of the CPU build fails on its own
    package name) with prefix caching on; ``extra_args`` go to the server (e.g. ``["--dtype", "float32"]``).

    ```python
    with launch_vllm_server("results/sudoku-tiny/models/backtrack-sft", python=".venv-vllm/bin/python") as url:
        decoder = SelfBacktrackingDecoder.from_pretrained(folder, vllm_server_base_url=url, task="sudoku")
    ```
    """
    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--enable-prefix-caching", *extra_args]  # fmt: skip
    log_path = Path(log_file) if log_file else Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"The vLLM server exited with code {process.returncode} (log {log_path}):\n{tail}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"The vLLM server did not answer within {timeout:.0f} s (log {log_path}).")
            time.sleep(1.0)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def resolve_backend(backend: str | None, model) -> str:
    """``backend`` checked against ``model``: None means ``"vllm"`` for a :class:`VLLMClient`, else ``"hf"``."""
    is_client = isinstance(model, VLLMClient)
    if backend is None:
        return "vllm" if is_client else "hf"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}.")
    if backend == "vllm" and not is_client:
        raise ValueError(
            "backend='vllm' needs a vLLM engine, not a transformers model: build the decoder with "
            "`SelfBacktrackingDecoder.from_pretrained(folder, backend='vllm')` (add vllm_server_base_url=... for a "
            "server), or pass a backtrack_trl.decoding.vllm_backend.VLLMOffline / VLLMServer as the model."
        )
    if backend == "hf" and is_client:
        raise ValueError("backend='hf' needs a transformers model; a vLLM client was given (use backend='vllm').")
    return backend


def check_vllm_options(sampling="independent", tabu=False, max_backtracks=None, logits_processor=None) -> None:
    """Refuse the options only the HF backend has, naming them."""
    unsupported = [
        name
        for name, used in (
            ("sampling='beam'", sampling != "independent"),
            ("tabu", bool(tabu)),
            ("max_backtracks", max_backtracks is not None),
            ("logits_processor", logits_processor is not None),
        )
        if used
    ]
    if unsupported:
        raise ValueError(
            f"backend='vllm' does not support {', '.join(unsupported)} (they need the HF engine's logits access): "
            "use backend='hf' for them."
        )


def _request_seed(seed: int, round_index: int, state_index: int) -> int:
    """A 63-bit seed per expanded state from (problem seed, round, state index): batch- and process-independent."""
    value = 0x9E3779B97F4A7C15
    for part in (seed, round_index, state_index):
        value ^= (part & 0xFFFFFFFFFFFFFFFF) + 0x9E3779B97F4A7C15 + ((value << 6) & 0xFFFFFFFFFFFFFFFF) + (value >> 2)
        value &= 0xFFFFFFFFFFFFFFFF
    return value & 0x7FFFFFFFFFFFFFFF


def _no_backtrack(backtrack_logprobs: tuple[float, ...]) -> tuple[float, ...]:
    """``log(1 - p(<backtrack>))`` per position, as the HF engine computes it (vLLM returns no logits, so a position
    where p rounds to 1 keeps the closed-form value)."""
    if not backtrack_logprobs:
        return ()
    values, _ = log1mexp_fast(torch.tensor(backtrack_logprobs, dtype=torch.float64))
    return tuple(values.tolist())


class VLLMEngine:
    """The search's engine interface (:meth:`run`, as :class:`~backtrack_trl.decoding.engine.SamplingEngine`) on vLLM.

    Args:
        client: a :class:`VLLMClient` (:class:`VLLMOffline` or :class:`VLLMServer`).
        tokens: the task's token ids (:class:`TaskTokens`).
        temperature, top_p, top_k: sampling (temperature 0 = greedy, as in vLLM).
        max_new_tokens: the response length limit in tokens (a state's tokens count towards it).
    """

    def __init__(self, client: VLLMClient, tokens: TaskTokens, temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=64):
        self.client = client
        self.tokens = tokens
        self.max_new_tokens = max_new_tokens
        self.settings = SamplingSettings(
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            stop_token_ids=(tokens.backtrack_id, *tokens.eos_ids),
            stop=(GOAL_MARKER,),
            backtrack_id=tokens.backtrack_id,
        )

    def _end(self, new_tokens: tuple[int, ...], all_tokens: tuple[int, ...], finish_reason: str) -> str:
        if new_tokens and new_tokens[-1] == self.tokens.backtrack_id:
            return "backtrack"
        if self.tokens.ends_with_goal(all_tokens[-len(GOAL_MARKER) :]):
            return "goal"
        if new_tokens and new_tokens[-1] in self.tokens.eos_ids:
            return "eos"
        return "length" if finish_reason == "length" else "eos"

    def run(self, prompts, expansions: list[Expansion], n: int, keep_prefix=None) -> EngineOutput:
        """Sample ``n`` continuations of every expansion; see :class:`~backtrack_trl.decoding.engine.Sample`."""
        forward_passes: dict[int, int] = {}
        generated: dict[int, int] = {}
        index_of = [i for i, e in enumerate(expansions) if self.max_new_tokens - len(e.state.tokens) > 0]
        requests = [
            Request(
                prompt_ids=tuple(prompts[expansions[i].problem]) + tuple(expansions[i].state.tokens),
                n=n,
                max_tokens=self.max_new_tokens - len(expansions[i].state.tokens),
                seed=_request_seed(expansions[i].seed, expansions[i].round, expansions[i].state.index),
            )
            for i in index_of
        ]
        samples, steps_of = [], {}
        for expansion_index, completions in zip(index_of, self.client.generate(requests, self.settings)):
            expansion = expansions[expansion_index]
            state, problem = expansion.state, expansion.problem
            for sample_index, completion in enumerate(completions):
                new = tuple(int(t) for t in completion.token_ids)
                tokens = state.tokens + new
                sample = Sample(
                    expansion=expansion_index,
                    sample=sample_index,
                    tokens=tokens,
                    logprobs=state.logprobs + tuple(completion.logprobs),
                    no_backtrack=state.no_backtrack + _no_backtrack(completion.backtrack_logprobs),
                    end=self._end(new, tokens, completion.finish_reason),
                    new_tokens=len(new),
                )
                if keep_prefix is not None:
                    sample.kv_keep = keep_prefix(sample)
                samples.append(sample)
                generated[problem] = generated.get(problem, 0) + len(new)
                steps_of[problem] = max(steps_of.get(problem, 0), len(new))
        # As the HF engine counts: one prefill plus as many decoding steps as the problem's longest sample.
        for problem, steps in steps_of.items():
            forward_passes[problem] = steps + 1
        return EngineOutput(samples, forward_passes, generated)
