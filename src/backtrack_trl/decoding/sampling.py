"""Token sampling whose randomness depends only on (seed, row identity, step), never on batch composition.

Each row draws its token by inverse-CDF sampling with a uniform number computed by an integer hash of its key
(problem seed, round, state index, sample index) and the step. So a problem gets the same samples whether it is
decoded alone, in a batch of 64, or on another process of an ``accelerate launch`` (up to float rounding of the
probabilities), which makes sharded evaluation reproduce single-process results.

Usage:

```python
import torch

from backtrack_trl.decoding.sampling import row_uniforms, sample_tokens

keys = torch.tensor([[42, 0, 0, 0], [42, 0, 0, 1]])  # two samples of problem seed 42
tokens = sample_tokens(torch.randn(2, 10), row_uniforms(keys, step=0), temperature=0.7, top_p=0.95)
```
"""

from __future__ import annotations

import torch


_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds); int64 arithmetic never overflows (products < 2**59)."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def row_keys_hash(keys: torch.Tensor) -> torch.Tensor:
    """Hash each row's integer key (any number of int64 columns) into one 32-bit value (int64 tensor)."""
    keys = keys.to(torch.int64)
    h = torch.full(keys.shape[:1], 0x9E3779B9, dtype=torch.int64, device=keys.device)
    for column in range(keys.shape[1]):
        value = keys[:, column]
        h = _mix32(h ^ (value & _MASK32))
        h = _mix32(h ^ ((value >> 32) & _MASK32))
    return h


def step_uniforms(row_hash: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform number in (0, 1) per row (float64) from the row's key hash and ``step``."""
    h = _mix32(row_hash ^ int(step))
    return (h.to(torch.float64) + 0.5) / 4294967296.0


def row_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform number in (0, 1) per row (float64), a deterministic function of the row's key and ``step``."""
    return step_uniforms(row_keys_hash(keys), step)


def warp_scores(scores: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering, like ``generate``'s warpers (out of place)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # Drop the low-probability tail whose total mass is <= 1 - top_p; always keep the most likely token.
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[:, -1] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores


def sample_from_scores(scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling from ``softmax(scores)`` with one uniform per row (float64 CDF for precision)."""
    probs = torch.softmax(scores.to(torch.float64), dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    # right=True returns the first index whose CDF exceeds the target: a token with zero mass is never chosen.
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp_(max=scores.shape[-1] - 1)


def sample_tokens(
    logits: torch.Tensor,
    uniforms: torch.Tensor | None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> torch.Tensor:
    """Greedy (``temperature == 0``) or sampled next tokens for a batch of rows."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    return sample_from_scores(warp_scores(logits, temperature, top_p, top_k), uniforms)
