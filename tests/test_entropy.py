"""The learned prior: a proper distribution, frozen to integer tables that any process rebuilds alike."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from speechcodec.entropy import FactorizedPrior, quantize
from speechcodec.entropy.factorized import counts_from_pmf

FREEZE_SCRIPT = """
import hashlib, torch
from speechcodec.entropy import FactorizedPrior
torch.manual_seed(7)
prior = FactorizedPrior(6, 3)
with torch.no_grad():
    for p in prior.parameters():
        p.add_(torch.randn_like(p) * 0.3)
print(hashlib.sha256(prior.freeze(20).tobytes()).hexdigest())
"""


def test_likelihoods_sum_to_one_over_the_integers():
    torch.manual_seed(0)
    prior = FactorizedPrior(3, 3)
    k = torch.arange(-200, 201, dtype=torch.float32)
    y = k[None, None, :].expand(1, 3, -1)
    total = prior.likelihood(y).sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4)


def test_bits_fall_when_the_prior_fits_the_codes():
    torch.manual_seed(0)
    prior = FactorizedPrior(2, 2, init_scale=8.0)
    y = torch.round(torch.randn(8, 2, 200) * 0.7)
    before = prior.bits(y).item()
    opt = torch.optim.Adam(prior.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        prior.bits(y).backward()
        opt.step()
    assert prior.bits(y).item() < 0.6 * before


def test_frozen_tables_are_integers_summing_to_the_precision():
    torch.manual_seed(0)
    pmf = FactorizedPrior(5, 3).freeze(max_symbol=10, precision=16)
    assert pmf.dtype == np.int32 and pmf.shape == (5, 21)
    assert (pmf >= 1).all() and (pmf.sum(axis=1) == 1 << 16).all()


def test_counts_rule_is_deterministic_and_keeps_every_symbol():
    pmf = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    counts = counts_from_pmf(pmf, 8)
    assert counts.tolist()[0] == [1, 254, 1]
    assert (counts.sum(axis=1) == 256).all()


def test_tables_are_identical_when_rebuilt_in_a_fresh_process():
    runs = {subprocess.run([sys.executable, "-c", FREEZE_SCRIPT], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}
    torch.manual_seed(7)
    prior = FactorizedPrior(6, 3)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    here = hashlib.sha256(prior.freeze(20).tobytes()).hexdigest()
    assert runs == {here}


def test_straight_through_rounding_passes_gradients():
    y = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    y_hat = quantize(y, "round")
    assert y_hat.tolist() == [0.0, 2.0, -2.0]
    y_hat.sum().backward()
    assert y.grad.tolist() == [1.0, 1.0, 1.0]
    noisy = quantize(torch.zeros(10000), "noise")
    assert noisy.abs().max() <= 0.5 and abs(float(noisy.mean())) < 0.02


def test_diverged_prior_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="diverged"):
        counts_from_pmf(np.array([[0.5, np.nan, 0.5]]), 8)


def test_the_prior_and_the_range_coder_pick_the_same_contexts():
    from speechcodec.bitstream.context import frame_contexts
    from speechcodec.entropy.factorized import contexts_of

    rng = np.random.default_rng(0)
    codes = np.round(rng.laplace(0, 1.5, (3, 16, 80))) * (rng.random((3, 1, 80)) < 0.6)
    ours = contexts_of(torch.from_numpy(codes).float() + 0.2)  # rounded inside
    for b in range(3):
        assert np.array_equal(ours[b].numpy(), frame_contexts(codes[b].astype(int)))


def test_a_prior_with_contexts_is_a_distribution_per_context():
    from speechcodec.bitstream.context import NUM_CONTEXTS

    torch.manual_seed(0)
    prior = FactorizedPrior(2, 3, contexts=NUM_CONTEXTS)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn_like(p))
    k = torch.arange(-60, 61, dtype=torch.float32)
    for context in (0, 7, NUM_CONTEXTS - 1):
        rows = (torch.arange(2)[None, :, None] * NUM_CONTEXTS + context).expand(1, 2, len(k))
        total = prior.likelihood(k.expand(1, 2, -1), rows).sum(-1)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-4)
    assert prior.freeze(10).shape == (2 * NUM_CONTEXTS, 21)
    codes = torch.zeros(1, 2, 5)
    assert prior.bits(codes, prior.table_rows(codes)) > 0
    with pytest.raises(ValueError, match="table rows"):
        prior.likelihood(codes)
