"""A textbook transform coder: what a coder without a network does at the same rate.

MDCT (20 ms hop, 40 ms sine window) -> band energies, coded as side information -> each band's
coefficients divided by its decoded RMS**alpha (so the quantisation noise follows the speech's
envelope over frequency and time: the noise shaping of CELT's band energies) -> one uniform
quantiser step for the whole file -> range coding under a Laplace whose scale follows the band's
decoded energy (:mod:`speechcodec.transform.laplace`) -> optional noise filling of bands that
quantise to all zeros. A rate control finds the step that meets the target from the bytes.

Stream (little-endian), everything counted in the rate::

    magic "SCTB" | version u8 | layout u8 | energy step u8 (quarter-octaves) | energy frames u8
    | alpha u8 (sixteenths) | noise fill u8 (sixteenths) | energy scale i8 | coefficient scale i8
    | step i16 (64ths of an octave) | samples u32 | payload bytes u32
    | CRC32 u32 of all before it and the payload
    | payload: one range-coded stream of the energy residuals, then the coefficients

Every parameter the decoder needs is in the header, so a stream decodes without knowing the
settings that made it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import soxr

from speechcodec.audio import as_mono, check_finite
from speechcodec.errors import (
    BitstreamError,
    ChecksumError,
    SpeechCodecError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)
from speechcodec.transform import bands, payload
from speechcodec.transform.laplace import J_MAX, J_MIN, TABLES
from speechcodec.transform.mdct import HOP, imdct, num_frames
from speechcodec.transform.payload import Analysis, decode_payload  # noqa: F401  (decode_payload: this module's API too)
from speechcodec.transform.quantiser import (  # noqa: F401  (STEP_RANGE, MAX_SYMBOL, dequantise: this module's API too)
    COEFFICIENT_OFFSET,
    MAX_SYMBOL,
    STEP_RANGE,
    TransformSettings,
    dequantise,
    expand_levels,
    gain,
    index_base,
    scale_index,
)

SAMPLE_RATE_HZ = 16000
MAGIC = b"SCTB"
VERSION = 1
_HEAD = struct.Struct("<4sBBBBBBbbhII")
HEADER_BYTES = _HEAD.size + 4  # and the CRC32
MAX_SAMPLES = SAMPLE_RATE_HZ * 3600  # one hour a stream: bounds what a crafted header can allocate
RATE_TOLERANCE = 0.03


class TransformCodec:
    """The textbook transform coder at a target bitrate; ``name`` says so, e.g. ``transform-12000bps``.

    ``encode`` finds the quantiser step whose stream is nearest ``bitrate_bps`` (the whole stream,
    header included, over the input's duration), so :meth:`payload_bytes` is the stream's size.
    """

    sample_rate_hz = SAMPLE_RATE_HZ
    coefficient_offset = COEFFICIENT_OFFSET

    def __init__(self, bitrate_bps: int, settings: TransformSettings | None = None):
        self.bitrate_bps = int(bitrate_bps)
        if self.bitrate_bps <= 0:
            raise SpeechCodecError(f"bitrate must be positive, got {bitrate_bps}")
        self.settings = settings or TransformSettings()
        self.name = f"transform-{self.bitrate_bps}bps"
        self.last_energy_bits = 0.0  # side information of the last stream encoded, in bits

    # -- encoder --------------------------------------------------------------------------
    def analyse(self, audio: np.ndarray) -> Analysis:
        return payload.analyse(self.settings, audio)

    def analyse_spectrum(self, spectrum: np.ndarray, num_samples: int) -> Analysis:
        """:func:`speechcodec.transform.payload.analyse_spectrum` with this coder's settings."""
        return payload.analyse_spectrum(self.settings, spectrum, num_samples)

    def _quantise(self, a: Analysis, step: int) -> tuple[np.ndarray, np.ndarray]:
        return payload.quantise(a, step, self.coefficient_offset)

    def estimate_bits(self, a: Analysis, step: int) -> float:
        """The stream's size at quantiser ``step`` if range coding were ideal (it is within bytes)."""
        symbols, index = self._quantise(a, step)
        return 8 * HEADER_BYTES + a.energy_bits + TABLES.bits(symbols, index)

    def find_step(self, a: Analysis, target_bits: float) -> int:
        """The step whose estimated size is nearest ``target_bits`` (sizes fall as steps grow)."""
        low, high = STEP_RANGE
        sizes: dict[int, float] = {}

        def size(step: int) -> float:
            if step not in sizes:
                sizes[step] = self.estimate_bits(a, step)
            return sizes[step]

        # Secant steps through the last two sizes, kept inside the bracket [low, high] that
        # bisection would keep (and bisecting when the secant leaves it or repeats itself).
        previous, step = None, 0
        while high - low > 1:
            got = size(step)
            if got > target_bits:
                low = step
            else:
                high = step
            if previous is not None and sizes[previous] != got:
                guess = step + (target_bits - got) * (step - previous) / (got - sizes[previous])
            else:  # a first step of a quarter octave towards the target
                guess = step + (16 if got > target_bits else -16)
            nxt = int(round(guess))
            if not low < nxt < high or nxt in sizes:
                nxt = (low + high) // 2
            if high - low <= 1 or nxt in sizes:
                break
            previous, step = step, nxt
        candidates = [s for s in (low, high) if STEP_RANGE[0] <= s <= STEP_RANGE[1]]
        return min(candidates, key=lambda s: abs(size(s) - target_bits))

    def payload_at(self, a: Analysis, step: int) -> bytes:
        """The range-coded energies and coefficients at quantiser ``step`` (no header)."""
        return payload.payload_at(a, step, self.coefficient_offset)

    def encode_at(self, a: Analysis, step: int) -> bytes:
        s = self.settings
        payload = self.payload_at(a, step)
        head = _HEAD.pack(MAGIC, VERSION, bands.LAYOUT_IDS[s.layout], s.energy_step, s.energy_frames,
                          s.alpha16, s.noise_fill16, a.energy_scale, self.coefficient_offset, step,
                          a.num_samples, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(head))
        self.last_energy_bits = a.energy_bits
        return head + struct.pack("<I", crc) + payload

    def encode(self, audio: np.ndarray, sample_rate: int) -> bytes:
        mono = as_mono(audio)
        check_finite(mono)
        if sample_rate != SAMPLE_RATE_HZ:
            mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ).astype(np.float32)
        if len(mono) > MAX_SAMPLES:
            raise SpeechCodecError(f"the transform baseline codes at most {MAX_SAMPLES // SAMPLE_RATE_HZ} s "
                                   "a stream; split the audio")
        a = self.analyse(mono)
        return self.code(a, self.bitrate_bps * max(len(mono), 1) / SAMPLE_RATE_HZ, self.encode_at)[1]

    def code(self, a: Analysis, target_bits: float, make=None) -> tuple[int, bytes]:
        """``(step, make(a, step))`` for the step whose bytes come nearest ``target_bits``
        (``make``: :meth:`payload_at` unless given; its size must be what the target counts)."""
        make = make or self.payload_at
        step = self.find_step(a, target_bits)
        data = make(a, step)
        # The estimate is ideal coding; the real stream is within a few bytes of it. Nudge the
        # step while the real size is further from the target than the next step's would be.
        for _ in range(4):
            miss = len(data) * 8 - target_bits
            if abs(miss) <= RATE_TOLERANCE * target_bits / 2:
                break
            nudged = min(max(step + (1 if miss > 0 else -1), STEP_RANGE[0]), STEP_RANGE[1])
            other = make(a, nudged)
            if abs(len(other) * 8 - target_bits) >= abs(miss):
                break
            step, data = nudged, other
        return step, data

    def payload_bytes(self, data: bytes) -> int:
        """The whole stream, header included: what the bitrate is computed from."""
        _parse(data)
        return len(data)

    # -- decoder --------------------------------------------------------------------------
    def decode(self, data: bytes) -> tuple[np.ndarray, int]:
        return decode(data)


