"""Band layouts, band energies and their range coding.

A band's energy is the RMS of its MDCT coefficients, measured on the MDCT-MDST magnitude
(:func:`speechcodec.transform.mdct.odft`: steadier from frame to frame than the MDCT alone) and
averaged over ``energy_frames`` MDCT frames (1: 20 ms, 2: 40 ms). It is quantised in the log2
domain in steps of ``step`` quarter-octaves (1 = 1.5 dB, 4 = 6 dB) and coded closed-loop, as
CELT codes its coarse energies: each band is predicted from the same band one energy frame
earlier plus part of the change the two bands below just made (5/8 of the one below, 1/4 of the
next: 7 % fewer bits on held-out speech than half of the one below, 20 % fewer than none), and
the prediction's residual is
quantised with a small dead zone (a residual within ``0.5 + DEAD_ZONE`` steps of the prediction
codes as zero) and range-coded under a discretised Laplace whose scale the encoder picks per
stream (:mod:`speechcodec.transform.laplace`). Levels are integers, so the decoder's levels, and
everything derived from them, are the encoder's exactly.
"""

from __future__ import annotations

import numpy as np

from speechcodec.transform.laplace import J_MAX, J_MIN, TABLES

# Band edges in MDCT bins (25 Hz each at 16 kHz with a 20 ms hop); 320 bins reach 8 kHz.
LAYOUTS: dict[str, tuple[int, ...]] = {
    # 16 bands, about a Bark wide above 500 Hz: 100 Hz bands up to 400 Hz, widening to 1.6 kHz
    "bark16": (0, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320),
    # 20 bands: finer than bark16 between 400 Hz and 4.8 kHz
    "bark20": (0, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 240, 320),
    # 20 bands of 400 Hz (the perceptual premise's 16 bins)
    "uniform20": tuple(range(0, 321, 16)),
}
LAYOUT_IDS = {name: i for i, name in enumerate(LAYOUTS)}  # the stream stores the index
FLOOR_QUARTER_OCTAVES = -64  # band RMS below 2**-16 (about -96 dB re a full-scale bin) is the floor
CEILING_QUARTER_OCTAVES = 48  # and above 2**12 the ceiling (full-scale audio stays below 2**5)
DEAD_ZONE = 0.2  # steps added to half a step before a residual leaves zero
SCALE_SEARCH = range(-24, 33)  # grid indices the encoder tries for the residuals' Laplace


def band_of_bin(edges: tuple[int, ...]) -> np.ndarray:
    """int ``[bins]``: the band of every MDCT bin."""
    return np.repeat(np.arange(len(edges) - 1), np.diff(edges))


def band_levels(spectrum: np.ndarray, edges: tuple[int, ...], energy_frames: int) -> np.ndarray:
    """float ``[E, B]``: log2 band RMS in quarter-octaves, ``E = ceil(T / energy_frames)``.

    ``spectrum``: complex ``[T, bins]`` (:func:`~speechcodec.transform.mdct.odft`); the MDCT's
    expected square is half the complex magnitude's square.
    """
    power = np.abs(spectrum) ** 2 / 2
    sums = np.add.reduceat(power, np.asarray(edges[:-1]), axis=1) / np.diff(edges)
    frames = sums.shape[0]
    groups = -(-frames // energy_frames)
    padded = np.pad(sums, ((0, groups * energy_frames - frames), (0, 0)), mode="edge")
    mean = padded.reshape(groups, energy_frames, -1).mean(axis=1)
    return 2 * np.log2(np.maximum(mean, 2.0 ** (FLOOR_QUARTER_OCTAVES / 2)))


def floor_level(step: int) -> int:
    return -(-FLOOR_QUARTER_OCTAVES // step)


def quantise_levels(levels: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed-loop quantisation: (int levels ``[E, B]`` in steps, int residuals to code)."""
    groups, bands = levels.shape
    floor = floor_level(step)
    target = np.clip(levels / step, floor, CEILING_QUARTER_OCTAVES // step)
    q = np.empty((groups, bands), np.int64)
    residual = np.empty((groups, bands), np.int64)
    prev = [floor] * bands
    for t in range(groups):
        row, below, below2 = target[t].tolist(), 0, 0
        for b in range(bands):
            predicted = prev[b] + predicted_change(below, below2)
            value = closed_loop_level(row[b], predicted, floor)
            residual[t, b] = value - predicted
            q[t, b] = value
            below, below2 = value - prev[b], below
        prev = q[t].tolist()
    return q, residual


def closed_loop_level(want: float, predicted: int, floor: int) -> int:
    """The level coded for a band that wants ``want`` (in energy steps) given its prediction:
    the prediction plus the rounded miss, which leaves zero only beyond ``0.5 + DEAD_ZONE`` steps;
    never below ``floor``."""
    miss = want - predicted
    r = int(abs(miss) + 0.5 - DEAD_ZONE)
    return max(predicted + (r if miss >= 0 else -r), floor)


def predicted_change(below, below2):
    """A band's predicted change since the last energy frame, from the changes the band below and
    the one below that just made: floor(5/8 below + 1/4 below2 + 1/2), in integers (scalars or
    arrays)."""
    return (5 * below + 2 * below2 + 4) >> 3


def levels_from_residuals(residual: np.ndarray, step: int) -> np.ndarray:
    """Inverse of :func:`quantise_levels`'s coding: int levels ``[E, B]``. Levels outside
    floor..ceiling (which no encoder writes) come back as they are: the caller refuses them."""
    groups, bands = residual.shape
    change = np.empty((groups, bands), np.int64)  # each band's change since the last energy frame
    below = below2 = np.zeros(groups, np.int64)
    for b in range(bands):
        change[:, b] = predicted_change(below, below2) + residual[:, b]
        below, below2 = change[:, b], below
    return floor_level(step) + np.cumsum(change, axis=0)


def residual_scale(residual: np.ndarray) -> int:
    """The Laplace grid index that codes ``residual`` in the fewest bits."""
    values, counts = np.unique(residual, return_counts=True)
    best = min(SCALE_SEARCH, key=lambda j: TABLES.bits_at(values, counts, j))
    return int(np.clip(best, J_MIN, J_MAX))
