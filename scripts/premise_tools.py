#!/usr/bin/env python
"""Premises of issue 45's speech tools for ``pc``, on held-out training speakers.

The held-out speakers are ``scripts/premise_perceptual.py``'s (``speechcodec.data.held_out_speakers``);
each scores its first file, cut to 8 s, coded live (the packets files and calls share) at each
rate. Every row gives PESQ-WB, ViSQOL and how many files it makes better than ``pc`` as is.

    bands      the band oracle: the decoded speech with one band replaced by the original's (a
               zero-phase split), the room each band leaves
    postfilter the decoder postfilter of the autoencoders (pitch comb and formant emphasis, no
               bits) on pc's output, at several strengths (COMB/FORMANT)
    comb       a causal pitch comb at the decoder, ``(y[n] + g y[n - T]) / (1 + g)`` on voiced
               10 ms (the lag and correlation of the 20 ms before, as the autoencoders'
               postfilter tracks them): at fixed gains, with CELT's low-pass taps, with the gain
               scaled by the correlation, below 3 kHz only (a zero-phase split: an upper bound
               of a crossover), and with a gain per 20 ms frame chosen in closed loop (the
               encoder compares each gain's output with the original below 4 kHz and would send
               its choice: 3 bits a frame, 0.15 kbps, not charged here)
    deadzone   the encoder's quantiser otherwise (the decoder unchanged): a dead zone (``--options``
               0.1: a unit's magnitude less 0.1 is rounded) or rate-distortion rounding (rd0.1:
               of the rounded symbol and the next towards zero, the least squared error in steps
               plus 0.1 x its bits); the bits a coarse symbol saves buy a finer step;
               ``rd0.05@MODEL``: decoded by another enhancer (a file); ``rd0.05<80``: in the
               bins below 80 (2 kHz) only
    models     the same packets decoded by other enhancers (``--options`` model files or names,
               the first the reference), e.g. rounds of training against the shipped ``pc``
    envelope   an oracle of temporal shaping: the decoded band above 2 or 4 kHz given the
               original's temporal envelope (its RMS over blocks of 2.5, 5, 10 or 20 ms, the gain
               between block centres interpolated), the room a coded envelope, TNS or short
               blocks could take at most
    lowcomb    the decoder's low-band pitch comb (:mod:`speechcodec.perceptual.comb`) on pc's
               output without it: ``--options G/ORDER/CUTOFF_HZ/HOP`` (gain, the low-pass's
               order 2 or 4, or 0 for none: the comb over the whole band; its cutoff, samples a
               lag: 320 is the decoder's 20 ms)
    intra      issue 42: inter packets (band energies predicted from the packet before) with an
               intra packet every N (``--options`` N,..., the first the reference), no loss, or
               N@LOSS: that share of the packets lost at random (the same packets for every N)
    contexts   context coding of the coefficients (issue 45's tool 2): each symbol's Laplace scale
               moved by a shift per context (fitted on training speakers, integers only), the
               context from symbols already decoded: within the frame (the bin below; or a
               checkerboard: the odd bins given both even neighbours) and, for a file's inter
               packets, the frame before (the same bin and its neighbours); the bits of the
               packets' own symbols (an intra packet every 8, as in files) against as coded
    bandwidth  the decoded band above each ``--options`` frequency (Hz) removed, or 6 dB down (a
               zero-phase split): what Opus's narrower band at low rates would do to pc
    lowbins    an oracle of where the low band's gap lives: pc's decoded MDCT coefficients below
               ``--bins`` with the original's put back in the bands that quantised to all zeros
               (the noise fill's), in the others, in their bins that quantised to zero or not (those
               beside a nonzero bin, the rest); in the coded bands' zero bins: the network's output
               zeroed, the original's magnitude with the network's or random signs, half the
               original, the network's scaled to the original's RMS, half a step with the
               original's sign where it is over a quarter (a refinement whose bits are not
               charged); and two decoder-only tools on the same packets: the network's output in
               the empty bands instead of the fill, and a harmonic fill (the fill's energy in each
               empty band moved onto the harmonics of the pitch, from the original's window or
               from the 20 ms before it of pc's decoded speech as is)
    ltp        long-term prediction of the low bins (``--bins``) from the decoded past: per frame
               a lag of 2.5-60 ms (the past before the frame's window, repeated where the lag is
               shorter than the window) and a gain per band (8 levels); the bits of the symbols at
               the frame's own step with and without it (the best Laplace scale per band for both,
               as if it were sent free), with the side information each way of sending it costs

bands, postfilter, comb, envelope, lowcomb and bandwidth start from pc's output without its comb (decoded as
a stream above 16 kbps would be); deadzone, models and lowbins decode as the shipped decoder does (the comb
at 16 kbps or less).

    .venv/bin/python scripts/premise_tools.py bands --rates 12
    .venv/bin/python scripts/premise_tools.py postfilter --rates 6,12,24 --options 0.2/0,0.4/0,0/0.2,0.2/0.2
    .venv/bin/python scripts/premise_tools.py comb --rates 12,24
    .venv/bin/python scripts/premise_tools.py deadzone --rates 6,12,24 --options 0.1,0.2
    .venv/bin/python scripts/premise_tools.py models --rates 6,12,24 --options pc,round.safetensors
    .venv/bin/python scripts/premise_tools.py envelope --rates 12,24,6
    .venv/bin/python scripts/premise_tools.py lowcomb --rates 12,6,24 --options 0.1/4/3000/320,0.1/4/3000/160
    .venv/bin/python scripts/premise_tools.py intra --rates 6,12,24 --options 1,8,16
    .venv/bin/python scripts/premise_tools.py intra --rates 6,12 --options 1,2,4,1@0.05,2@0.05,4@0.05
    .venv/bin/python scripts/premise_tools.py ltp --rates 12,6 --bins 80
    .venv/bin/python scripts/premise_tools.py contexts --rates 6,12,24
    .venv/bin/python scripts/premise_tools.py bandwidth --rates 6 --options 3500,4000,5000,6000
    .venv/bin/python scripts/premise_tools.py lowbins --rates 12 --bins 80

The numbers: docs/history.md ("issue 45").
"""

