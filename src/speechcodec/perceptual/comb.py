"""A pitch comb on the low band of the decoded speech: the perceptual family's decoder postfilter.

What is left wrong in ``pc``'s low band is noise between the harmonics (issue 45). Every 20 ms
(a hop: the decoder's frame) where the 20 ms of decoded speech before it are voiced
(normalised autocorrelation at least :data:`VOICED_R` at the best lag ``T``, 2.5-20 ms, octave
errors avoided as :func:`speechcodec.postfilter.pitch_track` avoids them), the hop's low band
``L`` becomes ``(L[n] + g L[n - T]) / (1 + g)``: a comb whose teeth sit on the harmonics. The
low band is a causal low-pass of the signal (a Butterworth low-pass, as an FIR of its first
:data:`LOWPASS_TAPS` taps) and the rest is left as is, so the output is
``y[n] + g / (1 + g) (L[n - T] - L[n])``: no delay, no bits, nothing from the future, and where
nothing is voiced, the signal unchanged.

The lag comes from the 20 ms before the hop, so a live decoder has it in time, and a file
decoder running :func:`comb_signal` over a whole signal gives, sample for sample, what a stream
decoder's :class:`LowBandComb` gives block by block (the same arithmetic per hop). Numpy, no
torch.

Chosen on the 23 held-out training speakers (docs/history.md, 2026-12-07, "issue 45, premise
4"): at 6 and 12 kbps it gains PESQ-WB and ViSQOL on most files; at 24 kbps it costs ViSQOL.
"""

from __future__ import annotations

import math

import numpy as np

