"""The HTTP side of the vLLM backend: an OpenAI-compatible vLLM server (``vllm serve <folder>
--enable-prefix-caching``) as a :class:`~backtrack_trl.decoding.vllm_client.VLLMClient`: one ``/v1/completions``
request per expanded state (:func:`request_body`) and its response read back into completions
(:func:`parse_completion_response`).

Usage:

```python
from backtrack_trl.decoding.vllm_http import VLLMServer

client = VLLMServer("http://localhost:8000")  # the server's first model; model="<name>" picks another
client.check_serves("models/countdown-tiny/backtrack-sft")  # a ValueError when it serves another folder
```
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backtrack_trl.decoding.vllm_client import MISSING_LOGPROB, Completion, Request, SamplingSettings, VLLMClient
from backtrack_trl.errors import ServerUnavailableError


# How to start a server, for the error when none answers (the Makefile's target builds .venv-vllm first).
START_HINT = (
    "Start one on the model folder with `make vllm-serve MODEL=<model folder>` (http://localhost:8000, vLLM's CPU "
    "build in .venv-vllm) or `vllm serve <model folder> --enable-prefix-caching` where vLLM is installed, and pass "
    "its address as --vllm_server_base_url (the study can start one per round itself: vllm_serve: true)"
)


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
        sampled = tuple(MISSING_LOGPROB if v is None else float(v) for v in logprobs.get("token_logprobs", []))
        key = f"token_id:{backtrack_id}"
        top = logprobs.get("top_logprobs") or [None] * len(parsed)
        backtrack = tuple(float((entry or {}).get(key, MISSING_LOGPROB)) for entry in top)
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
            raise ServerUnavailableError(
                f"--vllm_server_base_url {self.base_url}: the server serves no model. Restart it on the model folder "
                "(`make vllm-serve MODEL=<model folder>`)."
            )
        entry = next((m for m in served if m.get("id") == model), None) if model else served[0]
        if entry is None:
            raise ValueError(
                f"The vLLM server at {self.base_url} serves {[m.get('id') for m in served]}, not {model!r}: pass one "
                "of those as served_model_name, or restart the server on the model you mean."
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
            reason = getattr(error, "reason", error)
            raise ServerUnavailableError(
                f"--vllm_server_base_url {self.base_url}: no vLLM server answers there ({reason}). {START_HINT}."
            ) from None

    def generate(self, requests, settings):
        def one(request: Request) -> list[Completion]:
            data = self._call("/v1/completions", request_body(request, settings, self.model))
            return parse_completion_response(data, request, settings.backtrack_id)

        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(requests))) as pool:
            return list(pool.map(one, requests))
