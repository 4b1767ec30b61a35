"""What the sampling engines take and give back: the search's states, the expansions it asks for, the finished
samples; plus the plumbing the engines that run a transformers model share (settings, device, left padding).

Three engines implement ``run(prompts, expansions, n, keep_prefix) -> EngineOutput``:
:class:`~backtrack_trl.decoding.engine.SamplingEngine` (the batched cached loop),
:class:`~backtrack_trl.decoding.beam.BeamEngine` (``model.generate`` beam search) and
:class:`~backtrack_trl.decoding.vllm_backend.VLLMEngine` (vLLM samples).

Usage:

```python
from backtrack_trl.decoding.engine_io import Expansion, State

out = engine.run(prompt_ids, [Expansion(problem=0, state=State(), seed=1234)], n=8)  # any of the three engines
print([(sample.end, sample.new_tokens) for sample in out.samples])
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from backtrack_trl.decoding.cache_ops import KVSlice
from backtrack_trl.decoding.tokens import TaskTokens


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

    @classmethod
    def after(
        cls, state: State, expansion: int, sample: int, new: Sequence[int], logprobs, no_backtrack, end: str
    ) -> Sample:
        """Sample ``sample`` of expansion ``expansion``: ``state`` continued by the ``new`` tokens, their log-probs
        and ``log(1 - p(<backtrack>))`` values (the state's own come first)."""
        return cls(
            expansion=expansion,
            sample=sample,
            tokens=state.tokens + tuple(new),
            logprobs=state.logprobs + tuple(logprobs),
            no_backtrack=state.no_backtrack + tuple(no_backtrack),
            end=end,
            new_tokens=len(new),
        )


@dataclass
class EngineOutput:
    samples: list[Sample]
    forward_passes: dict[int, int]
    tokens_generated: dict[int, int]


class ModelEngine:
    """The settings and helpers of the engines that run a transformers model (:class:`SamplingEngine`,
    :class:`BeamEngine`); see theirs for the arguments."""

    def __init__(
        self,
        model,
        tokens: TaskTokens,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        max_backtracks: int | None,
        tabu_tokens: int,
    ):
        self.model = model
        self.tokens = tokens
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.max_backtracks = max_backtracks
        self.tabu_tokens = tabu_tokens

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def room(self, expansion: Expansion) -> int:
        """New tokens ``expansion`` may still write (its state's tokens count towards ``max_new_tokens``)."""
        return self.max_new_tokens - len(expansion.state.tokens)

    def left_padded(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``rows`` of token ids as one left-padded (ids, attention mask) pair on the model's device."""
        device = self.device
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.tokens.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for index, row in enumerate(rows):
            if row:
                ids[index, width - len(row) :] = torch.tensor(row, device=device)
                mask[index, width - len(row) :] = 1
        return ids, mask
