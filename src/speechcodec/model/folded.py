"""The default family: fold the waveform into frames first, so convolutions run at frame rate."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from speechcodec.model.layers import (
    DepthToSpace,
    SpaceToDepth,
    conv1d,
    conv_radius,
    init_code_scale,
    res_stack,
    space_to_depth,
    stack_radius,
)

if TYPE_CHECKING:  # annotations only: the model layer's registry imports these lazily
    from speechcodec.model.config import ModelConfig

MAX_LOG_MAGNITUDE = math.log(100.0)  # iSTFT head: spectral magnitudes are capped at 100


class FoldedAutoencoder(nn.Module):
    """Waveform ``[B, 1, T]`` <-> latent ``[B, C, T / samples_per_frame]``.

    Encoder: fold ``fold`` samples into channels (space-to-depth, the paper's sub-pixel argument
    run backwards), residual blocks at the fold rate, fold ``downsample`` frames again, residual
    blocks at the code rate, a convolution to ``code_channels``. The decoder mirrors it and ends
    either in sub-pixel upsampling back to samples or in a Vocos-style head that predicts STFT
    frames (log-magnitude and phase) and inverts them.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        k, fw, w = cfg.kernel_size, cfg.fold_width, cfg.width
        fold, ds = cfg.fold, cfg.downsample
        spf = cfg.samples_per_frame

        enc_fold = res_stack(fw, k, cfg.res_blocks, "gelu", dilate=True)
        enc_code = res_stack(w, k, cfg.res_blocks, "gelu", dilate=True)
        self.encoder = nn.Sequential(
            conv1d(fold, fw, k), enc_fold,
            SpaceToDepth(ds), conv1d(fw * ds, w, k), enc_code,
            nn.GELU(), conv1d(w, cfg.code_channels, k),
        )
        # Radius of the encoder in samples: what a chunk must see beyond its edges to give
        # the same codes as the whole signal.
        enc_radius = (conv_radius(k) + stack_radius(enc_fold)) * fold + fold
        enc_radius += (conv_radius(k) + stack_radius(enc_code) + conv_radius(k)) * spf + spf

        dec_code = res_stack(w, k, cfg.res_blocks + (1 if cfg.decoder_head == "istft" else 0),
                             "gelu", dilate=True)
        self.decoder_trunk = nn.Sequential(conv1d(cfg.code_channels, w, k), dec_code, nn.GELU())
        dec_radius_frames = conv_radius(k) + stack_radius(dec_code)
        if cfg.decoder_head == "subpixel":
            dec_fold = res_stack(fw, k, cfg.res_blocks, "gelu", dilate=True)
            self.head = nn.Sequential(
                conv1d(w, fw * ds, k), DepthToSpace(ds), dec_fold,
                nn.GELU(), conv1d(fw, fold, k), DepthToSpace(fold),
            )
            dec_radius_frames += conv_radius(k) + 1 + (stack_radius(dec_fold) + conv_radius(k)) / ds
        else:
            self.n_fft = cfg.istft_window_frames * spf
            bins = self.n_fft // 2 + 1
            # Kernel 2 with padding 1 gives F + 1 spectra centred on the frame boundaries, which
            # istft(center=True) turns into exactly F * spf samples.
            self.head = nn.Conv1d(w, 2 * bins, 2, padding=1)
            with torch.no_grad():
                self.head.bias[:bins].fill_(-3.0)  # start quiet: log-magnitude bias
            self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
            dec_radius_frames += 1 + self.n_fft / 2 / spf
        init_code_scale(self.encoder[-1])
        self.encoder_context_frames = math.ceil(enc_radius / spf) + 1
        self.decoder_context_frames = math.ceil(dec_radius_frames) + 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, 1, T]`` with ``T`` a multiple of samples_per_frame -> ``y``: ``[B, C, F]``."""
        return self.encoder(space_to_depth(x, self.cfg.fold))

    def decode(self, y_hat: torch.Tensor) -> torch.Tensor:
        """``y_hat``: ``[B, C, F]`` -> ``x_hat``: ``[B, 1, F * samples_per_frame]``."""
        h = self.decoder_trunk(y_hat)
        if self.cfg.decoder_head == "subpixel":
            return self.head(h)
        return self._istft(self.head(h), y_hat.shape[-1])

    def _istft(self, spec: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Log-magnitude and phase spectra ``[B, 2 * bins, F + 1]`` -> ``[B, 1, F * spf]`` samples.

        The same as ``torch.istft(center=True)`` with this Hann window (tested to agree), written
        out as inverse FFTs and an overlap-add of ``istft_window_frames`` shifted parts: twice as fast
        on one CPU thread.
        """
        bins, n_fft, spf = self.n_fft // 2 + 1, self.n_fft, self.cfg.samples_per_frame
        spec = spec.to(torch.promote_types(spec.dtype, torch.float32))  # FFTs never in half precision
        # Clamp before exp: exp(x).clamp(max) overflows to inf for a large x, and the backward
        # pass then multiplies inf by clamp's zero gradient: NaN in every gradient from then on.
        mag = torch.exp(spec[:, :bins].clamp(max=MAX_LOG_MAGNITUDE))
        phase = spec[:, bins:]
        frames = torch.fft.irfft(torch.complex(mag * torch.cos(phase), mag * torch.sin(phase)),
                                 n=n_fft, dim=1)
        window = self.window.to(frames.dtype)
        frames = (frames * window[:, None]).transpose(1, 2)  # [B, F + 1, n_fft]
        batch, count = frames.shape[:2]
        overlap = n_fft // spf
        out = frames.new_zeros(batch, (count + overlap - 1) * spf)
        envelope = frames.new_zeros((count + overlap - 1) * spf)  # the summed squared windows
        for k in range(overlap):
            part = slice(k * spf, (k + 1) * spf)
            out[:, k * spf: (k + count) * spf] += frames[:, :, part].reshape(batch, -1)
            envelope[k * spf: (k + count) * spf] += window[part].square().repeat(count)
        keep = slice(n_fft // 2, n_fft // 2 + num_frames * spf)  # center=True: the first n_fft/2 are padding
        return (out[:, keep] / envelope[keep])[:, None, :]
