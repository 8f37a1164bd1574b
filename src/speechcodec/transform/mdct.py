"""MDCT and inverse MDCT with a sine window (TDAC): 20 ms hop, 40 ms window at 16 kHz.

Numpy only. Frame ``t`` covers samples ``[(t - 1) * hop, (t + 1) * hop)`` of the signal, so
``frames(n) = ceil(n / hop) + 1`` frames cover ``n`` samples completely and :func:`imdct`
gives them back exactly (to float rounding): the sine window satisfies the Princen-Bradley
condition and the time-domain aliasing of neighbouring frames cancels.
"""

from __future__ import annotations

import numpy as np

HOP = 320  # samples per frame at 16 kHz: 20 ms; also the number of coefficients a frame
_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _tables(hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sine window and the pre/post twiddles of the FFT-based MDCT of size ``2 * hop``."""
    if hop not in _cache:
        n = 2 * hop
        window = np.sin(np.pi * (np.arange(n) + 0.5) / n)
        k = np.arange(hop)
        n0 = (hop + 1) / 2  # the MDCT's phase offset (N/2 + 1)/2 for window length N = 2 * hop
        pre = np.exp(-1j * np.pi * np.arange(n) / n)  # shifts the FFT bins by half a bin
        post = np.exp(-1j * np.pi * n0 * (k + 0.5) / hop)
        _cache[hop] = (window, pre, post, k)
    return _cache[hop]


def num_frames(num_samples: int, hop: int = HOP) -> int:
    """Frames that cover ``num_samples`` completely (every sample in two windows)."""
    return -(-num_samples // hop) + 1


def odft(signal: np.ndarray, hop: int = HOP) -> np.ndarray:
    """complex ``[T, hop]``: the MDCT (real part) with its sine twin, the MDST (imaginary part).

    Its squared magnitude does not depend on where a sinusoid's phase falls in the frame, so
    band energies measured on it are steadier from frame to frame than the MDCT's own.
    """
    x = np.asarray(signal, dtype=np.float64)
    frames = num_frames(len(x), hop)
    padded = np.zeros((frames + 1) * hop)
    padded[hop: hop + len(x)] = x
    return odft_blocks(np.lib.stride_tricks.sliding_window_view(padded, 2 * hop)[::hop][:frames], hop)


def odft_blocks(blocks: np.ndarray, hop: int = HOP) -> np.ndarray:
    """:func:`odft` of signal blocks ``[T, 2 * hop]`` already cut (frame ``t``'s samples
    ``[(t - 1) * hop, (t + 1) * hop)``): what a stream computes one frame at a time."""
    window, pre, post, _ = _tables(hop)
    return np.sqrt(2.0 / hop) * (np.fft.fft(blocks * window * pre, axis=1)[:, :hop] * post)


def mdct(signal: np.ndarray, hop: int = HOP) -> np.ndarray:
    """float ``[T, hop]`` MDCT coefficients of a 1-D signal, ``T = num_frames(len(signal))``.

    Scaled so that :func:`imdct` is its exact inverse (orthogonal TDAC: the sum of squares of
    the coefficients equals the signal's energy).
    """
    return odft(signal, hop).real


def imdct(coefficients: np.ndarray, num_samples: int, hop: int = HOP) -> np.ndarray:
    """Inverse of :func:`mdct`: windowed overlap-add of the frames, ``num_samples`` long."""
    blocks = imdct_blocks(coefficients, hop)
    frames, n = blocks.shape
    out = np.zeros((frames + 1) * hop)
    for t in range(2):  # even frames, then odd ones: each pass adds non-overlapping blocks
        part = blocks[t::2]
        view = out[t * hop: t * hop + len(part) * n].reshape(len(part), n)
        view += part
    return out[hop: hop + num_samples]


def imdct_blocks(coefficients: np.ndarray, hop: int = HOP) -> np.ndarray:
    """The windowed blocks ``[T, 2 * hop]`` that :func:`imdct` overlaps and adds: block ``t``
    covers samples ``[(t - 1) * hop, (t + 1) * hop)``."""
    c = np.asarray(coefficients, dtype=np.float64)
    window, pre, post, _ = _tables(hop)
    # y[m] = sum_k c[k] cos(pi/hop (m + n0)(k + 1/2)), through one FFT of length 2 * hop.
    spec = np.zeros((c.shape[0], 2 * hop), dtype=np.complex128)
    spec[:, :hop] = c * post
    return np.real(np.fft.fft(spec, axis=1) * pre) * (np.sqrt(2.0 / hop) * window)
