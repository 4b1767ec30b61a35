"""log(1 - p) from a log-probability: the closed form away from p = 1, the exact log-sum-exp where p rounds to 1."""

import math

import pytest
import torch

from backtrack_trl.decoding.log1mexp import log1mexp, log1mexp_exact, log1mexp_fast


def test_closed_form_matches_log_one_minus_p_on_both_branches():
    p = torch.tensor([1e-9, 0.1, 0.5, 0.9, 0.999])  # both sides of log(1/2): log(-expm1) and log1p(-exp)
    values, inexact = log1mexp_fast(torch.log(p.double()))
    assert values.dtype == torch.float32
    assert torch.allclose(values.double(), torch.log1p(-p.double()), rtol=1e-6, atol=0)
    assert not inexact.any()


def test_rows_where_p_rounds_to_one_are_flagged_and_recomputed_from_the_logits():
    logits = torch.tensor([[30.0, 0.0, 0.0], [0.0, 1.0, 2.0]])  # row 0: p(token 0) = 1 - 2e-13
    logp = torch.log_softmax(logits, dim=-1)[:, 0]
    fast, inexact = log1mexp_fast(logp)
    assert inexact.tolist() == [True, False]
    expected = math.log(2.0) - 30.0  # log(2 e^0 / (e^30 + 2)), to 1e-13
    assert log1mexp_exact(logits[:1], 0).item() == pytest.approx(expected, rel=1e-5)
    exact = log1mexp(logp, logits, 0)
    assert exact[0].item() == pytest.approx(expected, rel=1e-5) and exact[1] == fast[1]
    assert abs(fast[0].item() - expected) > 1.0  # what the closed form alone gets wrong
