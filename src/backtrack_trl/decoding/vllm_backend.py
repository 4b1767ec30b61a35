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

The pieces: :mod:`~backtrack_trl.decoding.vllm_client` (the client interface: requests, settings, completions),
:mod:`~backtrack_trl.decoding.vllm_http` (the server client), :mod:`~backtrack_trl.decoding.vllm_offline` (the
in-process engine), :mod:`~backtrack_trl.decoding.vllm_launch` (start a server); this module picks the backend and
adapts a client to the search's engine interface (:class:`VLLMEngine`).

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

import torch

from backtrack_trl.decoding.engine_io import EngineOutput, Expansion, Sample
from backtrack_trl.decoding.log1mexp import log1mexp_fast
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.decoding.vllm_client import Request, SamplingSettings, VLLMClient
from backtrack_trl.decoding.vllm_http import VLLMServer
from backtrack_trl.decoding.vllm_offline import VLLMOffline
from backtrack_trl.tasks.base import GOAL_MARKER


BACKENDS = ("hf", "vllm")


def make_vllm_client(
    model: str, vllm_server_base_url: str | None = None, served_model_name: str | None = None, **engine_options
) -> VLLMClient:
    """A server client when ``vllm_server_base_url`` is given, else the in-process engine on folder ``model``."""
    if vllm_server_base_url:
        client = VLLMServer(vllm_server_base_url, model=served_model_name)
        client.check_serves(model)
        return client
    return VLLMOffline(model, **engine_options)


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
        """Sample ``n`` continuations of every expansion; see :class:`~backtrack_trl.decoding.engine_io.Sample`."""
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
                end = self._end(new, state.tokens + new, completion.finish_reason)
                no_backtrack = _no_backtrack(completion.backtrack_logprobs)
                sample = Sample.after(
                    state, expansion_index, sample_index, new, completion.logprobs, no_backtrack, end
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