def _parse(data: bytes) -> tuple[TransformSettings, tuple, bytes]:
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not a transform-baseline stream (no SCTB magic)")
    if len(data) < HEADER_BYTES:
        raise TruncatedBitstreamError(f"transform-baseline stream cut short: {len(data)} bytes, "
                                      f"its header alone has {HEADER_BYTES}")
    head = _HEAD.unpack_from(data)
    _, version, layout, estep, eframes, alpha16, noise16, escale, coffset, step, samples, size = head
    if version > VERSION:
        raise UnsupportedVersionError(f"transform-baseline stream of a newer format version ({version}; this "
                                      f"release reads {VERSION}): upgrade speechcodec")
    if version != VERSION:
        raise BitstreamError(f"transform-baseline stream of an unknown format version ({version})")
    (crc,) = struct.unpack_from("<I", data, _HEAD.size)
    payload = data[HEADER_BYTES:]
    if len(payload) < size:
        raise TruncatedBitstreamError(f"transform-baseline stream cut short: {len(payload)} of its "
                                      f"{size} payload bytes")
    if len(payload) > size:
        raise BitstreamError(f"transform-baseline stream has {len(payload) - size} bytes after its end")
    if zlib.crc32(payload, zlib.crc32(data[:_HEAD.size])) != crc:
        raise ChecksumError("transform-baseline stream is damaged or cut short (CRC32 mismatch)")
    names = list(bands.LAYOUTS)
    if layout >= len(names) or samples > MAX_SAMPLES or not STEP_RANGE[0] <= step <= STEP_RANGE[1] \
            or not J_MIN <= escale <= J_MAX:
        raise BitstreamError("transform-baseline stream header holds values no encoder writes")
    try:
        settings = TransformSettings(names[layout], estep, eframes, alpha16, noise16)
    except SpeechCodecError:
        raise BitstreamError("transform-baseline stream header holds values no encoder writes") from None
    return settings, (escale, coffset, step, samples), payload


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a :class:`TransformCodec` stream: float32 audio at 16 kHz."""
    settings, symbols, level_qo, step, samples = decode_symbols(data)
    audio = imdct(dequantise(settings, symbols, level_qo, step), samples, HOP)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), SAMPLE_RATE_HZ


def decode_symbols(data: bytes) -> tuple[TransformSettings, np.ndarray, np.ndarray, int, int]:
    """What a stream holds before synthesis: (settings, int symbols ``[T, HOP]``, each
    coefficient's band level in quarter-octaves ``[T, HOP]``, the step, the samples)."""
    settings, (energy_scale, offset, step, samples), data_payload = _parse(data)
    symbols, level_qo = payload.decode_payload(data_payload, settings, energy_scale, offset, step,
                                               num_frames(samples, HOP))
    return settings, symbols, level_qo, step, samples
