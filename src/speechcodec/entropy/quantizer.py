"""Rounding with a straight-through gradient (the paper), or additive uniform noise in training."""

from __future__ import annotations

import torch


def round_ste(y: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer; the backward pass treats rounding as the identity."""
    # y + (round(y) - y).detach(): the value is round(y), the gradient is that of y.
    return y + (torch.round(y) - y).detach()


def quantize(y: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """Quantise latents ``y`` (float ``[B, C, T]``).

    ``round``: rounding with a straight-through gradient, what the codec does at inference.
    ``noise``: ``y + U(-0.5, 0.5)``, the differentiable proxy of rounding for training.
    """
    if mode == "round":
        return round_ste(y)
    if mode == "noise":
        return y + torch.empty_like(y).uniform_(-0.5, 0.5)
    raise ValueError(f"unknown quantisation mode {mode!r} (use 'round' or 'noise')")
