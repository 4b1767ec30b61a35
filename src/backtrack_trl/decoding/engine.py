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
engine = SamplingEngine(model, TaskTokens.from_tokenizer(tokenizer), temperature=0.7, max_new_tokens=64)
out = engine.run(prompt_ids, [Expansion(problem=0, state=State(), seed=1234)], n=8)
texts = [tokenizer.decode(sample.tokens) for sample in out.samples]
```
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from transformers import DynamicCache

from backtrack_trl.decoding.cache_ops import (
    KVSlice,
    extract_slots,
    new_cache,
    select_rows,
    stack_slices,
    supports_surgery,
    trim_left,
)
from backtrack_trl.decoding.processors import ban_backtrack, tabu_bans
from backtrack_trl.decoding.sampling import row_keys_hash, sample_tokens, step_uniforms, warp_scores
from backtrack_trl.decoding.tokens import TaskTokens


def log1mexp(logp_token: torch.Tensor, logits: torch.Tensor, token: int) -> torch.Tensor:
    """``log(1 - p(token))`` per row from its log-probability, stable for p near 0 and near 1.

    Rows where ``p(token)`` rounds to 1 are recomputed exactly as a log-sum-exp over the other tokens. (The engine
    uses the two halves apart, so that finding those rows costs no extra host sync.)"""
    out, close = log1mexp_fast(logp_token)
    if close.any():
        out[close] = _log1mexp_exact(logits[close], token)
    return out


def log1mexp_fast(logp_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log1mexp` without the exact recomputation (no host sync, no logits needed): the values and the rows
    where it is inexact (p rounds to 1)."""
    x = logp_token.double().clamp(max=0.0)
    out = torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
    return out.float(), x > -1e-5


def _log1mexp_exact(logits: torch.Tensor, token: int) -> torch.Tensor:
    """``log(1 - p(token))`` per row as a log-sum-exp over the other tokens (rows where p rounds to 1)."""
    rows = logits.double()
    others = rows.clone()
    others[:, token] = -float("inf")
    return (torch.logsumexp(others, -1) - torch.logsumexp(rows, -1)).float()


# Stop reasons of a row at one step, as bits (see SamplingEngine.run).
_BACKTRACK, _GOAL, _EOS, _LENGTH, _MAYBE_GOAL, _CLOSE = 1, 2, 4, 8, 16, 32
_STOPS = _BACKTRACK | _GOAL | _EOS | _LENGTH | _MAYBE_GOAL


@dataclass
class State:
    """A node of the search: the response tokens so far and what the model said about them.

    ``no_backtrack[i]`` is ``log(1 - p(<backtrack>))`` under the distribution that produced ``tokens[i]``;
    ``tabu`` holds the steps rolled back at this state; ``index`` is the state's position in its problem's frontier
    (part of the sampling key); ``kv`` caches prompt + ``tokens`` minus the last token.
    """

    tokens: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    no_backtrack: tuple[float, ...] = ()
    rollbacks: int = 0
    tabu: tuple[tuple[int, ...], ...] = ()
    index: int = 0
    kv: KVSlice | None = field(default=None, repr=False)


@dataclass
class Expansion:
    """Expand ``state`` of problem ``problem`` (an index into the prompt list) in search round ``round``."""

    problem: int
    state: State
    seed: int = 0
    round: int = 0


@dataclass
class Sample:
    """A finished row: the full response ``tokens`` (state + new), per-token scores and why it ended."""

    expansion: int
    sample: int
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    no_backtrack: tuple[float, ...]
    end: str
    new_tokens: int
    kv: KVSlice | None = field(default=None, repr=False)
    kv_keep: int | None = None


@dataclass
class EngineOutput:
    samples: list[Sample]
    forward_passes: dict[int, int]
    tokens_generated: dict[int, int]


@dataclass
class _Rows:
    """The per-row state of one :meth:`SamplingEngine.run`: row ``i`` of every field is the same (expansion,
    sample) row. Kept together so that dropping finished rows (:meth:`select`) re-indexes all of them at once; the KV
    cache is re-indexed separately, in place."""

    expansion_of: torch.Tensor  # index into the run's expansions
    sample_of: torch.Tensor  # sample number within the expansion (part of the sampling key)
    current: torch.Tensor  # token fed at the next step (padding once the row has finished)
    position: torch.Tensor  # its position id
    mask: torch.Tensor  # attention mask over the cache's columns (left padding is 0)
    valid: torch.Tensor  # real cache slots of the row (prompt + tokens so far)
    prompt_len: torch.Tensor
    limit: torch.Tensor  # new tokens the row may write (max_new_tokens minus its state's tokens)
    keys: torch.Tensor  # per-row sampling keys (batch-independent random draws)
    ban: torch.Tensor  # <backtrack> forbidden (the state used up max_backtracks)
    alive: torch.Tensor
    out_tokens: torch.Tensor  # (rows, steps): what each row wrote, its log-probs and log(1 - p(<backtrack>))
    out_logprobs: torch.Tensor
    out_no_backtrack: torch.Tensor
    tabu: list | None = None  # per row: the steps rolled back at its state (None: tabu off)
    full_context: torch.Tensor | None = None  # prompt + state ids for the logits processor (None: no processor)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (row indices, in order) of every field, in place."""
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [value[i] for i in keep.tolist()])
            elif value is not None:
                setattr(self, name, value[keep])


