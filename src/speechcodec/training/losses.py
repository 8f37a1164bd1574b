"""Distortion terms: normalised MSE (the paper) and a multi-resolution STFT loss (its future work)."""

from __future__ import annotations

import torch


def normalized_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE divided by the signal power, so the weight does not depend on loudness."""
    return ((x_hat - x) ** 2).mean() / (x**2).mean().clamp_min(1e-8)


def _magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device)
    return torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs().clamp_min(1e-5)


def stft_loss(x_hat: torch.Tensor, x: torch.Tensor,
              resolutions: tuple[int, ...] = (128, 256, 512, 1024, 2048)) -> torch.Tensor:
    """Mean over FFT sizes of log-magnitude L1 plus spectral convergence (hop = n_fft / 4)."""
    x_hat, x = x_hat.float().flatten(0, 1), x.float().flatten(0, 1)  # [B, T]
    total = x.new_zeros(())
    for n_fft in resolutions:
        if n_fft > x.shape[-1]:
            continue
        mag_hat, mag = _magnitude(x_hat, n_fft), _magnitude(x, n_fft)
        log_l1 = (mag_hat.log() - mag.log()).abs().mean()
        convergence = torch.linalg.norm(mag - mag_hat) / torch.linalg.norm(mag).clamp_min(1e-5)
        total = total + log_l1 + convergence
    return total / len(resolutions)
