"""The perceptual family's older chunked files (container format 3), read only (numpy, no torch).

Payload of one chunk (inside the container's CRC-checked record)::

    step i16 (64ths of an octave) | energy scale i8 | coefficient scale i8 | layout u8
    | energy step u8 (quarter-octaves) | alpha u8 (sixteenths) | noise fill u8 (sixteenths)
    | the range-coded band-energy residuals, then the coefficients
      (:func:`speechcodec.transform.payload.payload_at`)

A chunk's band energies are predicted from nothing before it, so every chunk decodes on its
own. A chunk of ``F`` code frames holds ``F`` MDCT frames, the stream's last chunk one more (the
MDCT's frames overlap by half: ``N`` samples need ``ceil(N / 320) + 1``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from speechcodec.errors import BitstreamError, SpeechCodecError
from speechcodec.transform import bands
from speechcodec.transform.laplace import J_MAX, J_MIN
from speechcodec.transform.payload import decode_payload
from speechcodec.transform.quantiser import STEP_RANGE, TransformSettings, dequantise, gain

_HEAD = struct.Struct("<hbbBBBB")
HEAD_BYTES = _HEAD.size  # 8: the payload stays 32-bit aligned


@dataclass(frozen=True)
class DecodedChunk:
    """What a chunk holds, dequantised: the textbook decoder's spectrum and what the network reads."""

    settings: TransformSettings
    step: int  # 64ths of an octave
    symbols: np.ndarray  # int [T, 320]
    level_qo: np.ndarray  # int [T, 320]: each coefficient's band level in quarter-octaves
    coefficients: np.ndarray  # [T, 320]: the textbook decoder's, noise fill included
    units: np.ndarray  # [T, 320]: the same over each coefficient's quantiser step
    band_levels_qo: np.ndarray  # int [T, B]


def decode_chunk(payload: bytes, frames: int) -> DecodedChunk:
    """A chunk of ``frames`` MDCT frames of the older layout (container format 3), decoded."""
    if len(payload) < HEAD_BYTES:
        raise BitstreamError("perceptual chunk is shorter than its own header")
    step, escale, offset, layout, estep, alpha16, noise16 = _HEAD.unpack_from(payload)
    names = list(bands.LAYOUTS)
    if layout >= len(names) or not STEP_RANGE[0] <= step <= STEP_RANGE[1] or not J_MIN <= escale <= J_MAX:
        raise BitstreamError("perceptual chunk header holds values no encoder writes")
    try:
        settings = TransformSettings(names[layout], estep, 1, alpha16, noise16)
    except SpeechCodecError:
        raise BitstreamError("perceptual chunk header holds values no encoder writes") from None
    symbols, level_qo = decode_payload(payload[HEAD_BYTES:], settings, escale, offset, step, frames)
    coefficients = dequantise(settings, symbols, level_qo, step)
    edges = np.asarray(bands.LAYOUTS[settings.layout])
    return DecodedChunk(settings, step, symbols, level_qo, coefficients,
                        coefficients / gain(settings, level_qo, step), level_qo[:, edges[:-1]])


def empty_bands(symbols: np.ndarray, layout: str) -> np.ndarray:
    """bool ``[T, 320]``: the coefficients of every band that quantised to all zeros (the noise
    fill's bands)."""
    edges = np.asarray(bands.LAYOUTS[layout])
    nonzero = np.add.reduceat(symbols != 0, edges[:-1], axis=-1)
    return np.repeat(nonzero == 0, np.diff(edges), axis=-1)
