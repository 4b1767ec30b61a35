"""The vLLM engine interface of the search: one :class:`Request` per expanded state, the :class:`SamplingSettings`
every request of a search shares, and the :class:`Completion` s that come back. :class:`VLLMClient` is what the
search's vLLM engine (:class:`~backtrack_trl.decoding.vllm_backend.VLLMEngine`) calls; its implementations are
:class:`~backtrack_trl.decoding.vllm_http.VLLMServer` (an OpenAI-compatible server) and
:class:`~backtrack_trl.decoding.vllm_offline.VLLMOffline` (``vllm.LLM`` in this process).

Usage (a client that answers every request with ``n`` copies of one completion, e.g. in a test):

```python
from backtrack_trl.decoding.vllm_client import Completion, VLLMClient


class Canned(VLLMClient):
    def generate(self, requests, settings):
        return [[Completion((5, 2), (-0.1, -0.2), (-9.0, -9.0), "stop")] * r.n for r in requests]
```
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


# Log-probability given to a token vLLM did not report (it cannot happen with logprob_token_ids; kept finite).
MISSING_LOGPROB = -1e4


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
