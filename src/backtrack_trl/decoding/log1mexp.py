"""``log(1 - p)`` from a log-probability, as the engines compute the search's ``<backtrack>`` values.

Usage:

```python
import torch

from backtrack_trl.decoding.log1mexp import log1mexp, log1mexp_fast

logits = torch.randn(4, 10)
logp = torch.log_softmax(logits, dim=-1)[:, 3]
values = log1mexp(logp, logits, token=3)  # log(1 - p(token 3)) per row
values, inexact = log1mexp_fast(logp)  # no host sync: the rows where p rounds to 1 are flagged, not fixed
```
"""

from __future__ import annotations

import torch


def log1mexp(logp_token: torch.Tensor, logits: torch.Tensor, token: int) -> torch.Tensor:
    """``log(1 - p(token))`` per row from its log-probability, stable for p near 0 and near 1.

    Rows where ``p(token)`` rounds to 1 are recomputed exactly as a log-sum-exp over the other tokens. (The engine
    uses the two halves apart, so that finding those rows costs no extra host sync.)"""
    out, close = log1mexp_fast(logp_token)
    if close.any():
        out[close] = log1mexp_exact(logits[close], token)
    return out


def log1mexp_fast(logp_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`log1mexp` without the exact recomputation (no host sync, no logits needed): the values and the rows
    where it is inexact (p rounds to 1)."""
    x = logp_token.double().clamp(max=0.0)
    out = torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
    return out.float(), x > -1e-5


def log1mexp_exact(logits: torch.Tensor, token: int) -> torch.Tensor:
    """``log(1 - p(token))`` per row as a log-sum-exp over the other tokens (rows where p rounds to 1)."""
    rows = logits.double()
    others = rows.clone()
    others[:, token] = -float("inf")
    return (torch.logsumexp(others, -1) - torch.logsumexp(rows, -1)).float()