from __future__ import annotations

import argparse
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from premise_perceptual import MAX_S, SHARED, split_speakers  # noqa: E402

RATE_HZ = 16000
COMB_GAINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)  # 3 bits a frame
# --options when none is given (the postfilter's for every command not named)
DEFAULT_OPTIONS = {"postfilter": "0.2/0,0.4/0,0/0.2,0.2/0.2", "bandwidth": "3500,4000,5000,6000"}


def _coded(path: str, kbps: int) -> tuple[np.ndarray, np.ndarray]:
    """(the original, pc's live packets decoded), 16 kHz, aligned."""
    import soundfile as sf
    import torch

    import speechcodec

    torch.set_num_threads(1)
    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * RATE_HZ)]
    # decoded as a stream above 16 kbps would be: without the decoder's low-band comb
    return x, codec.decode_packets(codec.encode_packets(x), bitrate_bps=64000)[: len(x)]


def _split(y: np.ndarray, hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(below ``hz``, above it): a zero-phase FFT split, the two adding up to ``y``."""
    spectrum = np.fft.rfft(y)
    low = spectrum * (np.fft.rfftfreq(len(y), 1 / RATE_HZ) < hz)
    below = np.fft.irfft(low, len(y))
    return below, y - below


def _bands(x, y) -> dict:
    out = {"as is": y}
    for hz in (2000, 4000):
        xl, xh = _split(x, hz)
        yl, yh = _split(y, hz)
        out[f"original below {hz / 1000:g} kHz"] = xl + yh
        out[f"original above {hz / 1000:g} kHz"] = yl + xh
    return out


def _postfilters(x, y, options: list[str]) -> dict:
    from speechcodec.postfilter import PostfilterSettings, postfilter

    out = {"as is": y}
    for option in options:
        comb, formant = (float(v) for v in option.split("/"))
        out[f"comb {comb:g}, formant {formant:g}"] = postfilter(y, RATE_HZ, PostfilterSettings(comb, formant))
    return out


# CELT's post-filter taps (RFC 6716, 4.3.7.1: tapset 0): a comb whose echo is low-passed
CELT_TAPS = (0.1296, 0.2170, 0.3066, 0.2170, 0.1296)


def _causal_comb(y: np.ndarray, lags: np.ndarray, gain: float, hop: int, taps=(1.0,)) -> np.ndarray:
    """``(y[n] + g sum_i taps[i] y[n - T + i - c]) / (1 + g sum(taps))`` (``c`` the taps' centre)
    with each hop's lag ``T`` (0: unvoiced, passed through): a causal comb, no delay beyond the
    codec's; CELT's taps low-pass its echo."""
    out = y.copy()
    centre, pad = len(taps) // 2, 400
    padded = np.concatenate([np.zeros(pad, np.float32), y, np.zeros(8, np.float32)])
    gains = np.broadcast_to(np.asarray(gain, np.float64), np.shape(lags))
    for k, lag in enumerate(lags):
        lag, g = int(lag), float(gains[k])
        if lag <= centre or g == 0:
            continue
        a, b = k * hop, min((k + 1) * hop, len(y))
        if a >= b:
            break
        start = pad + a - lag - centre
        echo = sum(t * padded[start + i: start + i + b - a] for i, t in enumerate(taps))
        out[a:b] = (y[a:b] + g * echo) / (1 + g * sum(taps))
    return out


def _combs(x, y) -> dict:
    """pc as is; a comb at each fixed gain; and the best gain per 20 ms frame (closed loop, by the
    error below 4 kHz)."""
    import torch

    from speechcodec.postfilter import HOP_S, VOICED_R, pitch_track

    hop = int(HOP_S * RATE_HZ)
    lags, r = (t.numpy() for t in pitch_track(torch.from_numpy(y), RATE_HZ))
    # causal: the 10 ms from k * hop take the lag of the 20 ms that end there (pitch_track's
    # frame k - 1), so a live decoder has it when it needs it
    lags, r = np.concatenate([[0], lags[:-1]]), np.concatenate([[0.0], r[:-1]])
    lags = np.where(r >= VOICED_R, lags, 0)
    filtered = [_causal_comb(y, lags, g, hop) for g in COMB_GAINS]
    out = {"as is": y}
    for g, f in zip(COMB_GAINS, filtered, strict=True):
        if g in (0.05, 0.1, 0.2):
            out[f"comb {g:g}, every voiced frame"] = f
    for g in (0.1, 0.2, 0.3):
        out[f"comb {g:g} with CELT's low-pass taps"] = _causal_comb(y, lags, g, hop, CELT_TAPS)
    for g in (0.1, 0.15):  # the gain as the autoencoders' postfilter sets it: strength x correlation
        out[f"comb {g:g} x r"] = _causal_comb(y, lags, g * r, hop)
    for g in (0.1, 0.2):  # the comb below 3 kHz only (a zero-phase split: an upper bound of a crossover)
        low, high = _split(filtered[COMB_GAINS.index(g)], 3000)
        out[f"comb {g:g} below 3 kHz only"] = low + _split(y, 3000)[1]
    xl, _ = _split(x, 4000)
    lows = [_split(f, 4000)[0] for f in filtered]
    frame = 2 * hop
    chosen = np.zeros(len(y), np.float32)
    picks = []
    for a in range(0, len(y), frame):
        errors = [np.sum((low[a:a + frame] - xl[a:a + frame]) ** 2) for low in lows]
        best = int(np.argmin(errors))
        picks.append(best)
        chosen[a:a + frame] = filtered[best][a:a + frame]
    out["comb, gain per frame (closed loop, 3 bits)"] = chosen
    return out


def _envelopes(x: np.ndarray, y: np.ndarray) -> dict:
    """pc as is, and its band above 2 or 4 kHz with the original's temporal envelope over blocks
    of 2.5 to 20 ms (an oracle: what shaping the high band in time could buy at most)."""
    out = {"as is": y}
    for hz in (4000, 2000):
        _, xh = _split(x, hz)
        yl, yh = _split(y, hz)
        for block in (40, 80, 160, 320):
            name = f"original envelope above {hz / 1000:g} kHz, {block / 16:g} ms"
            out[name] = yl + yh * _envelope_gain(xh, yh, block)
    return out


def _envelope_gain(want: np.ndarray, have: np.ndarray, block: int) -> np.ndarray:
    """Per sample: the ratio of ``want``'s RMS to ``have``'s over each block (held within 1/16 ..
    16), linearly between block centres."""
    n = len(have) // block * block
    rms = [np.sqrt(np.mean(v[:n].reshape(-1, block) ** 2, axis=1) + 1e-12) for v in (want, have)]
    ratio = np.clip(rms[0] / rms[1], 1 / 16, 16)
    centres = np.arange(len(ratio)) * block + block / 2
    return np.interp(np.arange(len(have)), centres, ratio)


def _low_combs(y: np.ndarray, options: list[str]) -> dict:
    """pc without its comb, and with each low-band comb of ``options`` (G/ORDER/CUTOFF_HZ/HOP)."""
    from speechcodec.perceptual import comb

    out = {"no comb": y}
    for option in options:
        if option == "0":
            continue
        g, order, cutoff, hop = option.split("/")
        n = len(y) // int(hop) * int(hop)
        z = y.astype(np.float64)
        z[:n] = comb.comb_signal(z[:n], float(g), float(cutoff), int(order), int(hop))
        out[f"low-band comb {option}"] = z
    return out


def _bandwidths(y: np.ndarray, options: list[str]) -> dict:
    """pc as is, and its band above each frequency of ``options`` (Hz) removed or 6 dB down."""
    out = {"as is": y}
    for option in options:
        low, high = _split(y, float(option))
        out[f"nothing above {option} Hz"] = low
        out[f"6 dB down above {option} Hz"] = low + 0.5 * high
    return out


def _harmonic_shape(f0_hz: float, bins: int, sigma_hz: float = 20.0, floor: float = 0.1) -> np.ndarray:
    """[320]: a comb over the MDCT's bins (25 Hz each) with a bump of ``sigma_hz`` on each harmonic
    of ``f0_hz`` over ``floor``; 1 from bin ``bins`` on."""
    centres = (np.arange(320) + 0.5) * 25.0
    harmonics = np.arange(1, int(8000 / f0_hz) + 2) * f0_hz
    bumps = np.exp(-0.5 * ((centres[:, None] - harmonics[None]) / sigma_hz) ** 2).sum(axis=1)
    shape = floor + (1 - floor) * np.minimum(bumps, 1.0)
    shape[bins:] = 1.0
    return shape


def _band_scaled(v: np.ndarray, reference: np.ndarray, where: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``v`` (``[..., 320]``) scaled band by band (``edges``) so that its energy over ``where``
    is ``reference``'s there."""
    have, want = (np.add.reduceat(np.where(where, u ** 2, 0.0), edges[:-1], axis=-1) for u in (v, reference))
    return v * np.repeat(np.sqrt(want / np.maximum(have, 1e-20)), np.diff(edges), axis=-1)


def _harmonic_units(c, bins: int, signal: np.ndarray, own_window: bool) -> np.ndarray:
    """The decoded units of chunk ``c`` with each voiced frame's noise fill below ``bins`` moved
    onto the harmonics (each empty band's energy kept). The pitch: of frame ``t``'s own window of
    ``signal`` (``own_window``: the original's, an oracle), else of the 20 ms before the window."""
    from speechcodec.perceptual import comb
    from speechcodec.perceptual.frames import empty_bands
    from speechcodec.transform import bands

    edges = np.asarray(bands.LAYOUTS[c.settings.layout])
    empty = empty_bands(c.symbols, c.settings.layout)
    pad = comb.WINDOW + comb.MAX_LAG + 640
    padded = np.concatenate([np.zeros(pad), signal.astype(np.float64), np.zeros(640)])
    units = c.units.copy()
    for t in range(len(units)):
        end = pad + RATE_HZ // 50 * (t + 1 if own_window else t - 1)
        lag, r = comb.pitch(padded[end - comb.WINDOW - comb.MAX_LAG: end])
        if r < comb.VOICED_R or not empty[t, :bins].any():
            continue
        shaped = units[t] * np.where(empty[t], _harmonic_shape(RATE_HZ / lag, bins), 1.0)
        units[t] = np.where(empty[t], _band_scaled(shaped, units[t], empty[t], edges), units[t])
    return units


def _low_bins(path: str, kbps: int, bins: int) -> tuple[np.ndarray, dict]:
    """(the original, pc's live packets decoded as shipped, and with each oracle or decoder tool
    of the ``lowbins`` command below ``bins``)."""
    import dataclasses

    import soundfile as sf
    import torch

    import speechcodec
    import speechcodec.perceptual.codec as family
    from speechcodec.perceptual.frames import empty_bands
    from speechcodec.transform import bands
    from speechcodec.transform.mdct import HOP, odft
    from speechcodec.transform.quantiser import gain

    torch.set_num_threads(1)
    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * RATE_HZ)]
    stream = codec.encode_packets(x)
    original = odft(x).real  # the original's MDCT frames, one a packet, as the encoder analyses them
    shipped = codec.synthesis_coefficients
    edges = np.asarray(bands.LAYOUTS["bark16"])
    noise = np.random.default_rng(0)

    def oracle(name: str):
        def synthesis(c, y):
            ours, theirs = shipped(c, y), original[: len(y)]
            empty = empty_bands(c.symbols, c.settings.layout)
            low = np.arange(HOP) < bins
            coded, zero = ~empty & low, ~empty & low & (c.symbols == 0)
            nonzero = c.symbols != 0
            beside = np.zeros_like(nonzero)  # a bin next to a nonzero one
            beside[:, 1:] |= nonzero[:, :-1]
            beside[:, :-1] |= nonzero[:, 1:]
            put = {"original in the empty bands": empty & low, "original in the coded bands": coded,
                   "original in every bin": low, "original in the coded bins zero": zero,
                   "original in the coded bins not zero": coded & nonzero,
                   "original in the coded bins zero beside a nonzero one": zero & beside,
                   "original in the other coded bins zero": zero & ~beside}
            if name in put:
                return np.where(put[name], theirs, ours)
            if name == "coded bands, the original's signs":
                return np.where(coded, np.abs(ours) * np.sign(theirs), ours)
            if name == "coded bands, the original's magnitudes":
                return np.where(coded, np.abs(theirs) * np.sign(ours), ours)
            if name == "zero bins: the network's output zeroed":
                return np.where(zero, 0.0, ours)
            if name == "zero bins: the original's magnitudes, the network's signs":
                return np.where(zero, np.abs(theirs) * np.sign(ours), ours)
            if name == "zero bins: the original's magnitudes, random signs":
                return np.where(zero, np.abs(theirs) * noise.choice([-1.0, 1.0], ours.shape), ours)
            if name.startswith("zero bins: +-1/2 step"):  # a ternary refinement, its bits not charged
                step = gain(c.settings, c.level_qo, c.step)
                refined = np.where(np.abs(theirs) > step / 4, np.sign(theirs) * step / 2, 0.0)
                where = zero & beside if name.endswith("beside a nonzero one") else zero
                return np.where(where, refined, ours)
            if name == "zero bins: half the original":
                return np.where(zero, theirs / 2, ours)
            if name == "zero bins: the network's scaled to the original's RMS a band":
                return np.where(zero, _band_scaled(ours, theirs, zero, edges), ours)
            raise ValueError(name)
        return synthesis

    def decoded(synthesis=None, empty=None) -> np.ndarray:
        codec.synthesis_coefficients = synthesis or shipped
        family.empty_bands = empty or empty_bands
        try:
            return codec.decode_packets(stream)[: len(x)]
        finally:
            del codec.synthesis_coefficients
            family.empty_bands = empty_bands

    as_is = decoded()
    out = {"as is": as_is}
    for name in ("original in the empty bands", "original in the coded bands", "original in every bin",
                 "original in the coded bins not zero", "original in the coded bins zero",
                 "original in the coded bins zero beside a nonzero one",
                 "original in the other coded bins zero",
                 "coded bands, the original's signs", "coded bands, the original's magnitudes",
                 "zero bins: the network's output zeroed",
                 "zero bins: the original's magnitudes, the network's signs",
                 "zero bins: the original's magnitudes, random signs", "zero bins: half the original",
                 "zero bins: +-1/2 step where the original's is over 1/4, beside a nonzero one",
                 "zero bins: +-1/2 step where the original's is over 1/4",
                 "zero bins: the network's scaled to the original's RMS a band"):
        out[name] = decoded(oracle(name))

    def network_below(symbols, layout):
        e = empty_bands(symbols, layout).copy()
        e[..., :bins] = False
        return e

    out["the network's output in the empty bands (no fill)"] = decoded(empty=network_below)
    for source, sig, own in (("the original's window", x, True), ("the decoded 20 ms before", as_is, False)):
        def harmonic(c, y, sig=sig, own=own):
            return shipped(dataclasses.replace(c, units=_harmonic_units(c, bins, sig, own)), y)
        out[f"harmonic fill, pitch of {source}"] = decoded(harmonic)
    return x, out


