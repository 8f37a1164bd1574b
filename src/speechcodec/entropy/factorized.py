"""The prior over the codes: a learned mixture of logistics per code channel (and context).

In training it gives the rate term ``-log2 p(y_hat)`` with ``p(y) = F(y + 1/2) - F(y - 1/2)``;
after training :meth:`FactorizedPrior.freeze` turns it into integer count tables, the only
probabilities the range coder ever sees, so encoder and decoder agree on any machine.

With ``contexts = NUM_CONTEXTS`` each channel has one distribution per context, the context of
a symbol coming from the previous code frame by the rule of :mod:`speechcodec.bitstream.context`
(:func:`contexts_of` is that rule for tensors).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from speechcodec.contexts import ACTIVITY_SIXTEENTHS, MAGNITUDE_LEVELS, NUM_CONTEXTS

LIKELIHOOD_FLOOR = 1e-9


def contexts_of(codes: torch.Tensor) -> torch.Tensor:
    """Context index (int64 ``[B, C, T]``) of every symbol of the rounded codes ``[B, C, T]``,
    from the frame before it (a frame of zeros before the first): the range coder's rule."""
    codes = codes.detach().round()
    previous = torch.nn.functional.pad(codes, (1, -1))
    magnitude = previous.abs().clamp_max(MAGNITUDE_LEVELS - 1).long()
    nonzero16 = 16 * (previous != 0).sum(dim=1, keepdim=True)
    activity = sum((nonzero16 >= t * codes.shape[1]).long() for t in ACTIVITY_SIXTEENTHS)
    return magnitude * (len(ACTIVITY_SIXTEENTHS) + 1) + activity


class FactorizedPrior(nn.Module):
    """A distribution per code channel over the integers, optionally one per context too.

    Parameters are ``[C * contexts, components]`` (row ``c * contexts + k``), so a model with one
    context has exactly the parameters of the plain factorised prior.

    Args:
        channels: number of code channels C.
        components: logistic components per channel (1 is a plain logistic).
        init_scale: initial spread of the components, in code units.
        contexts: 1 (factorised) or ``NUM_CONTEXTS`` (conditioned on the previous frame).
    """

    def __init__(self, channels: int, components: int = 3, init_scale: float = 1.0, contexts: int = 1):
        super().__init__()
        if contexts not in (1, NUM_CONTEXTS):
            raise ValueError(f"contexts must be 1 or {NUM_CONTEXTS}, got {contexts}")
        self.channels = channels
        self.components = components
        self.contexts = contexts
        rows = channels * contexts
        spread = torch.linspace(-1.0, 1.0, components) if components > 1 else torch.zeros(1)
        self.logits = nn.Parameter(torch.zeros(rows, components))
        self.loc = nn.Parameter(spread.repeat(rows, 1).clone())
        self.log_scale = nn.Parameter(torch.full((rows, components), math.log(init_scale)))

    def cdf(self, y: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mixture CDF at ``y`` (float ``[B, C, T]``) under table ``rows`` (``[B, C, T]``;
        default: row ``c`` for channel ``c``, the one-context layout)."""
        weights = torch.softmax(self.logits, dim=-1)
        scale = torch.exp(self.log_scale)
        if rows is None:
            weights, loc, scale = (p[None, :, None, :] for p in (weights, self.loc, scale))
        else:
            weights, loc, scale = (p[rows] for p in (weights, self.loc, scale))  # [B, C, T, K]
        return (weights * torch.sigmoid((y[..., None] - loc) / scale)).sum(-1)

    def table_rows(self, y_hat: torch.Tensor) -> torch.Tensor | None:
        """Row of the parameters that models each symbol of ``y_hat`` ``[B, C, T]`` (None: row c)."""
        if self.contexts == 1:
            return None
        base = torch.arange(self.channels, device=y_hat.device)[None, :, None] * self.contexts
        return base + contexts_of(y_hat)

    def likelihood(self, y_hat: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Probability of each quantised (or noisy) value in ``y_hat`` (``[B, C, T]``); ``rows``
        from :meth:`table_rows` of the rounded codes (needed when there are contexts)."""
        if rows is None and self.contexts > 1:
            raise ValueError("a prior with contexts needs the table rows of the rounded codes")
        y32 = y_hat.float()  # probabilities stay float32 even under autocast
        upper = self.cdf(y32 + 0.5, rows)
        lower = self.cdf(y32 - 0.5, rows)
        return (upper - lower).clamp_min(LIKELIHOOD_FLOOR)

    def bits(self, y_hat: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Total ideal code length of ``y_hat`` in bits (a scalar tensor)."""
        return -torch.log2(self.likelihood(y_hat, rows)).sum()

    @torch.no_grad()
    def freeze(self, max_symbol: int, precision: int = 16) -> np.ndarray:
        """Integer count tables ``[C * contexts, 2 * max_symbol + 1]`` (int32), each row summing
        to 2**precision.

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
