"""Distortion terms: normalised MSE (the paper), a multi-resolution STFT loss and a loudness loss
that sees what PESQ's auditory model sees (its future work: perceptual losses)."""

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


LOUDNESS_BANDS = 49  # as PESQ's wideband auditory model
LOUDNESS_EXPONENT = 0.23  # Zwicker's loudness compression, as in PESQ
LOUDNESS_FLOOR = 1e-6  # band power added before compression: a hearing threshold (finite gradients in silence)


def _bark(freq_hz: torch.Tensor) -> torch.Tensor:
    """Traunmueller's Bark scale."""
    return 26.81 * freq_hz / (1960.0 + freq_hz) - 0.53


def bark_bands(n_fft: int, sample_rate_hz: int, bands: int = LOUDNESS_BANDS) -> torch.Tensor:
    """``[bands, n_fft // 2 + 1]``: which STFT bins sum into each band, bands equally wide in Bark
    from 50 Hz to the Nyquist frequency."""
    freqs = torch.arange(n_fft // 2 + 1) * sample_rate_hz / n_fft
    low, high = _bark(torch.tensor(50.0)), _bark(torch.tensor(sample_rate_hz / 2 - 1.0))
    edges = torch.linspace(float(low), float(high), bands + 1)
    band = torch.bucketize(_bark(freqs.clamp_min(1.0)), edges) - 1
    return torch.stack([(band == b).float() for b in range(bands)])


def loudness_loss(x_hat: torch.Tensor, x: torch.Tensor, sample_rate_hz: int = 16000,
                  n_fft: int = 512) -> torch.Tensor:
    """Mean difference of compressed Bark-band loudness (32 ms frames, hop 8 ms), added loudness
    counting double (PESQ's asymmetry: noise in a harmonic valley is heard more than a missing
    component), relative to the reference's mean loudness.

    Narrow low bands are where filled valleys between harmonics show: a loss on them pushes the
    decoder's error under the harmonics rather than between them."""
    x_hat, x = x_hat.float().flatten(0, 1), x.float().flatten(0, 1)
    window = torch.hann_window(n_fft, device=x.device)
    bands = bark_bands(n_fft, sample_rate_hz).to(x.device)

    def loudness(signal: torch.Tensor) -> torch.Tensor:
        power = torch.stft(signal, n_fft, n_fft // 4, window=window, return_complex=True).abs().pow(2)
        return (bands @ power + LOUDNESS_FLOOR).pow(LOUDNESS_EXPONENT)

    ref, out = loudness(x), loudness(x_hat)
    diff = out - ref
    return torch.where(diff > 0, 2.0 * diff, -diff).mean() / ref.mean().clamp_min(1e-8)
