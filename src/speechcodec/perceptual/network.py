"""The perceptual family's network: a frame-causal enhancer of the textbook decoder's spectrum.

Its input, frame by frame: the dequantised coefficients over their band's RMS**alpha in
quantiser steps (noise fill included), which of them quantised to zero, the band levels and the
step. Its output: those coefficients corrected, in the same units, trained by MSE against the
encoder's own (the noise stays under the envelope by construction: the loss is in the
normalised domain). It sees no later frame, so it adds no delay to the MDCT's 40 ms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # annotations only: the model layer's registry imports these lazily
    from speechcodec.model.config import ModelConfig


COEFFICIENTS = 320
BANDS = 16


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.a = nn.Conv1d(width, width, 3)
        self.b = nn.Conv1d(width, width, 1)

    def forward(self, x):
        return x + self.b(F.gelu(self.a(F.pad(F.gelu(x), (2, 0)))))


class Enhancer(nn.Module):
    """``forward(units, zero, levels, step)`` -> corrected units, all ``[B, channels, T]``:
    ``units``/``zero`` ``[B, 320, T]``, ``levels`` ``[B, 16, T]`` (band levels in quarter-octaves
    over 16), ``step`` ``[B, 1, 1]`` or ``[B, 1, T]`` (the quantiser step in octaves)."""

    look_ahead = 0  # later frames the first layer sees (a premise's; shipped models see none)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        self.inp = nn.Conv1d(2 * COEFFICIENTS + BANDS + 1, width, 3)
        self.body = nn.Sequential(*(_Block(width) for _ in range(cfg.res_blocks)), nn.GELU(),
                                  nn.Conv1d(width, COEFFICIENTS, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    @property
    def context_frames(self) -> int:
        """Earlier frames an output frame depends on: a run that starts this many frames early
        gives what a run over the whole signal gives."""
        return 2 + 2 * self.cfg.res_blocks

    def forward(self, units, zero, levels, step):
        x = torch.cat([units, zero, levels, step.expand(-1, 1, levels.shape[-1])], 1)
        return units + self.body(self.inp(F.pad(x, (2 - self.look_ahead, self.look_ahead))))


class StreamingEnhancer:
    """An :class:`Enhancer` run one frame at a time: each 3-frame convolution keeps the last two
    frames of its input, so frame ``t``'s output is what :meth:`Enhancer.forward` gives over the
    whole signal (to float rounding: one frame's products are summed in another order than a
    whole signal's). Each convolution runs as one matrix-vector product."""

    def __init__(self, net: Enhancer):
        if net.look_ahead:
            raise ValueError("a network with look-ahead cannot run one frame at a time")

        def flat(conv: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
            return conv.weight.detach().reshape(conv.out_channels, -1).contiguous(), conv.bias.detach()

        self._inp_w = flat(net.inp)
        self._block_w = [(flat(b.a), flat(b.b)) for b in net.body[:-2]]
        self._out_w = flat(net.body[-1])
        self._inp = torch.zeros(net.inp.in_channels, 2)
        self._blocks = [torch.zeros(net.cfg.width, 2) for _ in self._block_w]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: one frame's input ``[657]`` (units, zero, levels, step, as ``forward`` joins
        them); returns its corrected units ``[320]``."""
        with torch.inference_mode():
            window = torch.cat([self._inp, x[:, None]], 1)
            self._inp = window[:, 1:]
            h = torch.addmv(self._inp_w[1], self._inp_w[0], window.reshape(-1))
            for i, ((wa, ba), (wb, bb)) in enumerate(self._block_w):
                window = torch.cat([self._blocks[i], F.gelu(h)[:, None]], 1)
                self._blocks[i] = window[:, 1:]
                h = h + torch.addmv(bb, wb, F.gelu(torch.addmv(ba, wa, window.reshape(-1))))
            return x[:COEFFICIENTS] + torch.addmv(self._out_w[1], self._out_w[0], F.gelu(h))