class SamplingEngine:
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
        self.model = model
        self.tokens = tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self.reuse_cache = reuse_cache
        self.max_backtracks = max_backtracks
        self.tabu_tokens = tabu_tokens
        self.logits_processor = logits_processor
        self.do_sample = temperature > 0 if do_sample is None else do_sample
        self.compact_fraction = compact_fraction
        forward_parameters = inspect.signature(model.forward).parameters
        self._accepts_logits_to_keep = "logits_to_keep" in forward_parameters
        self._warned_surgery = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, **inputs):
        return self.model(**inputs, use_cache=True, return_dict=True)

    def _prefill(self, contexts: list[list[int]]) -> tuple[DynamicCache, torch.Tensor, int]:
        """Encode every context minus its last token, left-padded; returns (cache, mask, forward passes)."""
        device = self.device
        lengths = [len(context) - 1 for context in contexts]
        width = max(lengths)
        cache = new_cache(self.model.config)
        mask = torch.zeros(len(contexts), width, dtype=torch.long, device=device)
        if width == 0:
            return cache, mask, 0
        ids = torch.full((len(contexts), width), self.tokens.pad_id, dtype=torch.long, device=device)
        for row, (context, length) in enumerate(zip(contexts, lengths)):
            if length:
                ids[row, width - length :] = torch.tensor(context[:-1], device=device)
                mask[row, width - length :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._accepts_logits_to_keep else {}
        self._forward(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache, **extra)
        return cache, mask, 1

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
        expansions = [e for e in expansions if self.max_new_tokens - len(e.state.tokens) > 0]
        if not expansions:
            return EngineOutput([], forward_passes, generated)
        contexts = [list(prompts[e.problem]) + list(e.state.tokens) for e in expansions]

        use_kv = self.reuse_cache and all(e.state.kv is not None for e in expansions)
        if use_kv:
            cache, mask = stack_slices([e.state.kv for e in expansions], config=self.model.config)
            mask = mask.to(device)
        else:
            cache, mask, passes = self._prefill(contexts)
            for e in expansions:
                forward_passes[e.problem] = forward_passes.get(e.problem, 0) + passes
            if self.reuse_cache and mask.shape[1] and not supports_surgery(cache):
                if not self._warned_surgery:
                    warnings.warn(
                        "This model's cache is not a plain full-attention DynamicCache: rolled-back states are "
                        "re-encoded from their token ids instead of reusing the KV cache.",
                        stacklevel=2,
                    )
                    self._warned_surgery = True
                self.reuse_cache = False

        # One row per (expansion, sample).
        rows = len(expansions) * n
        if mask.shape[1]:
            cache.batch_repeat_interleave(n)
        sample_of = torch.arange(n, device=device).repeat(len(expansions))
        keys = torch.tensor(
            [[e.seed, e.round, e.state.index] for e in expansions], dtype=torch.int64, device=device
        ).repeat_interleave(n, dim=0)
        ban = torch.zeros(rows, dtype=torch.bool, device=device)
        if self.max_backtracks is not None:
            ban = torch.tensor([e.state.rollbacks >= self.max_backtracks for e in expansions], device=device)
            ban = ban.repeat_interleave(n)
        full_context = None
        if self.logits_processor is not None:
            width = max(len(c) for c in contexts)
            full_context = torch.full((len(expansions), width), tokens.pad_id, dtype=torch.long, device=device)
            for row, context in enumerate(contexts):
                full_context[row, width - len(context) :] = torch.tensor(context, device=device)
            full_context = full_context.repeat_interleave(n, dim=0)
        limit = torch.tensor([self.max_new_tokens - len(e.state.tokens) for e in expansions], device=device)
        steps = int(limit.max())
        batch = _Rows(
            expansion_of=torch.arange(len(expansions), device=device).repeat_interleave(n),
            sample_of=sample_of,
            current=torch.tensor([c[-1] for c in contexts], device=device).repeat_interleave(n),
            position=torch.tensor([len(c) - 1 for c in contexts], device=device).repeat_interleave(n),
            mask=mask.repeat_interleave(n, dim=0),
            valid=mask.sum(-1).repeat_interleave(n),
            prompt_len=torch.tensor([len(prompts[e.problem]) for e in expansions], device=device).repeat_interleave(n),
            limit=limit.repeat_interleave(n),
            keys=row_keys_hash(torch.cat([keys, sample_of[:, None].to(torch.int64)], dim=1)),
            ban=ban,
            alive=torch.ones(rows, dtype=torch.bool, device=device),
            out_tokens=torch.zeros(rows, steps, dtype=torch.long, device=device),
            out_logprobs=torch.zeros(rows, steps, dtype=torch.float32, device=device),
            out_no_backtrack=torch.zeros(rows, steps, dtype=torch.float32, device=device),
            tabu=[list(e.state.tabu) for e in expansions for _ in range(n)] if self.tabu_tokens else None,
            full_context=full_context,
        )
        goal = torch.tensor(tokens.goal_ids, device=device) if tokens.goal_ids else None
        eos = torch.tensor(tokens.eos_ids, device=device)
        goal_end = tokens.goal_end_mask_on(device)
        samples: list[Sample] = []
        problems_of = [e.problem for e in expansions]

        step = 0
        steps_of: dict[int, int] = {}
        remaining = rows  # live rows, counted here so that no step asks the device
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

            # The bans and processors below may write into the scores; rows whose p(<backtrack>) rounds to 1 need the
            # model's own logits afterwards (exact log(1 - p)), so they work on a copy then.
            edits = (
                self.max_backtracks is not None
                or (batch.tabu is not None and step < self.tabu_tokens)
                or self.logits_processor is not None
            )
            scores = logits.clone() if edits else logits
            if self.max_backtracks is not None:
                ban_backtrack(scores, tokens.backtrack_id, batch.ban)
            if batch.tabu is not None and step < self.tabu_tokens:
                for row, token in tabu_bans(batch.out_tokens[:, :step], batch.tabu, self.tabu_tokens):
                    scores[row, token] = -float("inf")
            if self.logits_processor is not None:
                full = torch.cat([batch.full_context, batch.out_tokens[:, :step]], dim=1)
                scores = self.logits_processor(full, scores)
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

            # Why each row may stop, as bits; one transfer per step brings the flagged rows to the host. "maybe_goal":
            # the last token can end the marker through a merged token (e.g. "!\n"); its text is checked on the host.
            is_goal = torch.zeros_like(batch.alive)
            if goal is not None and step >= len(goal):
                is_goal = (batch.out_tokens[:, step - len(goal) : step] == goal).all(dim=1)
            flags = (
                (next_tokens == tokens.backtrack_id).long() * _BACKTRACK
                | is_goal.long() * _GOAL
                | torch.isin(next_tokens, eos).long() * _EOS
                | (step >= batch.limit).long() * _LENGTH
                | (goal_end[next_tokens] & ~is_goal).long() * _MAYBE_GOAL
            ) * batch.alive.long() | (close & batch.alive).long() * _CLOSE
            flagged = flags.nonzero().flatten()
            pairs = torch.stack([flagged, flags[flagged]], dim=1).tolist() if flagged.numel() else []
            exact = [row for row, bits in pairs if bits & _CLOSE]
            if exact:  # p(<backtrack>) rounds to 1: log(1 - p) again, exactly, from these rows' logits
                index = torch.tensor(exact, device=device)
                value = _log1mexp_exact(logits[index], tokens.backtrack_id)
                batch.out_no_backtrack[index, step - 1] = value
            candidates = [(row, bits) for row, bits in pairs if bits & _STOPS]
            if candidates:
                finished = self._finish_rows(candidates, step, expansions, batch, keep_prefix, cache)
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
                    keep = batch.alive.nonzero().flatten()
                    select_rows(cache, keep)
                    batch.select(keep)
                    # Columns that are padding in every remaining row carry no information: drop them.
                    spare = int((batch.mask.shape[1] - batch.valid).min())
                    if spare > 0:
                        trim_left(cache, spare)
                        batch.mask = batch.mask[:, spare:]
            batch.current = torch.where(batch.alive, batch.current, torch.full_like(batch.current, tokens.pad_id))
            batch.position = batch.position + 1
        for problem, count in steps_of.items():
            forward_passes[problem] = forward_passes.get(problem, 0) + count
        return EngineOutput(samples, forward_passes, generated)

    def _finish_rows(self, candidates, step, expansions, batch: _Rows, keep_prefix, cache) -> list[tuple[int, Sample]]:
        """The rows among ``candidates`` ((row, stop bits) pairs) that stop now, packaged; their data comes to the
        host in one transfer. A row flagged only as a possible merged goal marker stops if its text ends with it."""
        index = torch.tensor([row for row, _ in candidates], device=batch.out_tokens.device)
        per_row = torch.stack(
            [batch.expansion_of[index], batch.sample_of[index], batch.valid[index], batch.prompt_len[index]], dim=1
        ).tolist()
        values = torch.cat(
            [
                batch.out_tokens[index, :step].double(),
                batch.out_logprobs[index, :step].double(),
                batch.out_no_backtrack[index, :step].double(),
            ],
            dim=1,
        ).tolist()
        finished = []
        for (row, bits), (expansion_index, sample_index, valid, prompt_len), row_values in zip(
            candidates, per_row, values
        ):
            new = [int(token) for token in row_values[:step]]
            # The order of the reasons matters (as before): a <backtrack> stops as a rollback even at the limit.
            if bits & _BACKTRACK:
                end = "backtrack"
            elif bits & _GOAL or (bits & _MAYBE_GOAL and self.tokens.ends_with_goal(new)):
                end = "goal"
            elif bits & _EOS:
                end = "eos"
            elif bits & _LENGTH:
                end = "length"
            else:
                continue  # a "!" that does not end the marker: the row goes on
            state = expansions[expansion_index].state
            sample = Sample(
                expansion=expansion_index,
                sample=sample_index,
                tokens=state.tokens + tuple(new),
                logprobs=state.logprobs + tuple(row_values[step : 2 * step]),
                no_backtrack=state.no_backtrack + tuple(row_values[2 * step :]),
                end=end,
                new_tokens=step,
            )
            keep = keep_prefix(sample) if keep_prefix is not None else None
            if keep is not None:
                sample.kv_keep = keep
                if self.reuse_cache:
                    # The row's real slots start after its left padding; keep prompt + `keep` tokens minus the last
                    # token (the next round feeds that token to get the logits that follow the prefix).
                    start = batch.mask.shape[1] - valid
                    sample.kv = extract_slots(cache, row, start, prompt_len + keep - 1)
            finished.append((row, sample))
        return finished