RATE_HZ = 16000
HOP = 320  # 20 ms: one lag a hop (a lag every 10 ms did no better on held-out speakers)
WINDOW = 320  # 20 ms: the speech the lag is measured on
MIN_LAG, MAX_LAG = 40, 320  # 2.5 .. 20 ms (400 .. 50 Hz)
VOICED_R = 0.5
OCTAVE_SLACK = 0.85  # a lag T / k wins over T when it correlates this share as well
LOWPASS_TAPS = 64
HISTORY = MAX_LAG + WINDOW + LOWPASS_TAPS  # samples a hop looks back over
MEMORY_FRAMES = -(-HISTORY // 320)  # 20 ms frames of input an output frame depends on, before its own
# What pc's decoder runs: g 0.1 below a 4th-order 3 kHz low-pass, in streams of at most 16 kbps
# (on held-out speakers it gains both metrics on most files at 6 and 12 kbps; at 24 kbps it
# costs ViSQOL: docs/history.md, 2026-12-07, issue 45 premise 4)
GAIN, CUTOFF_HZ, ORDER = 0.1, 3000.0, 4
MAX_BITRATE_BPS = 16000


def _biquad_lowpass(cutoff_hz: float) -> tuple[tuple[float, float, float], tuple[float, float]]:
    """A second-order Butterworth low-pass (the bilinear transform): ``(b0, b1, b2), (a1, a2)``."""
    k = math.tan(math.pi * cutoff_hz / RATE_HZ)
    norm = 1.0 / (1.0 + math.sqrt(2.0) * k + k * k)
    b0 = k * k * norm
    return (b0, 2.0 * b0, b0), (2.0 * (k * k - 1.0) * norm, (1.0 - math.sqrt(2.0) * k + k * k) * norm)


def lowpass_taps(cutoff_hz: float, order: int) -> np.ndarray:
    """The first :data:`LOWPASS_TAPS` taps of an ``order``-th order (2 or 4: one or two biquads
    in cascade) Butterworth low-pass's impulse response, summing to 1; order 0: no low-pass (the
    comb over the whole band)."""
    if order not in (0, 2, 4):
        raise ValueError("the comb's low-pass is of order 0, 2 or 4")
    if not order:
        return np.ones(1)
    b, a = _biquad_lowpass(cutoff_hz)
    x = [1.0] + [0.0] * (LOWPASS_TAPS - 1)
    for _ in range(order // 2):
        y, x1, x2, y1, y2 = [], 0.0, 0.0, 0.0, 0.0
        for v in x:
            out = b[0] * v + b[1] * x1 + b[2] * x2 - a[0] * y1 - a[1] * y2
            x2, x1, y2, y1 = x1, v, y1, out
            y.append(out)
        x = y
    taps = np.array(x)
    return taps / taps.sum()


def pitch(before: np.ndarray) -> tuple[int, float]:
    """``(lag, r)`` of the last :data:`WINDOW` samples of ``before`` (at least ``WINDOW +
    MAX_LAG`` samples, zeros before the signal starts): the lag in samples whose span correlates
    best with them (normalised), a shorter sub-multiple where that does nearly as well."""
    before = before[-(WINDOW + MAX_LAG):]
    xcorr = np.correlate(before, before[-WINDOW:], mode="valid")[::-1]  # [T]: sum_n target[n] before[n - T]
    square = np.cumsum(before * before)
    # [T]: the energy of the span T before the target
    energy = np.maximum(square[WINDOW - 1:] - np.concatenate([[0.0], square[:-WINDOW]]), 0.0)[::-1]
    r = np.minimum(np.maximum(xcorr / np.sqrt(energy * energy[0] + 1e-12), -1.0), 1.0)
    best = MIN_LAG + int(np.argmax(r[MIN_LAG:]))
    lag, best_r = best, float(r[best])
    for k in (4, 3, 2):  # the shortest sub-multiple that correlates nearly as well wins
        candidate = round(best / k)
        near = [min(max(c, MIN_LAG), MAX_LAG) for c in (candidate - 1, candidate, candidate + 1)]
        values = [float(r[c]) for c in near]
        pick = near[max(range(3), key=values.__getitem__)]
        if candidate >= MIN_LAG and float(r[pick]) >= OCTAVE_SLACK * best_r and pick < lag:
            lag = pick
    return lag, max(float(r[lag]), 0.0)


class LowBandComb:
    """The comb over a signal handed over in pieces of whole hops (a stream decoder's 320
    samples): ``comb(block)`` returns the block filtered, with no delay. ``hop``: samples a lag
    (a premise's choice; :data:`HOP` is the decoder's)."""

    def __init__(self, gain: float, cutoff_hz: float, order: int, hop: int = HOP):
        self.gain, self.taps, self.hop = float(gain), lowpass_taps(cutoff_hz, order), int(hop)
        self._signal = np.zeros(HISTORY)  # the input before, as far as a hop looks back
        self._low = np.zeros(HISTORY)  # its low band

    def __call__(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float64)
        hop = self.hop
        if len(block) % hop:
            raise ValueError(f"the comb takes whole hops of {hop} samples")
        n = len(block)
        signal = np.concatenate([self._signal, block])
        # the low band of the new samples: each from the LOWPASS_TAPS samples up to it
        new_low = np.convolve(signal[-n - len(self.taps) + 1:], self.taps, mode="valid")
        low = np.concatenate([self._low, new_low])
        out = block.copy()
        if self.gain:
            share = self.gain / (1.0 + self.gain)
            for start in range(0, n, hop):
                at = HISTORY + start  # the hop's first sample within signal / low
                lag, r = pitch(signal[at - WINDOW - MAX_LAG: at])
                if r >= VOICED_R:
                    out[start: start + hop] += share * (low[at - lag: at - lag + hop] - low[at: at + hop])
        self._signal, self._low = signal[-HISTORY:], low[-HISTORY:]
        return out


def comb_signal(y: np.ndarray, gain: float, cutoff_hz: float, order: int, hop: int = HOP) -> np.ndarray:
    """:class:`LowBandComb` over a whole signal at once (its length whole hops): the same samples."""
    return LowBandComb(gain, cutoff_hz, order, hop)(y)


def runs_at(bitrate_bps: int) -> bool:
    """Whether the decoder of a stream at ``bitrate_bps`` (its header's) combs."""
    return bitrate_bps <= MAX_BITRATE_BPS


def for_bitrate(bitrate_bps: int) -> LowBandComb | None:
    """The comb a decoder of a stream at ``bitrate_bps`` (its header's) runs, or ``None``."""
    return LowBandComb(GAIN, CUTOFF_HZ, ORDER) if runs_at(bitrate_bps) else None
