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
# Vocabularies up to this size sample from a float64 CDF over the whole vocabulary and sort for top-p (the task
# tokenizers: their seeded outputs are unchanged). Larger ones (Llama-3: 128k) use a blocked float32 CDF
# (:func:`_sample_blocked`) and ``topk`` for top-p (:func:`_top_p_large`): a float64 softmax + cumsum, or a sort, over
# 128k ids per row and step is the costliest part of a sampling step on a small model.
EXACT_VOCAB = 8192
_BLOCK = 256


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
    if top_p < 1.0 and scores.shape[-1] > EXACT_VOCAB:
        scores = _top_p_large(scores, top_p)
    elif top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # Drop the low-probability tail whose total mass is <= 1 - top_p; always keep the most likely token.
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[:, -1] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores


def _top_p_large(scores: torch.Tensor, top_p: float, candidates: int = 1024) -> torch.Tensor:
    """Nucleus filtering for large vocabularies through ``topk`` instead of a full sort (128k ids per row and step).

    The same rule as the sort: keep a token when the mass of the tokens above it is below ``top_p`` (the first one
    always). Rows whose nucleus is not inside their ``candidates`` most likely tokens fall back to the full sort."""
    probs = torch.softmax(scores.float(), dim=-1)
    top, index = probs.topk(min(candidates, scores.shape[-1]), dim=-1)
    keep = (top.cumsum(dim=-1) - top) < top_p
    keep[:, 0] = True
    out = torch.full_like(scores, -float("inf"))
    out.scatter_(1, index, torch.where(keep, scores.gather(1, index), out.gather(1, index)))
    wide = top.sum(dim=-1) < top_p  # the nucleus reaches past the candidates (a flat distribution)
    if wide.any():
        rows = wide.nonzero().flatten()
        sorted_scores, order = torch.sort(scores[rows], descending=False, dim=-1)
        remove_sorted = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        remove_sorted[:, -1] = False
        out[rows] = scores[rows].masked_fill(remove_sorted.scatter(1, order, remove_sorted), -float("inf"))
    return out


def sample_from_scores(scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling from ``softmax(scores)`` with one uniform per row; a token with zero mass (``-inf``
    score) is never chosen."""
    if scores.shape[-1] > EXACT_VOCAB:
        return _sample_blocked(scores, uniforms)
    probs = torch.softmax(scores.to(torch.float64), dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    # right=True returns the first index whose CDF exceeds the target: a token with zero mass is never chosen.
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return index.clamp_(max=scores.shape[-1] - 1)


def _last_positive(mass: torch.Tensor) -> torch.Tensor:
    """Index of the last entry with positive mass in each row (0 when none)."""
    positions = torch.arange(mass.shape[-1], device=mass.device).expand_as(mass)
    return torch.where(mass > 0, positions, torch.zeros_like(positions)).amax(dim=-1)


def _sample_blocked(scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Two-level inverse-CDF sampling: float32 probabilities in blocks of 256 ids, a float64 CDF over the block sums
    (a few hundred values) to find the block, then a float32 CDF inside that block only.

    A float32 cumsum over the whole vocabulary would lose the tail: once the running sum is ~0.5, a token of mass
    below ~3e-8 adds nothing. Inside one block the running sum is at most the block's mass, so the tail survives."""
    rows, vocab = scores.shape
    width = -(-vocab // _BLOCK) * _BLOCK
    probs = torch.softmax(scores.float(), dim=-1)
    if width != vocab:
        probs = torch.nn.functional.pad(probs, (0, width - vocab))
    blocks = probs.view(rows, width // _BLOCK, _BLOCK)
    block_mass = blocks.sum(dim=-1)
    block_cdf = block_mass.to(torch.float64).cumsum(dim=-1)
    target = uniforms.to(device=scores.device, dtype=torch.float64) * block_cdf[:, -1]
    block = torch.searchsorted(block_cdf, target[:, None], right=True).squeeze(-1)
    block = torch.minimum(block, _last_positive(block_mass))  # rounding at the very top: the last non-empty block
    start = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)[:, None]).squeeze(1), 0.0)
    inside = blocks[torch.arange(rows, device=scores.device), block]
    residual = (target - start).to(torch.float32)
    index = torch.searchsorted(inside.cumsum(dim=-1), residual[:, None], right=True).squeeze(-1)
    index = torch.minimum(index, _last_positive(inside))  # never a zero-mass id (padding, -inf, past the vocab)
    return block * _BLOCK + index


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
