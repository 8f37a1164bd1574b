"""The perceptual family's network: a frame-causal enhancer of the textbook decoder's spectrum.

Its input, frame by frame: the dequantised coefficients over their band's RMS**alpha in
quantiser steps (noise fill included), which of them quantised to zero, the band levels and the
step. Its output: those coefficients corrected, in the same units, trained by MSE against the
encoder's own (the noise stays under the envelope by construction: the loss is in the
normalised domain). It sees no later frame, so it adds no delay to the MDCT's 40 ms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
