"""Decoder postfilter: a pitch comb and a formant emphasis that deepen the spectral valleys.

The network's error fills the valleys between a voiced sound's harmonics and between its
formants, where PESQ's narrow low bands and listeners hear it as noise (see the model cards).
Speech codecs answer with a postfilter on the decoded signal (CELT's pitch post-filter,
AMR-WB's formant and pitch postfilters); this one costs no bits and only looks at the decoded
audio:

- **Pitch comb.** Every 10 ms the pitch lag ``T`` (2.5-20 ms) and its normalised
  autocorrelation ``r`` are measured over 20 ms; where ``r`` reaches ``VOICED_R`` the frame is
  filtered as ``(y[n] + g/2 (y[n-T] + y[n+T])) / (1 + g)`` with ``g = comb * r``, a
  zero-phase comb whose teeth sit on the harmonics; frames are cross-faded with Hann windows.
  Unvoiced frames pass unchanged.
- **Formant emphasis.** Each STFT frame's magnitude is multiplied by (envelope smoothed over
  +-3 bins / envelope smoothed over +-24 bins) ** ``formant``, which lifts formant peaks over
  the valleys beside them, then scaled so the frame keeps its energy.

Both strengths are per model, chosen on validation speech (``scripts/choose_postfilter.py``),
and written into each stream, so a stream decodes the same everywhere. Vectorised torch on the
CPU (float32), no state between calls. A signal's output at sample ``n`` depends only on the
input within :func:`postfilter_context` of ``n`` and on ``n``'s position modulo
:func:`postfilter_alignment`, which lets the codec filter a long signal in pieces with context
and get what one call over it all gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

HOP_S = 0.010  # pitch analysis and comb frames
MIN_LAG_S, MAX_LAG_S = 0.0025, 0.020  # 400 Hz down to 50 Hz
VOICED_R = 0.5  # normalised autocorrelation from which a frame counts as voiced
OCTAVE_SLACK = 0.85  # a lag T/k is preferred to T when its correlation reaches this share of T's
FORMANT_NFFT_S = 0.032  # frames of 512 samples at 16 kHz, half overlapping
FINE_BINS, COARSE_BINS = 3, 24  # half-widths of the two envelope smoothings, in STFT bins


@dataclass(frozen=True)
class PostfilterSettings:
    """Strengths: ``comb`` 0..1 (0: off), ``formant`` 0..1 (exponent; 0: off)."""

    comb: float = 0.0
    formant: float = 0.0

    def __post_init__(self):
        for name in ("comb", "formant"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"postfilter {name} strength must be a number from 0 to 1, got {value!r}")

    @property
    def off(self) -> bool:
        return self.comb == 0.0 and self.formant == 0.0

    def to_dict(self) -> dict:
        return {"comb": self.comb, "formant": self.formant}

    def __str__(self) -> str:
        return "off" if self.off else f"comb {self.comb:g}, formant {self.formant:g}"


OFF = PostfilterSettings()


def _ola(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Overlap-add ``[K, m * hop]`` frames placed every ``hop`` samples: ``[(K + m - 1) * hop]``."""
    count, length = frames.shape
    parts = frames.reshape(count, length // hop, hop)
    out = torch.zeros(count + length // hop - 1, hop, dtype=frames.dtype)
    for p in range(length // hop):  # part p of frame k lands in block k + p
        out[p: p + count] += parts[:, p]
    return out.reshape(-1)


def pitch_track(y: torch.Tensor, rate_hz: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lag (samples) and normalised autocorrelation of frames centred on ``k * hop``.

    ``y`` float32 ``[N]``; returns int64 ``[K]`` lags and float32 ``[K]`` correlations in 0..1,
    ``K = ceil(N / hop) + 1``. Each frame compares the 20 ms around ``k * hop`` with the same
    span ``T`` earlier, for every ``T`` at once through one FFT; a lag is replaced by ``T / 2``,
    ``T / 3`` or ``T / 4`` where that one correlates nearly as well (no octave errors).
    """
    hop = round(HOP_S * rate_hz)
    win = 2 * hop
    lo, hi = max(2, round(MIN_LAG_S * rate_hz)), round(MAX_LAG_S * rate_hz)
    count = -(-len(y) // hop) + 1
    # frame k: target a = y[k*hop - hop .. k*hop + hop); the lagged spans reach hi samples before it
    padded = F.pad(y, (hi + hop, 2 * hop + win))
    ext = padded.unfold(0, hi + win, hop)[:count]  # [K, hi + win]
    a = ext[:, hi:]  # [K, win]
    nfft = hi + win  # no circular wrap for lags 0..hi
    spec = torch.fft.rfft(ext, nfft) * torch.conj(torch.fft.rfft(a, nfft))
    xcorr = torch.fft.irfft(spec, nfft)[:, : hi + 1].flip(1)  # [K, hi + 1]: sum_n a[n] y[n - T], by T
    # energy of every win-long span of the padded signal, once (float64: differences of a cumsum)
    sq = F.pad(torch.cumsum(padded.double() ** 2, dim=0), (1, 0))
    span = (sq[win:] - sq[:-win]).float().clamp(min=0.0)  # span[i]: padded[i .. i + win)
    energies = span.unfold(0, hi + 1, hop)[:count]  # [K, hi + 1]: the span T = hi - j before a
    lagged_energy = energies.flip(1)
    target_energy = energies[:, -1:]
    r = (xcorr / torch.sqrt(lagged_energy * target_energy + 1e-12)).clamp(-1.0, 1.0)
    r[:, :lo] = -1.0
    best_r, best = r.max(dim=1)
    lag = best.clone()
    offsets = torch.tensor([-1, 0, 1])
    for k in (4, 3, 2):  # the shortest sub-multiple that correlates nearly as well wins
        cand = torch.round(best / k).long()
        near_idx = (cand[:, None] + offsets).clamp(lo, hi)
        near = torch.gather(r, 1, near_idx)
        near_r, which = near.max(dim=1)
        pick = torch.gather(near_idx, 1, which[:, None])[:, 0]
        better = (cand >= lo) & (near_r >= OCTAVE_SLACK * best_r) & (pick < lag)
        lag = torch.where(better, pick, lag)
    return lag, torch.gather(r, 1, lag[:, None])[:, 0].clamp(min=0.0)


def comb(y: torch.Tensor, rate_hz: int, strength: float) -> torch.Tensor:
    """The pitch comb of ``y`` (float32 ``[N]``) at ``strength`` (``g = strength * r``)."""
    if strength == 0.0 or len(y) == 0:
        return y
    hop = round(HOP_S * rate_hz)
    lag, r = pitch_track(y, rate_hz)
    g = torch.where(r >= VOICED_R, strength * r, torch.zeros_like(r))[:, None]  # [K, 1]
    count = len(lag)
    # frame k covers y[k*hop - hop .. k*hop + hop) under a Hann window; the windows sum to one
    pad = round(MAX_LAG_S * rate_hz) + hop
    padded = F.pad(y, (pad, pad + 2 * hop))
    starts = torch.arange(count) * hop + (pad - hop)  # [K]
    spans = padded.unfold(0, 2 * hop, 1)  # a view: spans[i] = padded[i .. i + 2 hop)
    here = spans[starts]  # [K, 2 hop]
    around = spans[starts - lag] + spans[starts + lag]
    window = torch.sin(torch.pi * (torch.arange(2 * hop) + 0.5) / (2 * hop)) ** 2
    change = ((here + 0.5 * g * around) / (1.0 + g) - here) * window  # only the change is added
    out = _ola(change, hop)  # block j of out starts at y[j*hop - hop]
    return y + out[hop: hop + len(y)]


def _smooth_bins(mag: torch.Tensor, half: int) -> torch.Tensor:
    """Moving average over +-``half`` bins (fewer at the edges) along the last axis."""
    c = F.pad(torch.cumsum(mag, dim=-1), (1, 0))
    n = mag.shape[-1]
    i = torch.arange(n)
    lo, hi = (i - half).clamp(min=0), (i + half + 1).clamp(max=n)
    return (c[..., hi] - c[..., lo]) / (hi - lo)


def _formant_nfft(rate_hz: int) -> int:
    return 1 << int(round(math.log2(FORMANT_NFFT_S * rate_hz)))


def formant_emphasis(y: torch.Tensor, rate_hz: int, strength: float) -> torch.Tensor:
    """Lift formant peaks over their valleys by (fine / coarse envelope) ** ``strength``."""
    if strength == 0.0 or len(y) == 0:
        return y
    nfft = _formant_nfft(rate_hz)
    hop = nfft // 2
    count = -(-len(y) // hop) + 1
    pad = nfft - hop
    padded = F.pad(y, (pad, pad + 2 * hop))
    window = torch.sin(torch.pi * (torch.arange(nfft) + 0.5) / nfft)  # sine: analysis and synthesis
    spec = torch.fft.rfft(padded.unfold(0, nfft, hop)[:count] * window)  # [K, nfft/2 + 1]
    power = spec.real ** 2 + spec.imag ** 2
    mag = torch.sqrt(power)
    weight = (_smooth_bins(mag, FINE_BINS) / (_smooth_bins(mag, COARSE_BINS) + 1e-9)) ** strength
    keep = torch.sqrt(power.sum(dim=1) / ((power * weight ** 2).sum(dim=1) + 1e-20))
    frames = torch.fft.irfft(spec * (weight * keep[:, None]), nfft) * window
    # sine windows at 50 % overlap, applied twice, sum to one
    return _ola(frames, hop)[pad: pad + len(y)]


def postfilter_context(rate_hz: int) -> int:
    """Samples either side of ``n`` that the output at ``n`` can depend on: a comb frame either
    side and a pitch lag beyond it (analysis reaches a lag and a frame back), then an STFT frame."""
    hop = round(HOP_S * rate_hz)
    return 2 * hop + 2 * round(MAX_LAG_S * rate_hz) + _formant_nfft(rate_hz)


def postfilter_alignment(rate_hz: int) -> int:
    """Both filters' frames sit on multiples of their hops from the first sample: pieces of a long
    signal filtered apart give what one call gives when they start on multiples of this."""
    return math.lcm(round(HOP_S * rate_hz), _formant_nfft(rate_hz) // 2)


def postfilter(y: np.ndarray, rate_hz: int, settings: PostfilterSettings) -> np.ndarray:
    """``y`` (float32 ``[N]`` at ``rate_hz``) through the comb, then the formant emphasis."""
    if settings.off or len(y) == 0:
        return y
    # Silence either side, as far as the output can reach: the comb spreads a lag into it, and the
    # formant stage must see that spread as it does when the codec filters a piece with context.
    align = postfilter_alignment(rate_hz)
    pad = -(-postfilter_context(rate_hz) // align) * align
    with torch.inference_mode():
        x = F.pad(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), (pad, pad))
        x = formant_emphasis(comb(x, rate_hz, settings.comb), rate_hz, settings.formant)
    return x[pad: pad + len(y)].numpy()
