"""The batched, cached sampling loop shared by the search and the sampling baselines.

One call expands a list of states (a problem's prompt plus a partial response) into ``n`` samples each, all rows
of all problems in one batch. Every row stops on its own (``<backtrack>``, EOS, the goal marker, or its length
limit) and leaves the batch, so finished rows cost nothing. The log-probability of every sampled token and the
probability of ``<backtrack>`` at every position come from the logits of the sampling pass itself (no second
scoring pass). When a finished row will be rolled back, the caller's ``keep_prefix`` hook says how many response
tokens to keep, and the loop copies the KV cache of that prefix out of the batch, so the next round starts from it
without re-encoding anything.

Usage (the decoders in this package drive it; this is the low-level form):

```python
from backtrack_trl.decoding.engine import SamplingEngine
from backtrack_trl.decoding.engine_io import Expansion, State
from backtrack_trl.decoding.tokens import TaskTokens

engine = SamplingEngine(model, TaskTokens.from_tokenizer(tokenizer), temperature=0.7, max_new_tokens=64)
out = engine.run(prompt_ids, [Expansion(problem=0, state=State(), seed=1234)], n=8)
texts = [tokenizer.decode(sample.tokens) for sample in out.samples]
```
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import torch
from transformers import DynamicCache

from backtrack_trl.decoding.cache_ops import new_cache, stack_slices, supports_surgery
from backtrack_trl.decoding.engine_io import EngineOutput, Expansion, ModelEngine, Sample
from backtrack_trl.decoding.log1mexp import log1mexp_exact, log1mexp_fast
from backtrack_trl.decoding.processors import ban_backtrack, tabu_bans
from backtrack_trl.decoding.row_batch import RowBatch, StopTokens
from backtrack_trl.decoding.sampling import sample_tokens, step_uniforms, warp_scores
from backtrack_trl.decoding.tokens import TaskTokens


class SamplingEngine(ModelEngine):
    """Batched cached sampling over many (problem, state) rows; see the module docstring.

    Args:
        model: a causal LM taking ``input_ids, attention_mask, position_ids, past_key_values, use_cache``.
        tokens: the task's token ids (:class:`TaskTokens`).
        temperature: 0 for greedy; top_p / top_k as in ``generate``.
        max_new_tokens: the response length limit in tokens (a state's tokens count towards it).
        reuse_cache: copy a rolled-back prefix's KV cache instead of re-encoding (falls back with a warning for
            caches that are not plain full-attention ``DynamicCache`` layers).
        max_backtracks: forbid ``<backtrack>`` in rows whose state already has this many rollbacks (None: never).
        tabu_tokens: 0 disables tabu; else see :class:`~backtrack_trl.decoding.processors.TabuLogitsProcessor`.
        compact_fraction: finished rows are dropped from the batch once they are this fraction of it.
        logits_processor: optional ``LogitsProcessorList`` called as ``processor(full_ids, scores)`` on the raw
            logits (after the budget and tabu bans, before temperature/top-p/top-k).
    """

    def __init__(
        self,
        model,
        tokens: TaskTokens,
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 64,
        reuse_cache: bool = True,
        max_backtracks: int | None = None,
        tabu_tokens: int = 0,
        logits_processor=None,
        do_sample: bool | None = None,
        compact_fraction: float = 0.5,
    ):
        super().__init__(model, tokens, temperature, top_p, max_new_tokens, max_backtracks, tabu_tokens)
        self.top_k = top_k
        self.reuse_cache = reuse_cache
        self.logits_processor = logits_processor
        self.do_sample = temperature > 0 if do_sample is None else do_sample
        self.compact_fraction = compact_fraction
        forward_parameters = inspect.signature(model.forward).parameters
        self._accepts_logits_to_keep = "logits_to_keep" in forward_parameters
        self._warned_surgery = False

    def _forward(self, **inputs):
        return self.model(**inputs, use_cache=True, return_dict=True)

    def _prefill(self, contexts: list[list[int]]) -> tuple[DynamicCache, torch.Tensor, int]:
        """Encode every context minus its last token, left-padded; returns (cache, mask, forward passes)."""
        ids, mask = self.left_padded([context[:-1] for context in contexts])
        cache = new_cache(self.model.config)
        if mask.shape[1] == 0:
            return cache, mask, 0
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._accepts_logits_to_keep else {}
        self._forward(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache, **extra)
        return cache, mask, 1

    def _start_cache(self, expansions: list[Expansion], contexts, forward_passes: dict[int, int]):
        """The expansions' contexts in a KV cache (their states' cached slices, else a prefill) and its mask."""
        if self.reuse_cache and all(e.state.kv is not None for e in expansions):
            cache, mask = stack_slices([e.state.kv for e in expansions], config=self.model.config)
            return cache, mask.to(self.device)
        cache, mask, passes = self._prefill(contexts)
        for e in expansions:
            forward_passes[e.problem] = forward_passes.get(e.problem, 0) + passes
        if self.reuse_cache and mask.shape[1] and not supports_surgery(cache):
            if not self._warned_surgery:
                warnings.warn(
                    "This model's cache is not a plain full-attention DynamicCache: rolled-back states are "
                    "re-encoded from their token ids instead of reusing the KV cache.",
                    stacklevel=3,
                )
                self._warned_surgery = True
            self.reuse_cache = False
        return cache, mask

    def _scores(self, logits: torch.Tensor, batch: RowBatch, step: int) -> torch.Tensor:
        """The logits after the budget and tabu bans and the logits processor (on a copy when any applies: rows
        whose p(<backtrack>) rounds to 1 need the model's own logits afterwards, for the exact log(1 - p))."""
        tabu = batch.tabu is not None and step < self.tabu_tokens
        edits = self.max_backtracks is not None or tabu or self.logits_processor is not None
        scores = logits.clone() if edits else logits
        if self.max_backtracks is not None:
            ban_backtrack(scores, self.tokens.backtrack_id, batch.ban)
        if tabu:
            for row, token in tabu_bans(batch.out_tokens[:, :step], batch.tabu, self.tabu_tokens):
                scores[row, token] = -float("inf")
        if self.logits_processor is not None:
            full = torch.cat([batch.full_context, batch.out_tokens[:, :step]], dim=1)
            scores = self.logits_processor(full, scores)
        return scores

    @torch.no_grad()
    def run(
        self,
        prompts: list[list[int]],
        expansions: list[Expansion],
        n: int,
        keep_prefix: Callable[[Sample], int | None] | None = None,
    ) -> EngineOutput:
        """Sample ``n`` continuations of every expansion; see :class:`Sample` for what comes back."""
        tokens = self.tokens
        device = self.device
        forward_passes: dict[int, int] = {}
        generated: dict[int, int] = {}
        expansions = [e for e in expansions if self.room(e) > 0]
        if not expansions:
            return EngineOutput([], forward_passes, generated)
        contexts = [list(prompts[e.problem]) + list(e.state.tokens) for e in expansions]
        cache, mask = self._start_cache(expansions, contexts, forward_passes)

        # One row per (expansion, sample).
        if mask.shape[1]:
            cache.batch_repeat_interleave(n)
        ban = None
        if self.max_backtracks is not None:
            ban = [e.state.rollbacks >= self.max_backtracks for e in expansions]
        batch = RowBatch.start(
            prompts,
            expansions,
            contexts,
            mask,
            n,
            limits=[self.room(e) for e in expansions],
            ban=ban,
            tabu_tokens=self.tabu_tokens,
            full_context=self.left_padded(contexts)[0] if self.logits_processor is not None else None,
        )
        stops = StopTokens.on(tokens, device)
        samples: list[Sample] = []
        problems_of = [e.problem for e in expansions]

        step = 0
        steps_of: dict[int, int] = {}
        remaining = len(expansions) * n  # live rows, counted here so that no step asks the device
        while True:
            attention = torch.cat([batch.mask, batch.mask.new_ones(batch.mask.shape[0], 1)], dim=1)
            output = self._forward(
                input_ids=batch.current[:, None],
                attention_mask=attention,
                position_ids=batch.position[:, None],
                past_key_values=cache,
            )
            cache = output.past_key_values
            batch.mask = attention
            batch.valid = batch.valid + 1

            # Ids past the tokenizer (an embedding padded to a multiple of 64) are not tokens: never sampled or scored.
            logits = output.logits[:, -1, : tokens.vocab_size].float()
            logp = torch.log_softmax(logits, dim=-1)
            no_backtrack, close = log1mexp_fast(logp[:, tokens.backtrack_id])
            scores = self._scores(logits, batch, step)
            if self.do_sample:
                warped = warp_scores(scores, self.temperature, self.top_p, self.top_k)
                next_tokens = sample_tokens(warped, step_uniforms(batch.keys, step), temperature=1.0)
            else:
                next_tokens = scores.argmax(dim=-1)

            batch.out_tokens[:, step] = next_tokens
            batch.out_logprobs[:, step] = logp.gather(1, next_tokens[:, None]).squeeze(1)
            batch.out_no_backtrack[:, step] = no_backtrack
            batch.current = next_tokens
            step += 1

            exact, candidates = batch.flag(next_tokens, step, stops, close)
            if exact:  # p(<backtrack>) rounds to 1: log(1 - p) again, exactly, from these rows' logits
                index = torch.tensor(exact, device=device)
                value = log1mexp_exact(logits[index], tokens.backtrack_id)
                batch.out_no_backtrack[index, step - 1] = value
            if candidates:
                finished = batch.finish(candidates, step, expansions, tokens, cache, keep_prefix, self.reuse_cache)
                for row, sample in finished:
                    samples.append(sample)
                    problem = problems_of[sample.expansion]
                    generated[problem] = generated.get(problem, 0) + step
                    # Every row starts at step 0, so a problem took part in as many steps as its longest row.
                    steps_of[problem] = max(steps_of.get(problem, 0), step)
                if finished:
                    batch.alive[torch.tensor([row for row, _ in finished], device=device)] = False
                    remaining -= len(finished)
                if remaining == 0:
                    break
                # Finished rows stay in the batch (fed padding, outputs ignored) until enough of them accumulate:
                # copying the cache to drop them costs about as much as carrying them for a few steps.
                if batch.alive.numel() - remaining >= max(1, int(self.compact_fraction * batch.alive.numel())):
                    batch.compact(cache)
            batch.current = torch.where(batch.alive, batch.current, torch.full_like(batch.current, tokens.pad_id))
            batch.position = batch.position + 1
        for problem, count in steps_of.items():
            forward_passes[problem] = forward_passes.get(problem, 0) + count
        return EngineOutput(samples, forward_passes, generated)