def _models(path: str, kbps: int, models: list[str]) -> tuple[np.ndarray, dict]:
    """(the original, each model's decoding of the same live packets)."""
    import soundfile as sf
    import torch

    import speechcodec

    torch.set_num_threads(1)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * RATE_HZ)]
    codecs = [speechcodec.load(m, threads=1, bitrate_bps=kbps * 1000) for m in models]
    packets = codecs[0].encode_packets(x)  # the encoder is the textbook coder's: no model in it
    return x, {m: c.decode_packets(packets)[: len(x)] for m, c in zip(models, codecs, strict=True)}


def _symbol_bits(symbols: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each symbol's ideal bits under its Laplace table (escapes included)."""
    from speechcodec.transform.laplace import ESCAPE_BITS, J_MIN, TABLES, _table_index

    TABLES._ready()
    j = index - J_MIN
    core = TABLES.core[j]
    escaped = (np.abs(symbols) > core) * (1 + ESCAPE_BITS)
    return TABLES.flat_bits[TABLES.offset[j] + _table_index(symbols, core)] + escaped


def _dead_zone(option: str) -> None:
    """Make the packet encoder quantise otherwise (``0``: as shipped, which since premise 3 is
    ``rd0.05<160``; the tables of docs/history.md were measured against plain rounding):
    ``0.1`` rounds each unit's magnitude less 0.1; ``rd0.1`` takes, of the rounded symbol and
    the one next to it towards zero, the one of least squared error (in steps) plus 0.1 x its
    bits."""
    from speechcodec.perceptual import packets
    from speechcodec.transform.quantiser import COEFFICIENT_OFFSET, MAX_SYMBOL, scale_index

    if not hasattr(packets, "_shipped"):
        packets._shipped = (packets._symbols, packets.estimated_bits)
    if option in ("0", "0.0"):
        packets._symbols, packets.estimated_bits = packets._shipped
        return
    option, _, below = option.partition("<")  # "rd0.05<80": only in the bins below 80 (2 kHz)
    below = int(below) if below else 320
    rd = option.startswith("rd")
    value = float(option[2:] if rd else option)

    def rounded(units, index):
        plain = np.clip(np.rint(units), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
        return np.where(np.arange(units.shape[-1]) < below, otherwise(units, index), plain)

    def otherwise(units, index):
        if rd:
            q0 = np.clip(np.rint(units), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
            q1 = q0 - np.sign(q0)
            j0 = (units - q0) ** 2 + value * _symbol_bits(q0, index)
            j1 = (units - q1) ** 2 + value * _symbol_bits(q1, index)
            return np.where(j1 < j0, q1, q0)
        magnitude = np.minimum(np.floor(np.abs(units) + 0.5 - value), MAX_SYMBOL)
        return (np.sign(units) * np.maximum(magnitude, 0)).astype(np.int64)

    def symbols(a, step):
        index = scale_index(a.index_base, step, COEFFICIENT_OFFSET)
        return rounded(a.normalised * 2.0 ** (-step / 64), index), index

    def estimated(a, codes):
        steps = 4 * np.asarray(codes)[:, None] - 512
        index = scale_index(a.index_base, steps, COEFFICIENT_OFFSET)
        units = a.normalised * np.exp2(-steps / 64.0)
        return a.energy_bits + packets.TABLES.bits_rows(rounded(units, index), index)

    packets._symbols, packets.estimated_bits = symbols, estimated


def _dead_zones(path: str, kbps: int, offsets: list[str]) -> tuple[np.ndarray, dict]:
    """(the original, pc's live packets decoded, the encoder's quantiser at each dead zone),
    with each variant's real kbps."""
    import soundfile as sf
    import torch

    import speechcodec

    torch.set_num_threads(1)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * RATE_HZ)]
    out = {}
    for option in ["0", *offsets]:
        offset, _, model = option.partition("@")  # QUANTISER@MODEL: another enhancer decodes
        codec = speechcodec.load(model or "pc", threads=1, bitrate_bps=kbps * 1000)
        _dead_zone(offset)
        packets = codec.encode_packets(x)
        kbps_real = sum(len(p) for p in packets) * 8 / (len(x) / RATE_HZ) / 1000
        out[f"quantiser {option}"] = (codec.decode_packets(packets)[: len(x)], kbps_real)
    _dead_zone("0")
    return x, out


def _intra(path: str, kbps: int, intervals: list[str]) -> tuple[np.ndarray, dict]:
    import soundfile as sf
    import torch

    import speechcodec

    torch.set_num_threads(1)
    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * RATE_HZ)]
    from speechcodec.perceptual.stream import loss_pattern

    out = {}
    for option in intervals:
        n, _, loss = option.partition("@")
        stream = codec.encode_packets(x, intra_interval=int(n))
        lost = loss_pattern(len(stream), float(loss or 0), zlib.crc32(path.encode()))
        name = f"intra every {n}" + (f", {float(loss):.0%} lost" if loss else "")
        heard = [None if gone else p for p, gone in zip(stream, lost, strict=True)]
        out[name] = codec.decode_packets(heard)[: len(x)]
    return x, out


