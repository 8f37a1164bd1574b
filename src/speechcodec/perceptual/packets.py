"""One 20 ms frame of the perceptual family to a packet and back (numpy, no torch).

A packet is what a live link carries: one MDCT frame, self-contained for a decoder that has seen
the packets before it, and decodable even when it has not (its band energies are coded within
the frame, never from the frame before, so a decoder recovers at the first good packet after a
loss). Layout::

    sequence number u8 (mod 256) | step code u8 (quantiser step 2**((4 * code - 512) / 64))
    | check u8 (the low byte of a CRC32 over the model's fingerprint, the two bytes before it
      and the payload: a damaged packet, or one of another model, is caught 255 times in 256)
    | payload: the words of one constriction range coder (u32 little-endian): the 16 band-energy
      residuals under fixed Laplace scales, then the 320 coefficients as the textbook coder
      codes them (:mod:`speechcodec.baselines.transform`)

A frame's band energies are predicted from a fixed profile and, across frequency, from the
bands below it in the same frame (closed loop, as :func:`speechcodec.transform.bands.quantise_levels`
does over time). On the 23 held-out speakers that costs 38.3 bits a frame, against 25.9 + 8 for
the file stream's prediction from the frame before plus a scale byte per packet: 0.2 kbps for a
stream that survives loss (``scripts/premise_stream.py energies``).

The rate control is per packet: the finest step whose packet fits the bytes allowed
(:func:`speechcodec.perceptual.stream.packet_budget_bytes`: ``bitrate x 20 ms``, plus up to 3
that earlier packets left unused, as the range coder writes 4-byte words). Below 6 kbps the
energies alone may not fit; such a packet takes the coarsest step and goes over.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from speechcodec.baselines.transform import (
    MAX_SYMBOL,
    TransformCodec,
    TransformSettings,
    _gain,
    _index_base,
    _scale_index,
    dequantise,
)
from speechcodec.errors import BitstreamError
from speechcodec.perceptual.frames import DecodedChunk
from speechcodec.transform import bands
from speechcodec.transform.laplace import TABLES, finish, new_decoder, new_encoder

HEAD_BYTES = 3
SETTINGS = TransformSettings()  # what every packet is coded with (the perceptual family's)
COEFFICIENT_OFFSET = TransformCodec.coefficient_offset
CODES = 256
# Fitted on 42 training speakers, none held out (``scripts/premise_stream.py energies``; energy
# steps of 6 dB, bark16): each band's median level, and the Laplace grid index that codes its
# residual (given the prediction from below) in the fewest bits.
LEVEL_PROFILE = np.array([-6, -5, -5, -6, -6, -7, -7, -8, -8, -8, -8, -8, -8, -9, -10, -11])
RESIDUAL_SCALES = np.array([7, 8, 3, 0, -2, 0, -3, -4, -4, 0, -1, -3, -2, -2, -2, -3])
_EDGES = np.asarray(bands.LAYOUTS[SETTINGS.layout])
_BAND_OF_BIN = bands.band_of_bin(bands.LAYOUTS[SETTINGS.layout])
_FLOOR = bands.floor_level(SETTINGS.energy_step)
_CEILING = bands.CEILING_QUARTER_OCTAVES // SETTINGS.energy_step
_CHECK = struct.Struct("<BB")


def step_of(code: int) -> int:
    """The quantiser step a step code stands for, in 64ths of an octave (-512 .. 508)."""
    return 4 * int(code) - 512


def quantise_levels(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame's band levels (float quarter-octaves ``[16]``) to (int levels in energy steps,
    int residuals to code), closed loop across frequency from :data:`LEVEL_PROFILE`."""
    target = np.clip(np.asarray(levels) / SETTINGS.energy_step, _FLOOR, _CEILING).tolist()
    q, residual = np.empty(len(target), np.int64), np.empty(len(target), np.int64)
    below = below2 = 0
    for b, want in enumerate(target):
        predicted = int(LEVEL_PROFILE[b]) + _predicted(below, below2)
        value = bands.closed_loop_level(want, predicted, _FLOOR)
        residual[b], q[b] = value - predicted, value
        below, below2 = value - int(LEVEL_PROFILE[b]), below
    return q, residual


def levels_from_residuals(residual: np.ndarray) -> np.ndarray:
    """:func:`quantise_levels`'s inverse: int levels in energy steps ``[16]``."""
    q = np.empty(len(residual), np.int64)
    below = below2 = 0
    for b, r in enumerate(residual.tolist()):
        q[b] = int(LEVEL_PROFILE[b]) + _predicted(below, below2) + r
        below, below2 = int(q[b] - LEVEL_PROFILE[b]), below
    return q


def _predicted(below: int, below2: int) -> int:
    """A band's predicted offset from its profile level: 3/4 of the band below's, 1/4 of the next."""
    return (6 * below + 2 * below2 + 4) >> 3


@dataclass
class FrameAnalysis:
    """One frame, everything but the step: what the rate control tries steps on."""

    levels: np.ndarray  # int [16] in energy steps
    residuals: np.ndarray  # int [16]
    normalised: np.ndarray  # [320]: the coefficients over their band's RMS**alpha
    index_base: np.ndarray  # int [320]
    energy_bits: float


