"""One 20 ms frame of the perceptual family to a packet and back (numpy, no torch).

A packet is the codec's payload only, as an Opus packet is: what one 20 ms MDCT frame needs to
decode, range-coded, with no sequence number, length or check (those are the framing's,
:mod:`speechcodec.bitstream.pipe`). Its symbols, in one constriction range coder::

    kind: 1 bit (1: intra, its band energies coded within the frame; 0: inter, predicted from
          the frame before as well)
    step code: 8 bits (the quantiser step is 2**((4 * code - 512) / 64))
    the 16 band-energy residuals under fixed Laplace scales (one set for each kind)
    the 320 coefficients, as the textbook coder codes them (:mod:`speechcodec.transform.quantiser`)

The coder's 32-bit words are written big-endian and the packet is cut to the fewest bytes that
still decode to the same symbols (the decoder reads missing bytes as zeros; the encoder works
the cut out from the coder's last interval and checks it by decoding it once), so a packet is
as long as its range coder needs, not a whole number of words.

Band energies. An intra packet predicts each band from a fixed profile and, across frequency,
from the bands below it (closed loop). An inter packet predicts each band from the same band in
the frame before plus part of the change the bands below just made (the file stream's
predictor): 27.2 bits a frame on held-out speakers with an intra packet every 8, against 38.3
for intra only (``scripts/premise_stream.py inter``). But the coefficients' Laplace scales
follow the levels, so an inter packet whose frame before was lost cannot be decoded: read from
stale levels it decodes to noise (the loss table fell to 1.39 / 1.52 / 1.65 PESQ-WB at 5 % loss,
6 / 12 / 24 kbps, from 1.78 / 2.33 / 2.77; docs/history.md). So a decoder that lost a packet
conceals the inter packets after it until the next intra one (:func:`is_intra`), and the encoder
chooses how often it sends an intra packet, as Opus's encoder is told the loss to expect: every
:data:`STREAM_INTRA_INTERVAL` packets live (1: every packet, where losses are expected), every
:data:`FILE_INTRA_INTERVAL` in a file (no loss; a damaged page costs at most that many packets
more). Levels are held within the floor and ceiling any encoder writes, whatever a packet says.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import constriction
import numpy as np

from speechcodec.bitstream.rangecoder import finish_cut, new_cut_decoder, new_encoder, shortest_cut
from speechcodec.errors import BitstreamError
from speechcodec.perceptual.frames import DecodedChunk
from speechcodec.transform import bands
from speechcodec.transform.laplace import TABLES
from speechcodec.transform.quantiser import (
    COEFFICIENT_OFFSET,
    MAX_SYMBOL,
    TransformSettings,
    dequantise,
    gain,
    index_base,
    rd_bits_steps,
    rd_symbols,
    scale_index,
)

SETTINGS = TransformSettings()  # what every packet is coded with (the perceptual family's)
CODES = 256  # step codes: 8 bits
KIND_BITS, CODE_BITS = 1, 8
# An inter band's prediction: its anchor (:func:`_anchor`), plus INTER_BELOW8 eighths of how far
# the band below came from its own anchor and INTER_BELOW2_8 of the next (the file stream's shape).
INTER_PREVIOUS8, INTER_BELOW8, INTER_BELOW2_8 = 8, 5, 2
# The encoder's rounding (:func:`rounded`): below RD_BINS (25 Hz a bin), a symbol is taken one
# nearer zero where that saves more bits, at RD_BIT_WEIGHT squared steps a bit, than its squared
# error grows (:func:`speechcodec.transform.quantiser.rd_symbols`); the bits saved buy a finer
# step. The decoder does not know it. Chosen on held-out speakers (docs/history.md, 2026-12-07,
# issue 45 premise 3).
RD_BIT_WEIGHT = 0.05
RD_BINS = 160
# An intra packet every this many (see the module docstring): live, where packets get lost, every
# packet; in a file, every 8 (160 ms), which saves 11 bits a frame (docs/history.md, "inter
# packets in files").
STREAM_INTRA_INTERVAL, FILE_INTRA_INTERVAL = 1, 8
MAX_INTRA_INTERVAL = 250  # 5 s: the most an encoder may be asked for
# Fitted on 42 training speakers, none held out (``scripts/premise_stream.py energies``; energy
# steps of 6 dB, bark16): each band's median level, and the Laplace grid index that codes its
# residual (given the prediction from below) in the fewest bits.
LEVEL_PROFILE = np.array([-6, -5, -5, -6, -6, -7, -7, -8, -8, -8, -8, -8, -8, -9, -10, -11])
RESIDUAL_SCALES = np.array([7, 8, 3, 0, -2, 0, -3, -4, -4, 0, -1, -3, -2, -2, -2, -3])
# The same for inter packets (``scripts/premise_stream.py inter``).
INTER_SCALES = np.array([-8, -4, -5, -5, -6, -7, -8, -8, -8, -7, -8, -9, -8, -8, -9, -10])
_PROFILE = LEVEL_PROFILE.tolist()  # the same, as Python ints (read band by band)
_EDGES = np.asarray(bands.LAYOUTS[SETTINGS.layout])
_BAND_OF_BIN = bands.band_of_bin(bands.LAYOUTS[SETTINGS.layout])
_FLOOR = bands.floor_level(SETTINGS.energy_step)
_CEILING = bands.CEILING_QUARTER_OCTAVES // SETTINGS.energy_step
_SCALE_PLANS = {True: TABLES.plan(RESIDUAL_SCALES), False: TABLES.plan(INTER_SCALES)}  # by intra
_KIND = constriction.stream.model.Uniform(1 << KIND_BITS)
_CODE = constriction.stream.model.Uniform(CODES)


def step_of(code: int) -> int:
    """The quantiser step a step code stands for, in 64ths of an octave (-512 .. 508)."""
    return 4 * int(code) - 512


def _predicted(below: int, below2: int) -> int:
    """A band's predicted offset from its profile level: 3/4 of the band below's, 1/4 of the next."""
    return (6 * below + 2 * below2 + 4) >> 3


def _anchor(previous_offset: int) -> int:
    """An inter band's anchor: :data:`INTER_PREVIOUS8` eighths of its offset from its profile
    level in the frame before."""
    return (INTER_PREVIOUS8 * previous_offset + 4) >> 3


def quantise_levels(levels: np.ndarray, previous: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One frame's band levels (float quarter-octaves ``[16]``) to (int levels in energy steps,
    int residuals to code), closed loop: intra when ``previous`` (the frame before's int levels)
    is ``None``, else inter."""
    target = np.clip(np.asarray(levels) / SETTINGS.energy_step, _FLOOR, _CEILING).tolist()
    q, residual = np.empty(len(target), np.int64), np.empty(len(target), np.int64)
    predict = _predictor(previous)
    for b, want in enumerate(target):
        predicted = _PROFILE[b] + predict(b)
        value = bands.closed_loop_level(want, predicted, _FLOOR)
        residual[b], q[b] = value - predicted, value
        predict.took(b, value)
    return q, residual


