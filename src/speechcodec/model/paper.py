"""The 2018 paper's autoencoder ("Audio Compression using Neural Networks", section 3)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from speechcodec.model.layers import DepthToSpace, conv1d, conv_radius, init_code_scale, res_stack, stack_radius

if TYPE_CHECKING:  # annotations only: the model layer's registry imports these lazily
    from speechcodec.model.config import ModelConfig


def _factors(n: int) -> list[int]:
    """Prime factors of ``n``, one sub-pixel upsampling stage each (2 * 2 * 5 for 20)."""
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


class PaperAutoencoder(nn.Module):
    """Encoder: conv 1 -> width/2, strided conv -> width, residual blocks, conv to the code,
    ReLU after every convolution but the code's. Decoder: conv from the code, residual blocks,
    sub-pixel stages (conv to ``width * r`` channels + depth-to-space by ``r``), final conv to
    one channel. Runs at the sample rate, hence slow: kept as the paper's reference row.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        k, w, ds = cfg.kernel_size, cfg.width, cfg.downsample
        enc_blocks = res_stack(w, k, cfg.res_blocks, "relu", dilate=False)
        self.encoder = nn.Sequential(
            conv1d(1, w // 2, k), nn.ReLU(),
            nn.Conv1d(w // 2, w, k, stride=ds, padding=(k - 1) // 2), nn.ReLU(),
            enc_blocks, nn.ReLU(),
            conv1d(w, cfg.code_channels, k),
        )
        enc_radius = 2 * conv_radius(k) + (stack_radius(enc_blocks) + conv_radius(k)) * ds + ds

        dec_blocks = res_stack(w, k, cfg.res_blocks, "relu", dilate=False)
        stages: list[nn.Module] = []
        dec_radius = conv_radius(k) + stack_radius(dec_blocks)  # in code frames
        step = 1  # code frames per step at the current stage
        for r in _factors(ds):
            stages += [conv1d(w, w * r, k), nn.ReLU(), DepthToSpace(r)]
            dec_radius += conv_radius(k) * step
            step /= r
        self.decoder = nn.Sequential(
            conv1d(cfg.code_channels, w, k), nn.ReLU(), dec_blocks, nn.ReLU(), *stages,
            conv1d(w, 1, k),
        )
        dec_radius += conv_radius(k) * step
        init_code_scale(self.encoder[-1])
        self.encoder_context_frames = math.ceil(enc_radius / ds) + 1
        self.decoder_context_frames = math.ceil(dec_radius) + 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, 1, T]`` -> ``y``: ``[B, C, T / downsample]``."""
        return self.encoder(x)

    def decode(self, y_hat: torch.Tensor) -> torch.Tensor:
        """``y_hat``: ``[B, C, F]`` -> ``x_hat``: ``[B, 1, F * downsample]``."""
        return self.decoder(y_hat)
