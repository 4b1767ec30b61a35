"""The rows of one :meth:`~backtrack_trl.decoding.engine.SamplingEngine.run`: one per (expansion, sample), built
from the expansions, flagged when they may stop, packaged as :class:`Sample` s when they do, and dropped from the
batch (with their KV cache rows) once enough of them have finished.

Usage (the engine's loop drives it; ``cache`` holds the expansions' contexts, already repeated ``n`` times):

```python
batch = RowBatch.start(prompts, expansions, contexts, mask, n, limits=limits, ban=None, tabu_tokens=0)
exact, candidates = batch.flag(next_tokens, step, stops, close)  # after writing step `step - 1`'s tokens
finished = batch.finish(candidates, step, expansions, tokens, cache, keep_prefix=None, reuse_cache=True)
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from backtrack_trl.decoding.cache_ops import extract_slots, select_rows, trim_left
from backtrack_trl.decoding.engine_io import Expansion, Sample
from backtrack_trl.decoding.sampling import row_keys_hash
from backtrack_trl.decoding.tokens import TaskTokens


# Stop reasons of a row at one step, as bits (see RowBatch.flag).
_BACKTRACK, _GOAL, _EOS, _LENGTH, _MAYBE_GOAL, _CLOSE = 1, 2, 4, 8, 16, 32
_STOPS = _BACKTRACK | _GOAL | _EOS | _LENGTH | _MAYBE_GOAL


class StopTokens(NamedTuple):
    """The task's stop tokens on the engine's device, made once per run."""

    backtrack_id: int
    goal: torch.Tensor | None  # the goal marker's ids (None: it has none)
    eos: torch.Tensor
    goal_end: torch.Tensor  # bool per id: the id can end the goal marker through a merged token

    @classmethod
    def on(cls, tokens: TaskTokens, device) -> StopTokens:
        goal = torch.tensor(tokens.goal_ids, device=device) if tokens.goal_ids else None
        return cls(
            tokens.backtrack_id, goal, torch.tensor(tokens.eos_ids, device=device), tokens.goal_end_mask_on(device)
        )


@dataclass
class RowBatch:
    """The per-row state of one run: row ``i`` of every field is the same (expansion, sample) row. Kept together so
    that dropping finished rows (:meth:`select`) re-indexes all of them at once; the KV cache is re-indexed
    separately, in place."""

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

    @classmethod
    def start(
        cls,
        prompts: list[list[int]],
        expansions: list[Expansion],
        contexts: list[list[int]],
        mask: torch.Tensor,
        n: int,
        limits: list[int],
        ban: list[bool] | None,
        tabu_tokens: int,
        full_context: torch.Tensor | None = None,
    ) -> RowBatch:
        """``n`` rows per expansion (``contexts``: prompt + state ids; ``mask``: the cache's mask per expansion;
        ``limits``: new tokens each may write; ``ban``: <backtrack> forbidden per expansion, None: never;
        ``full_context``: the left-padded contexts per expansion, for a logits processor)."""
        device = mask.device
        rows = len(expansions) * n
        sample_of = torch.arange(n, device=device).repeat(len(expansions))
        keys = torch.tensor(
            [[e.seed, e.round, e.state.index] for e in expansions], dtype=torch.int64, device=device
        ).repeat_interleave(n, dim=0)
        banned = torch.zeros(rows, dtype=torch.bool, device=device)
        if ban is not None:
            banned = torch.tensor(ban, device=device).repeat_interleave(n)
        limit = torch.tensor(limits, device=device)
        steps = int(limit.max())
        return cls(
            expansion_of=torch.arange(len(expansions), device=device).repeat_interleave(n),
            sample_of=sample_of,
            current=torch.tensor([c[-1] for c in contexts], device=device).repeat_interleave(n),
            position=torch.tensor([len(c) - 1 for c in contexts], device=device).repeat_interleave(n),
            mask=mask.repeat_interleave(n, dim=0),
            valid=mask.sum(-1).repeat_interleave(n),
            prompt_len=torch.tensor([len(prompts[e.problem]) for e in expansions], device=device).repeat_interleave(n),
            limit=limit.repeat_interleave(n),
            keys=row_keys_hash(torch.cat([keys, sample_of[:, None].to(torch.int64)], dim=1)),
            ban=banned,
            alive=torch.ones(rows, dtype=torch.bool, device=device),
            out_tokens=torch.zeros(rows, steps, dtype=torch.long, device=device),
            out_logprobs=torch.zeros(rows, steps, dtype=torch.float32, device=device),
            out_no_backtrack=torch.zeros(rows, steps, dtype=torch.float32, device=device),
            tabu=[list(e.state.tabu) for e in expansions for _ in range(n)] if tabu_tokens else None,
            full_context=None if full_context is None else full_context.repeat_interleave(n, dim=0),
        )

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (row indices, in order) of every field, in place."""
        for name in (f.name for f in fields(self)):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [value[i] for i in keep.tolist()])
            elif value is not None:
                setattr(self, name, value[keep])

    def compact(self, cache) -> None:
        """Drop the finished rows from the batch and ``cache``, then the columns that are padding in every row."""
        keep = self.alive.nonzero().flatten()
        select_rows(cache, keep)
        self.select(keep)
        # Columns that are padding in every remaining row carry no information: drop them.
        spare = int((self.mask.shape[1] - self.valid).min())
        if spare > 0:
            trim_left(cache, spare)
            self.mask = self.mask[:, spare:]

    def flag(
        self, next_tokens: torch.Tensor, step: int, stops: StopTokens, close: torch.Tensor
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """After the tokens of step ``step - 1``: the rows whose ``log(1 - p(<backtrack>))`` needs the exact form
        (``close``: p rounds to 1), and the (row, stop bits) pairs of the live rows that may stop.

        One transfer per step brings the flagged rows to the host. "maybe_goal": the last token can end the marker
        through a merged token (e.g. "!\\n"); its text is checked on the host (:meth:`finish`)."""
        goal = stops.goal
        is_goal = torch.zeros_like(self.alive)
        if goal is not None and step >= len(goal):
            is_goal = (self.out_tokens[:, step - len(goal) : step] == goal).all(dim=1)
        flags = (
            (next_tokens == stops.backtrack_id).long() * _BACKTRACK
            | is_goal.long() * _GOAL
            | torch.isin(next_tokens, stops.eos).long() * _EOS
            | (step >= self.limit).long() * _LENGTH
            | (stops.goal_end[next_tokens] & ~is_goal).long() * _MAYBE_GOAL
        ) * self.alive.long() | (close & self.alive).long() * _CLOSE
        flagged = flags.nonzero().flatten()
        pairs = torch.stack([flagged, flags[flagged]], dim=1).tolist() if flagged.numel() else []
        exact = [row for row, bits in pairs if bits & _CLOSE]
        return exact, [(row, bits) for row, bits in pairs if bits & _STOPS]

    def finish(
        self,
        candidates: list[tuple[int, int]],
        step: int,
        expansions: list[Expansion],
        tokens: TaskTokens,
        cache,
        keep_prefix: Callable[[Sample], int | None] | None,
        reuse_cache: bool,
    ) -> list[tuple[int, Sample]]:
        """The rows among ``candidates`` ((row, stop bits) pairs) that stop now, packaged; their data comes to the
        host in one transfer. A row flagged only as a possible merged goal marker stops if its text ends with it.
        A row ``keep_prefix`` keeps a prefix of gets that prefix's KV cache copied out of ``cache`` (with
        ``reuse_cache``)."""
        index = torch.tensor([row for row, _ in candidates], device=self.out_tokens.device)
        per_row = torch.stack(
            [self.expansion_of[index], self.sample_of[index], self.valid[index], self.prompt_len[index]], dim=1
        ).tolist()
        values = torch.cat(
            [
                self.out_tokens[index, :step].double(),
                self.out_logprobs[index, :step].double(),
                self.out_no_backtrack[index, :step].double(),
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
            elif bits & _GOAL or (bits & _MAYBE_GOAL and tokens.ends_with_goal(new)):
                end = "goal"
            elif bits & _EOS:
                end = "eos"
            elif bits & _LENGTH:
                end = "length"
            else:
                continue  # a "!" that does not end the marker: the row goes on
            state = expansions[expansion_index].state
            sample = Sample.after(
                state, expansion_index, sample_index, new, row_values[step : 2 * step], row_values[2 * step :], end
            )
            keep = keep_prefix(sample) if keep_prefix is not None else None
            if keep is not None:
                sample.kv_keep = keep
                if reuse_cache:
                    # The row's real slots start after its left padding; keep prompt + `keep` tokens minus the last
                    # token (the next round feeds that token to get the logits that follow the prefix).
                    start = self.mask.shape[1] - valid
                    sample.kv = extract_slots(cache, row, start, prompt_len + keep - 1)
            finished.append((row, sample))
        return finished
