"""The transform coder's quantiser (numpy, no torch): each MDCT coefficient divided by its band's
RMS**alpha and one step, the Laplace grid index that codes it, and the decoder's dequantisation
with noise fill of bands that quantised to all zeros.

Every family that codes MDCT frames builds on these: the textbook coder
(:mod:`speechcodec.baselines.transform`) and the perceptual family's packets
(:mod:`speechcodec.perceptual.packets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechcodec.errors import SpeechCodecError
from speechcodec.transform import bands
from speechcodec.transform.laplace import ESCAPE_BITS, J_MAX, J_MIN, TABLES

STEP_RANGE = (-1024, 1024)  # quantiser step 2**(step / 64): 2**-16 .. 2**16
MAX_SYMBOL = 60000
COEFFICIENT_OFFSET = -4  # eighth-octaves: a coefficient's Laplace scale is its RMS / sqrt(2)
# A full-scale sine's MDCT coefficient is about 160 (320 samples at 1, windowed): a decoded
# coefficient beyond this bound was not coded from sound, and is held to it (finite output always)
MAX_COEFFICIENT = 4096.0


@dataclass(frozen=True)
class TransformSettings:
    """What a stream is coded with; all of it travels in the header.

    The defaults were chosen on held-out speakers of the training speech (README, "The textbook
    baseline"); ``scripts/tune_transform.py`` measures the alternatives.
    """

    layout: str = "bark16"
    energy_step: int = 4  # quarter-octaves: 4 = 6 dB
    energy_frames: int = 1  # MDCT frames per energy frame: 1 = 20 ms
    alpha16: int = 8  # coefficients divided by RMS**(alpha16 / 16)
    noise_fill16: int = 8  # an all-zero band is filled with noise at this many sixteenths of its RMS

    def __post_init__(self):
        if self.layout not in bands.LAYOUTS:
            raise SpeechCodecError(f"unknown band layout {self.layout!r}; choose one of "
                                   f"{', '.join(bands.LAYOUTS)}")
        for name, low, high in (("energy_step", 1, 8), ("energy_frames", 1, 4), ("alpha16", 0, 16),
                                ("noise_fill16", 0, 16)):
            if not low <= getattr(self, name) <= high:
                raise SpeechCodecError(f"{name} must lie within {low}..{high}")


def expand_levels(settings: TransformSettings, levels: np.ndarray, frames: int) -> np.ndarray:
    """int ``[T, HOP]``: each coefficient's band level (in quarter-octaves), per MDCT frame."""
    per_frame = np.repeat(levels, settings.energy_frames, axis=0)[:frames] * settings.energy_step
    return per_frame[:, bands.band_of_bin(bands.LAYOUTS[settings.layout])]


def index_base(settings: TransformSettings, level_qo: np.ndarray) -> np.ndarray:
    """log2 of each coefficient's band RMS**(1 - alpha) in 64ths of an octave, in integers:
    (1 - alpha) x level / 4 octaves, the level in quarter-octaves."""
    return (16 - settings.alpha16) * level_qo


def scale_index(index_base: np.ndarray, step: int, offset: int) -> np.ndarray:
    """Grid index of each coefficient's Laplace, in integers: its band's RMS**(1 - alpha) over
    the quantiser step, in eighth-octaves, plus ``offset``."""
    return np.clip(((index_base - step + 4) >> 3) + offset, J_MIN, J_MAX)


def rd_symbols(units: np.ndarray, index: np.ndarray, bit_weight: float) -> np.ndarray:
    """Rate-distortion rounding: of each unit rounded (``units`` in quantiser steps) and the symbol
    next to it towards zero, the one of least squared error plus ``bit_weight`` times its ideal
    bits under its Laplace grid ``index`` (same shape); in one table look-up a symbol
    (:meth:`~speechcodec.transform.laplace.LaplaceTables.rd_thresholds`). 0 rounds. Only an
    encoder's choice: the decoder reads symbols as it always has."""
    rounded = np.clip(np.rint(units), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    if not bit_weight:
        return rounded
    return rounded - np.sign(rounded) * _nearer(units, np.abs(rounded), index, bit_weight)


def _nearer(units: np.ndarray, magnitude: np.ndarray, index: np.ndarray, bit_weight: float) -> np.ndarray:
    """bool: where :func:`rd_symbols` takes magnitude ``m - 1`` over the rounded ``m``."""
    core = TABLES.core[index - J_MIN]  # (builds the tables first)
    return _steps_down(np.abs(units), magnitude, core, TABLES.offset[index - J_MIN] + core, bit_weight)


def _steps_down(size: np.ndarray, magnitude: np.ndarray, core: np.ndarray, zero: np.ndarray,
                bit_weight: float) -> np.ndarray:
    """The rate-distortion choice, one table look-up a symbol: bool, where a unit of magnitude
    ``size`` rounded to ``magnitude`` is coded as ``magnitude - 1`` (``core``: its table's C,
    ``zero``: symbol 0's place in the flat tables;
    :meth:`~speechcodec.transform.laplace.LaplaceTables.rd_thresholds`)."""
    top = np.minimum(magnitude, core + 1)  # symbol +m's place, the escape's beyond the core
    return (size - magnitude < TABLES.rd_thresholds(bit_weight)[zero + top]) & (magnitude <= core + 1)


def rd_bits_steps(magnitude: np.ndarray, gains: np.ndarray, band_index: np.ndarray, edges,
                  bit_weight: float, bins: int) -> np.ndarray:
    """Ideal bits of one frame's symbols at ``K`` quantiser steps at once: ``TABLES.bits`` of
    ``magnitude * gains[k]`` (``magnitude`` ``[N]``: the units' magnitudes at a step of 1;
    ``gains`` ``[K]``) rounded by :func:`rd_symbols` in the first ``bins`` and plainly above,
    each band (``edges``) under one grid index (``band_index`` ``[K, B]``). The tables are
    symmetric, so a symbol's bits are its magnitude's; bins that round to zero at every step
    (most of them, at low rates) are counted per band, and only the rest are looked up."""
    edges = np.asarray(edges)
    widths = np.diff(edges)
    j = band_index - J_MIN
    core_b = TABLES.core[j]  # (builds the tables first)
    zero_b = TABLES.offset[j] + core_b  # symbol 0's place in each band's table
    # rint rounds halves to even: below 0.5 at the largest gain, a bin is 0 at every step
    live = magnitude * np.max(gains) >= 0.5
    dead_per_band = widths - np.add.reduceat(live, edges[:-1])
    total = TABLES.flat_bits[zero_b] @ dead_per_band.astype(np.float64)
    (at,) = np.nonzero(live)
    if not len(at):
        return total
    band = np.repeat(np.arange(len(widths)), widths)[at]
    units = magnitude[at] * gains[:, None]
    core, zero = core_b[:, band], zero_b[:, band]
    m = np.minimum(np.rint(units), MAX_SYMBOL).astype(np.int64)
    low = int(np.searchsorted(at, bins))  # the live bins below ``bins``
    if low and bit_weight:
        m[:, :low] -= _steps_down(units[:, :low], m[:, :low], core[:, :low], zero[:, :low], bit_weight)
    escaped = np.count_nonzero(m > core, axis=1)
    return total + TABLES.flat_bits[zero + np.minimum(m, core + 1)].sum(axis=1) + (1 + ESCAPE_BITS) * escaped


def gain(settings: TransformSettings, level_qo: np.ndarray, step: int) -> np.ndarray:
    """Each coefficient's quantiser step in the MDCT domain: RMS**alpha x 2**(step / 64)."""
    return np.exp2(settings.alpha16 * level_qo / 64.0 + step / 64.0)


def dequantise(settings: TransformSettings, symbols: np.ndarray, level_qo: np.ndarray, step,
               seed=0) -> np.ndarray:
    """The decoder's MDCT coefficients ``[T, HOP]``: symbols times their step (one int, or one
    per frame ``[T, 1]``), and the noise fill (drawn from ``seed``, or frame ``t``'s from
    ``seed[t]``: a stream's packets each give their own)."""
    coefficients = symbols * gain(settings, level_qo, step)
    if settings.noise_fill16:
        fill_noise(coefficients, symbols, level_qo, step, settings, seed)
    return np.minimum(np.maximum(coefficients, -MAX_COEFFICIENT), MAX_COEFFICIENT)


def fill_noise(coefficients: np.ndarray, symbols: np.ndarray, level_qo: np.ndarray, step,
               settings: TransformSettings, seed=0) -> None:
    """Noise, in place, in every band of every frame that quantised to all zeros: its RMS is
    ``noise_fill16 / 16`` of the band's decoded RMS, at most half a quantiser step. ``seed``: one
    int (every frame's noise from one generator), or one a frame (each frame's from its own: the
    same noise as that frame alone)."""
    edges = np.asarray(bands.LAYOUTS[settings.layout])
    band_level = level_qo[:, edges[:-1]]
    empty = (np.add.reduceat(symbols != 0, edges[:-1], axis=1) == 0) \
        & (band_level > bands.floor_level(settings.energy_step) * settings.energy_step)  # [T, B]
    if not empty.any():  # nothing to fill (the noise would be scaled by zeros)
        return
    rms = np.exp2(band_level / 4.0)
    ceiling = 0.5 * np.exp2(settings.alpha16 * band_level / 64.0 + step / 64.0)
    level = np.where(empty, np.minimum(rms, ceiling) * settings.noise_fill16 / 16, 0.0)
    per_bin = np.repeat(level, np.diff(edges), axis=1)
    if np.ndim(seed):
        noise = np.zeros(per_bin.shape)
        for t in np.flatnonzero(empty.any(axis=1)):
            noise[t] = np.random.default_rng(seed[t]).uniform(-np.sqrt(3), np.sqrt(3), per_bin.shape[1])
    else:
        noise = np.random.default_rng(seed).uniform(-np.sqrt(3), np.sqrt(3), per_bin.shape)  # unit RMS
    coefficients += per_bin * noise