LTP_LAGS = np.arange(40, 961)  # 2.5 to 60 ms
LTP_GAINS = 8  # levels from 0 to 1: 3 bits a band
LTP_LAG_BITS = 10


def _ltp(path: str, kbps: int, bins: int) -> dict:
    """Bits a frame of the first ``bins`` coefficients' symbols: as coded, with the best scale per
    band, and predicted from the decoded past in the ways below (each side information charged)."""
    import soundfile as sf
    import torch

    import speechcodec
    from speechcodec.perceptual import packets
    from speechcodec.transform.laplace import J_MAX, J_MIN, TABLES
    from speechcodec.transform.mdct import HOP, imdct, odft, odft_blocks
    from speechcodec.transform.quantiser import COEFFICIENT_OFFSET, gain, index_base, scale_index

    torch.set_num_threads(1)
    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float64")
    x = x[: int(MAX_S * RATE_HZ)]
    reads = [packets.read(p) for p in codec.encode_packets(x.astype(np.float32), intra_interval=1)]
    decoded = packets.dequantised(reads).coefficients
    spectra = odft(x).real
    frames = min(len(spectra), len(decoded))
    y = imdct(decoded[:frames], len(x))  # the textbook decoder's output: what both ends know
    edges = packets._EDGES[: int(np.searchsorted(packets._EDGES, bins)) + 1]
    widths = np.diff(edges)
    m = np.arange(2 * HOP)

    def bits(symbols, base, shift=True):
        """Ideal bits, band by band under the scale sent (``shift``: the best of -12..+4 more)."""
        total = 0.0
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            shifts = range(-12, 5) if shift else (0,)
            total += min(TABLES.bits(symbols[a:b], np.clip(base[a:b] + d, J_MIN, J_MAX)) for d in shifts)
        return total

    def predicted(start, lag, gains):  # the window's samples from the past before it, period lag
        block = y[start + m - (m // lag + 1) * lag]
        return np.repeat(gains, widths) * odft_blocks(block[None]).real[0, :bins]

    got = {k: 0.0 for k in ("as coded", "best scale a band", "free", "lag + a gain a band",
                            "lag + one gain", "from the past alone")}
    for t in range(4, frames):  # (the first frames have too little past)
        start = (t - 1) * HOP
        want = spectra[t, :bins]
        r = reads[t]
        level_qo = (r.levels * packets.SETTINGS.energy_step)[packets._BAND_OF_BIN][:bins]
        unit = gain(packets.SETTINGS, level_qo, r.step)
        base = scale_index(index_base(packets.SETTINGS, level_qo), r.step, COEFFICIENT_OFFSET)
        plain = bits(np.rint(want / unit).astype(np.int64), base)
        got["as coded"] += bits(np.rint(want / unit).astype(np.int64), base, shift=False)
        got["best scale a band"] += plain
        # every lag at once: each band's best gain, and the lag that leaves the least
        blocks = y[start + m[None] - (m[None] // LTP_LAGS[:, None] + 1) * LTP_LAGS[:, None]]
        past = odft_blocks(blocks).real[:, :bins]
        e = np.add.reduceat(want ** 2, edges[:-1])
        c = np.add.reduceat(past * want, edges[:-1], axis=1)
        p = np.add.reduceat(past ** 2, edges[:-1], axis=1) + 1e-12
        g = np.rint(np.clip(c / p, 0, 1) * (LTP_GAINS - 1)) / (LTP_GAINS - 1)
        k = int(np.argmax((widths / 2 * np.log2((e + 1e-9) / (e - 2 * g * c + g * g * p + 1e-9))).sum(1)))
        residual = bits(np.rint((want - np.repeat(g[k], widths) * past[k]) / unit).astype(np.int64), base)
        got["free"] += min(residual, plain)
        side = 1 + LTP_LAG_BITS + 3 * len(widths)
        got["lag + a gain a band"] += min(residual + side, plain + 1)
        one = np.rint(np.clip(c.sum(1) / p.sum(1), 0, 1) * (LTP_GAINS - 1)) / (LTP_GAINS - 1)
        k1 = int(np.argmax(2 * one * c.sum(1) - one * one * p.sum(1)))
        single = bits(np.rint((want - one[k1] * past[k1]) / unit).astype(np.int64), base)
        got["lag + one gain"] += min(single + 1 + LTP_LAG_BITS + 3, plain + 1)
        # backward: the lag of the 20 ms before, and each band's gain as it predicted the last
        # whole window (both ends can work these out): a bit a frame says whether to use it
        recent = y[start - HOP:start]
        lags = LTP_LAGS[LTP_LAGS <= HOP]
        before = np.stack([y[start - HOP - lag:start - lag] for lag in lags])
        r_ = before @ recent / (np.sqrt((before ** 2).sum(1) * (recent @ recent)) + 1e-12)
        lag = int(lags[np.argmax(r_)])
        last = odft_blocks(y[start - 2 * HOP:start][None]).real[0, :bins]
        guess = predicted(start - 2 * HOP, lag, np.ones(len(widths)))
        fit = np.add.reduceat(last * guess, edges[:-1]) / (np.add.reduceat(guess ** 2, edges[:-1]) + 1e-12)
        gains = np.clip(fit, 0, 1)
        back = bits(np.rint((want - predicted(start, lag, gains)) / unit).astype(np.int64), base)
        got["from the past alone"] += min(back + 1, plain + 1)
    return {k: v / (frames - 4) for k, v in got.items()}


def _job(job):
    from speechcodec.metrics import pesq_wb, visqol

    path, kbps, command, options = job
    if command == "ltp":
        return _ltp(path, kbps, int(options[0]))
    if command == "intra":
        x, variants = _intra(path, kbps, options)
        return {name: (pesq_wb(x, v.astype(np.float32)), visqol(x, v.astype(np.float32)))
                for name, v in variants.items()}
    if command == "deadzone":
        x, variants = _dead_zones(path, kbps, options)
        return {name: (pesq_wb(x, v.astype(np.float32)), visqol(x, v.astype(np.float32)), k)
                for name, (v, k) in variants.items()}
    if command == "lowbins":
        x, variants = _low_bins(path, kbps, int(options[0]))
        return {name: (pesq_wb(x, v.astype(np.float32)), visqol(x, v.astype(np.float32)))
                for name, v in variants.items()}
    if command == "models":
        x, variants = _models(path, kbps, options)
        return {name: (pesq_wb(x, v.astype(np.float32)), visqol(x, v.astype(np.float32)))
                for name, v in variants.items()}
    x, y = _coded(path, kbps)
    variants = {"bands": lambda: _bands(x, y), "postfilter": lambda: _postfilters(x, y, options),
                "comb": lambda: _combs(x, y), "lowcomb": lambda: _low_combs(y, options),
                "envelope": lambda: _envelopes(x, y), "bandwidth": lambda: _bandwidths(y, options)}[command]()
    return {name: (pesq_wb(x, v.astype(np.float32)), visqol(x, v.astype(np.float32)))
            for name, v in variants.items()}


def _file_symbols(job) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(symbols ``[T, 320]``, their grid indices, which packets are intra, the packets' bits) of a
    file's packets (an intra packet every 8) at ``kbps``."""
    path, kbps = job
    import soundfile as sf

    import speechcodec
    from speechcodec.perceptual import packets

    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float32")
    symbols, index, intra, bits, levels = [], [], [], 0.0, None
    for packet in codec.encode_packets(x[: int(MAX_S * RATE_HZ)], intra_interval=packets.FILE_INTRA_INTERVAL):
        r = packets.read(packet, levels)
        levels = r.levels
        index.append(packets.coefficient_index(r.levels, r.step))
        symbols.append(r.symbols)
        intra.append(r.intra)
        bits += 8 * len(packet)
    return np.array(symbols), np.array(index), np.array(intra), bits


CONTEXTS = {  # name: (contexts, the symbols they apply to: all, odd bins, inter packets)
    "the bin below": (4, "all"),
    "checkerboard (odd bins given both even neighbours)": (4, "odd"),
    "the frame before (the bin and its neighbours)": (5, "inter"),
    "the frame before and the bin below": (16, "inter"),
}


def _context(name: str, symbols: np.ndarray) -> np.ndarray:
    """Each symbol's context (int, the shape of ``symbols`` ``[T, 320]``) from symbols decoded before it."""
    a = np.abs(symbols)
    below = np.pad(a, ((0, 0), (1, 0)))[:, :-1]
    above = np.pad(a, ((0, 0), (0, 1)))[:, 1:]
    before = np.pad(a, ((1, 0), (0, 0)))[:-1]
    around = before + np.pad(before, ((0, 0), (1, 0)))[:, :-1] + np.pad(before, ((0, 0), (0, 1)))[:, 1:]
    if name == "the bin below":
        return np.minimum(below, 3)
    if name.startswith("checkerboard"):
        return np.minimum(below + above, 3)
    if name == "the frame before (the bin and its neighbours)":
        return np.minimum(around, 4)
    return 4 * np.minimum(around, 3) + np.minimum(below, 3)


def _applies(name: str, symbols: np.ndarray, intra: np.ndarray) -> np.ndarray:
    where = CONTEXTS[name][1]
    mask = np.zeros(symbols.shape, bool)
    if where == "all":
        mask[:] = True
    elif where == "odd":
        mask[:, 1::2] = True
    else:  # an inter packet's frame before is known whenever the packet can be decoded
        mask[~intra] = True
    return mask


def contexts(args, files: list[str]) -> None:
    """Bits a frame of the coefficients with each context's shifts (fitted on training speakers)."""
    from speechcodec.transform.laplace import J_MAX, J_MIN, TABLES

    train, _ = split_speakers(args.speech)
    fit_files = [str(sorted(s.glob("*.flac"))[0]) for s in train[:: max(1, len(train) // 40)]]
    print(f"contexts: shifts fitted on {len(fit_files)} training speakers, bits on {len(files)} held-out "
          f"files ({MAX_S:g} s; a file's packets, an intra packet every 8): coefficient bits a frame, ideal\n")
    print("| kbps | packet | as coded | " + " | ".join(CONTEXTS) + " |")
    print("|---|---|---|" + "---|" * len(CONTEXTS))
    for kbps in [int(k) for k in args.rates.split(",")]:
        with ProcessPoolExecutor(args.workers) as pool:
            fit = list(pool.map(_file_symbols, [(f, kbps) for f in fit_files]))
            held = list(pool.map(_file_symbols, [(f, kbps) for f in files]))
        frames = sum(len(h[0]) for h in held)
        base = sum(TABLES.bits(h[0], h[1]) for h in held) / frames
        cells = []
        for name, (count, _) in CONTEXTS.items():
            pooled = [(s[m], i[m], _context(name, s)[m])
                      for s, i, intra, _ in fit for m in [_applies(name, s, intra)]]
            sy, ix, cx = (np.concatenate(v) for v in zip(*pooled, strict=True))

            def best_shift(c, sy=sy, ix=ix, cx=cx):
                s, i = sy[cx == c], ix[cx == c]
                return min(range(-24, 25), key=lambda d: TABLES.bits(s, np.clip(i + d, J_MIN, J_MAX)))

            shift = np.array([best_shift(c) for c in range(count)])
            bits = 0.0
            for s, i, intra, _ in held:
                m = _applies(name, s, intra)
                moved = i.copy()
                moved[m] = np.clip(i[m] + shift[_context(name, s)[m]], J_MIN, J_MAX)
                bits += TABLES.bits(s, moved)
            saved = 100 * (bits / frames - base) / base
            cells.append(f"{bits / frames:.1f} ({saved:+.1f} %; shifts {shift.tolist()})")
        packet = sum(h[3] for h in held) / frames
        print(f"| {kbps} | {packet:.1f} | {base:.1f} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command",
                        choices=("bands", "postfilter", "comb", "deadzone", "models", "lowcomb", "envelope",
                                 "intra", "ltp", "contexts", "bandwidth", "lowbins"))
    parser.add_argument("--speech", type=Path, default=SHARED)
    parser.add_argument("--rates", default="12", help="kbps, comma-separated")
    parser.add_argument("--files", type=int, default=None, help="the first N held-out files only")
    parser.add_argument("--options", default=None,
                        help="postfilter: COMB/FORMANT strengths (default 0.2/0,0.4/0,0/0.2,0.2/0.2); models: "
                             "model names or files; bandwidth: Hz (default 3500,4000,5000,6000)")
    parser.add_argument("--bins", type=int, default=80,
                        help="ltp: the bins predicted; lowbins: the bins the oracles touch (80: below 2 kHz)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", type=Path, help="write each rate's per-file scores here (.npz)")
    args = parser.parse_args()
    if not args.speech.is_dir():
        sys.exit(f"{args.speech} is not a folder of speech (the shared training data)")
    _, held = split_speakers(args.speech)
    files = [str(sorted(s.glob("*.flac"))[0]) for s in held][: args.files]
    if args.command == "contexts":
        return contexts(args, files)
    for kbps in [int(k) for k in args.rates.split(",")]:
        given = args.options or DEFAULT_OPTIONS.get(args.command, DEFAULT_OPTIONS["postfilter"])
        options = [str(args.bins)] if args.command in ("ltp", "lowbins") else given.split(",")
        jobs = [(f, kbps, args.command, options) for f in files]
        with ProcessPoolExecutor(args.workers) as pool:
            got = list(pool.map(_job, jobs))
        if args.command == "ltp":
            print(f"\nltp: {len(files)} held-out files, {MAX_S:g} s, pc live at {kbps} kbps, the first "
                  f"{args.bins} bins: bits a frame (mean over files)\n")
            for name in got[0]:
                print(f"| {name} | {np.mean([g[name] for g in got]):.1f} |")
            continue
        names = list(got[0])
        scores = np.array([[g[n] for n in names] for g in got])  # [file, variant, metric]
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            np.savez(args.save / f"{args.command}-{kbps}kbps.npz", scores=scores, names=np.array(names),
                     files=np.array(files))
        print(f"\n{args.command}: {len(files)} held-out files, {MAX_S:g} s, pc live at {kbps} kbps\n")
        print("| variant | PESQ-WB | ViSQOL | files better (PESQ-WB, ViSQOL) |")
        print("|---|---|---|---|")
        for k, name in enumerate(names):
            better = (scores[:, k] > scores[:, 0]).sum(axis=0)
            kbps_real = f" ({scores[:, k, 2].mean():.2f} kbps)" if scores.shape[2] > 2 else ""
            print(f"| {name}{kbps_real} | {scores[:, k, 0].mean():.3f} | {scores[:, k, 1].mean():.3f} | "
                  f"{better[0]}, {better[1]} |", flush=True)


if __name__ == "__main__":
    main()
