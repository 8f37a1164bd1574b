"""A per-channel factorised prior: a learned mixture of logistics for each code channel.

In training it gives the rate term ``-log2 p(y_hat)`` with ``p(y) = F(y + 1/2) - F(y - 1/2)``;
after training :meth:`FactorizedPrior.freeze` turns it into integer count tables, the only
probabilities the range coder ever sees, so encoder and decoder agree on any machine.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

LIKELIHOOD_FLOOR = 1e-9


class FactorizedPrior(nn.Module):
    """Independent distribution per code channel over the integers.

    Args:
        channels: number of code channels C.
        components: logistic components per channel (1 is a plain logistic).
        init_scale: initial spread of the components, in code units.
    """

    def __init__(self, channels: int, components: int = 3, init_scale: float = 1.0):
        super().__init__()
        self.channels = channels
        self.components = components
        spread = torch.linspace(-1.0, 1.0, components) if components > 1 else torch.zeros(1)
        self.logits = nn.Parameter(torch.zeros(channels, components))
        self.loc = nn.Parameter(spread.repeat(channels, 1).clone())
        self.log_scale = nn.Parameter(torch.full((channels, components), math.log(init_scale)))

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """Mixture CDF at ``y`` (float ``[B, C, T]``), per channel."""
        weights = torch.softmax(self.logits, dim=-1)[None, :, None, :]  # [1, C, 1, K]
        loc = self.loc[None, :, None, :]
        scale = torch.exp(self.log_scale)[None, :, None, :]
        return (weights * torch.sigmoid((y[..., None] - loc) / scale)).sum(-1)

    def likelihood(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Probability of each quantised (or noisy) value in ``y_hat`` (``[B, C, T]``)."""
        y32 = y_hat.float()  # probabilities stay float32 even under autocast
        upper = self.cdf(y32 + 0.5)
        lower = self.cdf(y32 - 0.5)
        return (upper - lower).clamp_min(LIKELIHOOD_FLOOR)

    def bits(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Total ideal code length of ``y_hat`` in bits (a scalar tensor)."""
        return -torch.log2(self.likelihood(y_hat)).sum()

    @torch.no_grad()
    def freeze(self, max_symbol: int, precision: int = 16) -> np.ndarray:
        """Integer count tables ``[C, 2 * max_symbol + 1]`` (int32), each row summing to 2**precision.

        The tails beyond ``+-max_symbol`` are folded into the edge symbols (the codec clips codes
        to that range), and every symbol gets at least one count so that any code stays codable.
        Computed in float64 on the CPU; the result is stored with the model and never recomputed
        at coding time.
        """
        total = 1 << precision
        num_symbols = 2 * max_symbol + 1
        if num_symbols * 4 > total:
            raise ValueError(f"precision {precision} is too low for {num_symbols} symbols")
        weights = torch.softmax(self.logits.double().cpu(), dim=-1)[:, None, :]
        loc = self.loc.double().cpu()[:, None, :]
        scale = torch.exp(self.log_scale.double().cpu())[:, None, :]
        edges = torch.arange(-max_symbol, max_symbol + 2, dtype=torch.float64) - 0.5
        cdf = (weights * torch.sigmoid((edges[None, :, None] - loc) / scale)).sum(-1)
        cdf[:, 0] = 0.0
        cdf[:, -1] = 1.0
        pmf = (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0.0).numpy()
        return counts_from_pmf(pmf, precision)


def counts_from_pmf(pmf: np.ndarray, precision: int) -> np.ndarray:
    """Quantise float probabilities ``[C, S]`` to positive integer counts summing to 2**precision.

    Each symbol gets one count plus its share of the rest rounded down; the counts left over go
    to the largest remainders (ties to the lower symbol), a deterministic rule.
    """
    total = 1 << precision
    num_channels, num_symbols = pmf.shape
    if not np.isfinite(pmf).all() or (pmf.sum(axis=1) <= 0).any():
        raise ValueError("the prior's probabilities are not finite: its parameters diverged")
    pmf = pmf / pmf.sum(axis=1, keepdims=True)
    share = pmf * (total - num_symbols)
    counts = np.floor(share).astype(np.int64) + 1
    remainder = share - np.floor(share)
    for c in range(num_channels):
        missing = total - int(counts[c].sum())
        order = np.lexsort((np.arange(num_symbols), -remainder[c]))
        counts[c, order[:missing]] += 1
    assert (counts.sum(axis=1) == total).all()
    return counts.astype(np.int32)