def levels_from_residuals(residual: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """:func:`quantise_levels`'s inverse: int levels in energy steps ``[16]``."""
    q = []
    predict = _predictor(previous)
    for b, r in enumerate(residual.tolist()):
        q.append(_PROFILE[b] + predict(b) + r)
        predict.took(b, q[-1])
    return np.array(q, np.int64)


class _predictor:
    """The prediction of each band in turn, told what each band took (integers only)."""

    def __init__(self, previous: np.ndarray | None):
        self.previous = None if previous is None else (np.asarray(previous) - LEVEL_PROFILE).tolist()
        self.below = self.below2 = self.anchor = 0

    def __call__(self, b: int) -> int:
        if self.previous is None:
            return _predicted(self.below, self.below2)
        self.anchor = _anchor(self.previous[b])
        return self.anchor + ((INTER_BELOW8 * self.below + INTER_BELOW2_8 * self.below2 + 4) >> 3)

    def took(self, b: int, value: int) -> None:
        self.below, self.below2 = value - _PROFILE[b] - self.anchor, self.below


@dataclass
class FrameAnalysis:
    """One frame, everything but the step: what the rate control tries steps on."""

    intra: bool
    previous: np.ndarray | None  # int [16]: the levels an inter frame is predicted from
    levels: np.ndarray  # int [16] in energy steps
    residuals: np.ndarray  # int [16]
    normalised: np.ndarray  # [320]: the coefficients over their band's RMS**alpha
    index_base: np.ndarray  # int [320]
    energy_bits: float  # the kind, the step code and the residuals, if range coding were ideal


def band_levels(spectra: np.ndarray) -> np.ndarray:
    """float ``[T, 16]``: each frame's band levels (quarter-octaves) of MDCT frames ``[T, 320]``
    (row by row: the same as one frame at a time)."""
    return bands.band_levels(spectra, bands.LAYOUTS[SETTINGS.layout], 1)


def analyse(spectrum: np.ndarray, previous: np.ndarray | None = None, raw: np.ndarray | None = None
            ) -> FrameAnalysis:
    """One MDCT frame (``odft``'s, complex ``[320]``) ready to code: intra when ``previous``
    (the frame before's int levels) is ``None``, else inter. ``raw``: its :func:`band_levels`,
    if worked out already."""
    raw = band_levels(spectrum[None])[0] if raw is None else raw
    levels, residuals = quantise_levels(raw, previous)
    scales = RESIDUAL_SCALES if previous is None else INTER_SCALES
    level_qo = (levels * SETTINGS.energy_step)[_BAND_OF_BIN]
    return FrameAnalysis(previous is None, previous, levels, residuals,
                         spectrum.real / gain(SETTINGS, level_qo, 0), index_base(SETTINGS, level_qo),
                         KIND_BITS + CODE_BITS + TABLES.bits(residuals, scales))


def rounded(units: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The encoder's symbols of ``units`` (in quantiser steps, ``[..., 320]``) under their Laplace
    grid ``index``: rate-distortion rounding in the first :data:`RD_BINS` bins, plain above."""
    symbols = np.clip(np.rint(units), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    symbols[..., :RD_BINS] = rd_symbols(units[..., :RD_BINS], index[..., :RD_BINS], RD_BIT_WEIGHT)
    return symbols


def _symbols(a: FrameAnalysis, step: int) -> tuple[np.ndarray, np.ndarray]:
    index = scale_index(a.index_base, step, COEFFICIENT_OFFSET)
    return rounded(a.normalised * 2.0 ** (-step / 64), index), index


def payload_at(a: FrameAnalysis, code: int) -> bytes:
    """The packet of frame ``a`` at step code ``code``: as few bytes as decode to its symbols."""
    symbols, index = _symbols(a, step_of(code))
    plan = TABLES.plan(index)  # once, for the encoder and the check
    encoder = new_encoder()
    encoder.encode(np.array([int(a.intra)], np.int32), _KIND)
    encoder.encode(np.array([code], np.int32), _CODE)
    TABLES.encode(encoder, a.residuals, RESIDUAL_SCALES if a.intra else INTER_SCALES, _SCALE_PLANS[a.intra])
    TABLES.encode(encoder, symbols, index, plan)
    full = finish_cut(encoder)
    # the decoder needs the interval the last symbol left, not all of the coder's last word: the
    # shortest cut that still decodes, worked out from the coder's state and checked by decoding
    # it (were the check ever to fail, the whole words: never a packet that decodes otherwise)
    packet = shortest_cut(encoder, full)
    try:  # read as _symbols_of reads it, with the grid indices the encoder has already
        decoder = _decoder(packet)
        same = bool(decoder.decode(_KIND, 1)[0]) == a.intra and int(decoder.decode(_CODE, 1)[0]) == code \
            and np.array_equal(TABLES.decode(decoder, RESIDUAL_SCALES if a.intra else INTER_SCALES,
                                             _SCALE_PLANS[a.intra]), a.residuals) \
            and np.array_equal(TABLES.decode(decoder, index, plan), symbols)
    except Exception:  # a cut that does not decode (constriction raises plain exceptions)
        same = False
    return packet if same else full


def estimated_bits(a: FrameAnalysis, codes: np.ndarray) -> np.ndarray:
    """Each step code's packet size if range coding were ideal, in bits (``codes`` int ``[K]``)."""
    steps = 4 * np.asarray(codes) - 512
    band_index = scale_index(a.index_base[_EDGES[:-1]], steps[:, None], COEFFICIENT_OFFSET)
    return a.energy_bits + rd_bits_steps(np.abs(a.normalised), np.exp2(-steps / 64.0), band_index, _EDGES,
                                         RD_BIT_WEIGHT, RD_BINS)


def fitting_code(a: FrameAnalysis, budget_bytes: float, hint: int = CODES // 2, finest: int = 0,
                 bits=None) -> int:
    """The finest step code, ``finest`` or coarser, whose packet would fit ``budget_bytes`` if
    range coding were ideal (the coarsest when none does). ``hint``: where to look first;
    ``bits``: the estimates of a :class:`Sizes` (else computed)."""
    room_bits = 8 * budget_bytes - 2  # the coder's last interval takes a bit or two
    bits = bits or (lambda codes: estimated_bits(a, codes))

    def first_fitting(codes: np.ndarray) -> int | None:
        codes = codes[codes >= finest]
        if not len(codes):
            return None
        fits = bits(codes) <= room_bits
        return int(codes[np.argmax(fits)]) if fits.any() else None

    # sizes fall as codes grow: the 16 codes from the hint, else every 8th code, then its 8
    start = min(max(finest, hint - 8), CODES - 16)
    near = np.arange(start, start + 16)
    code = first_fitting(near)
    if code is None or (code == near[0] and code > finest):
        coarse = first_fitting(np.arange(7, CODES, 8))
        code = CODES - 1 if coarse is None else first_fitting(np.arange(coarse - 7, coarse + 1))
    return finest if code is None else code


class Sizes:
    """A frame's estimated packet sizes, worked out once a code: first at the step codes around
    ``center`` (one pass), then at whatever other codes :func:`fitting_code`'s questions ask."""

    SPAN = 40

    def __init__(self, a: FrameAnalysis, center: int):
        self.a = a
        self.known = np.full(CODES, np.nan)
        lo = min(max(center - self.SPAN // 2, 0), CODES - self.SPAN)
        self.known[lo:lo + self.SPAN] = estimated_bits(a, np.arange(lo, lo + self.SPAN))

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """Estimated bits at ``codes`` (within 0 .. 255): those not known yet in one pass."""
        codes = np.asarray(codes)
        missing = codes[np.isnan(self.known[codes])]
        if len(missing):
            self.known[missing] = estimated_bits(self.a, missing)
        return self.known[codes]

    def bits_at(self, code: int) -> float:
        return float(self(np.array([code]))[0])

    def fitting_code(self, budget_bytes: float, hint: int, finest: int = 0) -> int:
        """:func:`fitting_code` of this frame, the same answer, mostly from the span."""
        return fitting_code(self.a, budget_bytes, hint, finest, self)


def fit(a: FrameAnalysis, budget_bytes: int, hint: int = CODES // 2, finest: int = 0,
        code: int | None = None, sizes: Sizes | None = None) -> tuple[int, bytes]:
    """``(code, packet)``: the finest step code, ``finest`` or coarser, whose packet fits
    ``budget_bytes`` (the coarsest when none does). ``hint``: where to look first; ``code``: the
    code the estimates gave already; ``sizes``: the frame's :class:`Sizes`, if made already."""
    code = fitting_code(a, budget_bytes, hint, finest) if code is None else code
    packet = payload_at(a, code)
    while len(packet) > budget_bytes and code < CODES - 1:  # the estimate was a little short
        code += 1
        packet = payload_at(a, code)
    return code, packet


def _decoder(packet: bytes):
    """A range decoder over a packet's bytes (big-endian words; the bytes cut off read as zeros)."""
    return new_cut_decoder(packet)


def _symbols_of(packet: bytes, previous: np.ndarray | None):
    """(intra, code, residuals, symbols) of a packet; ``previous``: the int levels an inter
    packet is predicted from (the profile's when ``None``)."""
    decoder = _decoder(packet)
    intra = bool(decoder.decode(_KIND, 1)[0])
    code = int(decoder.decode(_CODE, 1)[0])
    residuals = TABLES.decode(decoder, RESIDUAL_SCALES if intra else INTER_SCALES, _SCALE_PLANS[intra])
    levels = levels_from_residuals(residuals, None if intra else _known(previous))
    # an encoder writes levels within these; an inter packet predicted from levels a loss made
    # stale (or a forged one) may say more, and is held to them
    levels = np.minimum(np.maximum(levels, _FLOOR), _CEILING)
    symbols = TABLES.decode(decoder, coefficient_index(levels, step_of(code)))
    return intra, code, residuals, symbols, levels


def coefficient_index(levels: np.ndarray, step: int) -> np.ndarray:
    """int ``[320]``: the Laplace grid index each coefficient of a packet is coded with, from its
    band levels (int ``[16]``, energy steps) and its step (64ths of an octave)."""
    level_qo = (np.asarray(levels) * SETTINGS.energy_step)[_BAND_OF_BIN]
    return scale_index(index_base(SETTINGS, level_qo), step, COEFFICIENT_OFFSET)


def is_intra(packet: bytes) -> bool:
    """Whether a packet is intra: decodable without the frame before it (its first symbol only).
    Raises :class:`BitstreamError` for a packet that is not bytes or does not decode."""
    try:
        return bool(_decoder(_as_bytes(packet)).decode(_KIND, 1)[0])
    except BitstreamError:
        raise
    except Exception as exc:  # constriction raises plain exceptions on invalid data
        raise BitstreamError(f"packet does not decode: {exc}") from None


def _as_bytes(packet) -> bytes:
    if not isinstance(packet, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a packet is bytes, got {type(packet).__name__}")
    return bytes(packet)


def _known(previous: np.ndarray | None) -> np.ndarray:
    return LEVEL_PROFILE if previous is None else previous


@dataclass
class Read:
    """What a packet says, range decoded (:func:`read`)."""

    intra: bool
    step: int  # 64ths of an octave
    levels: np.ndarray  # int [16] in energy steps, held within the floor and ceiling
    symbols: np.ndarray  # int [320]
    seed: int  # the noise fill's: the packet's CRC-32, so every decoder draws the same noise


def read(packet: bytes, previous: np.ndarray | None = None) -> Read:
    """A packet range decoded. ``previous``: the levels of the frame before (``None`` when the
    decoder does not know them: an inter packet is then predicted from the profile). Raises
    :class:`BitstreamError` for a packet that is not bytes or that no encoder could have written."""
    packet = _as_bytes(packet)
    try:
        intra, code, _, symbols, levels = _symbols_of(packet, previous)
    except BitstreamError:
        raise
    except Exception as exc:  # constriction raises plain exceptions on invalid data
        raise BitstreamError(f"packet does not decode: {exc}") from None
    return Read(intra, step_of(code), levels, symbols, zlib.crc32(packet))


def dequantised(reads: list[Read]) -> DecodedChunk:
    """Packets read to one :class:`DecodedChunk` of all their frames, a step each ``[T, 1]``: the
    same numbers as each packet's alone (:func:`unpack`), in one pass."""
    steps = np.array([[r.step] for r in reads])
    levels = np.array([r.levels for r in reads])
    return _chunk(steps, np.array([r.symbols for r in reads]), levels, [r.seed for r in reads])


def _chunk(step, symbols: np.ndarray, levels: np.ndarray, seeds) -> DecodedChunk:
    level_qo = (levels * SETTINGS.energy_step)[:, _BAND_OF_BIN]
    coefficients = dequantise(SETTINGS, symbols, level_qo, step, seed=seeds)
    return DecodedChunk(SETTINGS, step, symbols, level_qo, coefficients,
                        coefficients / gain(SETTINGS, level_qo, step), levels * SETTINGS.energy_step)


def frame_of(r: Read) -> DecodedChunk:
    """One packet read, dequantised: a :class:`DecodedChunk` of one frame, its step one int."""
    return _chunk(r.step, r.symbols[None], r.levels[None], r.seed)


def unpack(packet: bytes, previous: np.ndarray | None = None) -> tuple[DecodedChunk, np.ndarray, bool]:
    """``(the frame decoded, its int band levels, whether it is intra)``: :func:`read`, then
    :func:`frame_of`."""
    r = read(packet, previous)
    return frame_of(r), r.levels, r.intra
