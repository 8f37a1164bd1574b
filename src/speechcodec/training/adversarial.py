"""Adversarial and feature-matching losses (the paper's future work), for training only.

A multi-resolution STFT discriminator, after EnCodec's MS-STFTD: for each FFT size it judges the
complex spectrogram (real and imaginary parts). EnCodec runs 2-D convolutions over (time,
frequency); here the frequency bins are the channels of 1-D convolutions over time (dilated 1,
2, 4), which a CPU can afford (the 2-D design was many times slower there: docs/history.md has
the timings). The codec is pushed by a hinge loss on the logits and by matching the
discriminator's intermediate features on real speech (an L1 relative to the real features' mean
magnitude), which keeps adversarial training close to the input.

Nothing here is shipped: a model file holds the codec alone, the discriminator lives in the
training checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

DEFAULT_FFT_SIZES = (256, 512, 1024)


class STFTDiscriminator(nn.Module):
    """One resolution: waveform ``[B, 1, T]`` -> (logits ``[B, 1, frames]``, feature maps)."""

    def __init__(self, n_fft: int, channels: int = 64, layers: int = 3, slope: float = 0.2):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        bins = n_fft // 2 + 1
        convs = [weight_norm(nn.Conv1d(2 * bins, channels, 5, padding=2))]
        for i in range(layers):  # dilation 1, 2, 4, ...: a wider view of time at each layer
            convs.append(weight_norm(nn.Conv1d(channels, channels, 5, dilation=2**i, padding=2 * 2**i)))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv1d(channels, 1, 3, padding=1))
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # The STFT in float32 whatever autocast says (FFTs of half-precision input are unsupported
        # or inexact); normalized so that the input scale does not depend on the FFT size.
        with torch.autocast(x.device.type, enabled=False):
            spec = torch.stft(x.float().flatten(0, 1), self.n_fft, self.hop, window=self.window,
                              normalized=True, return_complex=True)  # [B, bins, frames]
        h = torch.cat([spec.real, spec.imag], dim=1)  # [B, 2 * bins, frames]
        features = []
        for conv in self.convs:
            h = self.act(conv(h))
            features.append(h)
        return self.out(h), features


class MultiResolutionDiscriminator(nn.Module):
    """Several :class:`STFTDiscriminator` at different FFT sizes."""

    def __init__(self, fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES, channels: int = 64):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in fft_sizes)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(x) for d in self.discriminators]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss of the discriminator: real logits pushed above 1, fake ones below -1."""
    total = sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean()
                for (r, _), (f, _) in zip(real, fake, strict=True))
    return total / len(real)


def generator_loss(fake: list) -> torch.Tensor:
    """Hinge loss of the generator: its logits pushed above 1."""
    return sum(torch.relu(1 - f).mean() for f, _ in fake) / len(fake)


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """Mean over every feature map of L1(fake - real) / mean |real| (the real maps are targets)."""
    terms = [(f - r.detach()).abs().mean() / r.detach().abs().mean().clamp_min(1e-8)
             for (_, real_maps), (_, fake_maps) in zip(real, fake, strict=True)
             for r, f in zip(real_maps, fake_maps, strict=True)]
    return sum(terms) / len(terms)
