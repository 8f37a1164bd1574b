"""A run of transform frames to symbols and one range-coded payload, and back (numpy, no torch):
what the textbook coder's stream and the older chunked ``pc`` files hold.

:func:`analyse` keeps everything but the step (MDCT frames, band energies quantised in closed
loop and their residuals, each coefficient over its band's RMS**alpha and its Laplace grid
index before the step), so a rate control can try steps cheaply; :func:`payload_at` codes the
energies' residuals and then the coefficients at one step; :func:`decode_payload` inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechcodec.bitstream.rangecoder import finish, new_decoder, new_encoder
from speechcodec.errors import BitstreamError
from speechcodec.transform import bands
from speechcodec.transform.laplace import TABLES
from speechcodec.transform.mdct import odft
from speechcodec.transform.quantiser import (
    COEFFICIENT_OFFSET,
    MAX_SYMBOL,
    TransformSettings,
    expand_levels,
    gain,
    index_base,
    scale_index,
)


@dataclass
class Analysis:
    """What an encoder keeps between rate-control trials: everything but the step."""

    num_samples: int
    normalised: np.ndarray  # [T, HOP]: the MDCT coefficients over their band's RMS**alpha
    index_base: np.ndarray  # int [T, HOP]: each coefficient's Laplace grid index before the step
    levels: np.ndarray  # int [E, B], in energy steps
    residuals: np.ndarray  # int [E, B]
    energy_scale: int
    energy_bits: float


def analyse(settings: TransformSettings, audio: np.ndarray) -> Analysis:
    """:func:`analyse_spectrum` of ``audio`` (16 kHz mono)."""
    return analyse_spectrum(settings, odft(audio), len(audio))


def analyse_spectrum(settings: TransformSettings, spectrum: np.ndarray, num_samples: int) -> Analysis:
    """What :func:`payload_at` needs, from MDCT frames (``odft``'s, ``[T, HOP]``): any run of
    frames codes on its own, its band energies predicted from nothing before it."""
    s = settings
    levels, residuals = bands.quantise_levels(
        bands.band_levels(spectrum, bands.LAYOUTS[s.layout], s.energy_frames), s.energy_step)
    energy_scale = bands.residual_scale(residuals)
    bits = TABLES.bits(residuals, np.full(residuals.shape, energy_scale))
    level_qo = expand_levels(s, levels, len(spectrum))
    return Analysis(num_samples, spectrum.real / gain(s, level_qo, 0), index_base(s, level_qo),
                    levels, residuals, energy_scale, bits)


def quantise(analysis: Analysis, step: int, offset: int = COEFFICIENT_OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """The symbols at quantiser ``step`` and their Laplace grid indices."""
    symbols = np.rint(analysis.normalised * 2.0 ** (-step / 64))
    symbols = np.clip(symbols, -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    return symbols, scale_index(analysis.index_base, step, offset)


def payload_at(analysis: Analysis, step: int, offset: int = COEFFICIENT_OFFSET) -> bytes:
    """The range-coded energies and coefficients at quantiser ``step``."""
    symbols, index = quantise(analysis, step, offset)
    encoder = new_encoder()
    TABLES.encode(encoder, analysis.residuals, np.full(analysis.residuals.shape, analysis.energy_scale))
    TABLES.encode(encoder, symbols, index)
    return finish(encoder)


def decode_payload(payload: bytes, settings: TransformSettings, energy_scale: int, offset: int, step: int,
                   frames: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`payload_at`'s inverse for ``frames`` MDCT frames: (int symbols ``[T, HOP]``, each
    coefficient's band level in quarter-octaves ``[T, HOP]``). Energies beyond any encoder's
    ceiling are refused; below its floor they are held to it."""
    edges = bands.LAYOUTS[settings.layout]
    groups = -(-frames // settings.energy_frames)
    try:
        decoder = new_decoder(payload)
        residuals = TABLES.decode(decoder, np.full((groups, len(edges) - 1), energy_scale))
        levels = bands.levels_from_residuals(residuals, settings.energy_step)
        if levels.size and levels.max() * settings.energy_step > bands.CEILING_QUARTER_OCTAVES:
            raise BitstreamError("band energies beyond any encoder's ceiling")
        # and none below the floor an encoder writes (far below it a band's step would be zero)
        levels = np.maximum(levels, bands.floor_level(settings.energy_step))
        level_qo = expand_levels(settings, levels, frames)
        symbols = TABLES.decode(decoder, scale_index(index_base(settings, level_qo), step, offset))
    except BitstreamError:
        raise
    except Exception as exc:  # constriction raises plain exceptions on invalid data
        raise BitstreamError(f"transform payload does not decode: {exc}") from None
    return symbols, level_qo