def analyse(spectrum: np.ndarray) -> FrameAnalysis:
    """One MDCT frame (``odft``'s, complex ``[320]``) ready to code."""
    levels, residuals = quantise_levels(bands.band_levels(spectrum[None], tuple(_EDGES), 1)[0])
    level_qo = (levels * SETTINGS.energy_step)[_BAND_OF_BIN]
    return FrameAnalysis(levels, residuals, spectrum.real / _gain(SETTINGS, level_qo, 0),
                         _index_base(SETTINGS, level_qo), TABLES.bits(residuals, RESIDUAL_SCALES))


def _symbols(a: FrameAnalysis, step: int) -> tuple[np.ndarray, np.ndarray]:
    symbols = np.clip(np.rint(a.normalised * 2.0 ** (-step / 64)), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    return symbols, _scale_index(a.index_base, step, COEFFICIENT_OFFSET)


def payload_at(a: FrameAnalysis, code: int) -> bytes:
    symbols, index = _symbols(a, step_of(code))
    encoder = new_encoder()
    TABLES.encode(encoder, a.residuals, RESIDUAL_SCALES)
    TABLES.encode(encoder, symbols, index)
    return finish(encoder)


def estimated_bits(a: FrameAnalysis, codes: np.ndarray) -> np.ndarray:
    """Each step code's payload size if range coding were ideal, in bits (``codes`` int ``[K]``)."""
    steps = 4 * np.asarray(codes)[:, None] - 512
    symbols = np.rint(a.normalised * np.exp2(-steps / 64.0)).astype(np.int64)
    np.clip(symbols, -MAX_SYMBOL, MAX_SYMBOL, out=symbols)
    return a.energy_bits + TABLES.bits_rows(symbols, _scale_index(a.index_base, steps, COEFFICIENT_OFFSET))


def fit(a: FrameAnalysis, budget_bytes: int, hint: int = CODES // 2) -> tuple[int, bytes]:
    """``(code, payload)``: the finest step code whose packet fits ``budget_bytes`` (the coarsest
    when none does). ``hint``: where to look first (the last packet's code)."""
    room_bits = 8 * ((budget_bytes - HEAD_BYTES) // 4 * 4) - 2  # the coder's flush takes a bit or two

    def first_fitting(codes: np.ndarray) -> int | None:
        fits = estimated_bits(a, codes) <= room_bits
        return int(codes[np.argmax(fits)]) if fits.any() else None

    # sizes fall as codes grow: the 16 codes around the hint, else every 8th code, then its 8
    near = np.arange(max(0, hint - 8), min(CODES, hint + 8))
    code = first_fitting(near)
    if code is None or code == near[0] != 0:
        coarse = first_fitting(np.arange(7, CODES, 8))
        code = CODES - 1 if coarse is None else first_fitting(np.arange(coarse - 7, coarse + 1))
    payload = payload_at(a, code)
    while HEAD_BYTES + len(payload) > budget_bytes and code < CODES - 1:  # the estimate was a word short
        code += 1
        payload = payload_at(a, code)
    return code, payload


def pack(seq: int, code: int, payload: bytes, fingerprint: bytes) -> bytes:
    head = _CHECK.pack(seq & 0xFF, code)
    return head + bytes((zlib.crc32(payload, zlib.crc32(head, zlib.crc32(fingerprint))) & 0xFF,)) + payload


def unpack(packet: bytes, fingerprint: bytes) -> tuple[int, DecodedChunk]:
    """``(sequence number, the frame decoded)``; a packet that is cut, damaged or of another
    model raises :class:`BitstreamError`."""
    if not isinstance(packet, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a packet is bytes, got {type(packet).__name__}")
    packet = bytes(packet)
    if len(packet) < HEAD_BYTES + 4 or (len(packet) - HEAD_BYTES) % 4:
        raise BitstreamError(f"a packet of {len(packet)} bytes is cut or padded (packets are 3 + 4k bytes)")
    seq, code = _CHECK.unpack_from(packet)
    payload = packet[HEAD_BYTES:]
    if zlib.crc32(payload, zlib.crc32(packet[:2], zlib.crc32(fingerprint))) & 0xFF != packet[2]:
        raise BitstreamError("packet is damaged or of another model (check byte mismatch)")
    step = step_of(code)
    try:
        decoder = new_decoder(payload)
        levels = levels_from_residuals(TABLES.decode(decoder, RESIDUAL_SCALES))
        if levels.max() > _CEILING or levels.min() < _FLOOR:
            raise BitstreamError("packet's band energies lie beyond what any encoder writes")
        level_qo = (levels * SETTINGS.energy_step)[_BAND_OF_BIN][None]
        index = _scale_index(_index_base(SETTINGS, level_qo), step, COEFFICIENT_OFFSET)
        symbols = TABLES.decode(decoder, index)
    except BitstreamError:
        raise
    except Exception as exc:  # constriction raises plain exceptions on invalid data
        raise BitstreamError(f"packet does not decode: {exc}") from None
    coefficients = dequantise(SETTINGS, symbols, level_qo, step, seed=seq)
    return seq, DecodedChunk(SETTINGS, step, symbols, level_qo, coefficients,
                             coefficients / _gain(SETTINGS, level_qo, step),
                             (levels * SETTINGS.energy_step)[None])
