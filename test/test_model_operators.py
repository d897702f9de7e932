"""core.model.operators: int8 quantisation error and the low-rank factors."""

from __future__ import annotations

import torch

from adaspring_ros.core.model.operators import (
    fake_quant_int8,
    low_rank_factors,
    quantise_int8,
    rank_for,
)


def test_int8_error_is_bounded():
    torch.manual_seed(2)
    w = torch.randn(16, 8, 3, 3)
    q, scale = quantise_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (16,)
    err = (fake_quant_int8(w) - w).abs().flatten(1).amax(1)
    assert torch.all(err <= scale / 2 + 1e-7)
    assert torch.all(err <= w.abs().flatten(1).amax(1) / 254 + 1e-7)



def test_low_rank_is_best_approximation_and_exact_at_full_rank():
    torch.manual_seed(3)
    m = torch.randn(12, 27)
    first, second = low_rank_factors(m, 1.0)
    torch.testing.assert_close(second @ first, m, rtol=1e-4, atol=1e-4)
    first, second = low_rank_factors(m, 0.25)
    assert first.shape == (rank_for(0.25, 12, 27), 27) == (3, 27)
    s = torch.linalg.svdvals(m)
    err = torch.linalg.matrix_norm(second @ first - m)   # Frobenius: Eckart-Young bound
    torch.testing.assert_close(err, s[3:].norm(), rtol=1e-4, atol=1e-4)

