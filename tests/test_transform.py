"""The transform frame (MDCT, band energies, Laplace tables) and the textbook transform coder."""

from __future__ import annotations

import hashlib
import math
import struct
import zlib

import numpy as np
import pytest

from conftest import SPEECH_DIR, synth_speech
from speechcodec.baselines.transform import (
    HEADER_BYTES,
    MAGIC,
    VERSION,
    TransformCodec,
    TransformSettings,
    decode,
)
from speechcodec.bitstream import rangecoder
from speechcodec.errors import (
    BitstreamError,
    ChecksumError,
    SpeechCodecError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)
from speechcodec.transform import bands, laplace
from speechcodec.transform.mdct import HOP, imdct, mdct, num_frames, odft


def _speech(seconds: float = 4.0) -> np.ndarray:
    """Real speech when the shared data is here, else the synthetic stand-in."""
    import soundfile as sf

    path = SPEECH_DIR / "vctk_p232_002_16k.wav"
    if path.exists():
        audio, rate = sf.read(path, dtype="float32")
        assert rate == 16000
        return audio
    return synth_speech(seconds, seed=7)


# -- MDCT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 319, 320, 321, 16000, 16000 * 3 + 17])
def test_mdct_reconstructs_perfectly(length):
    x = np.random.default_rng(length).standard_normal(length)
    c = mdct(x)
    assert c.shape == (num_frames(length), HOP)
    np.testing.assert_allclose(imdct(c, length), x, atol=1e-11)
    assert (c ** 2).sum() == pytest.approx((x ** 2).sum(), rel=1e-10)  # orthogonal (TDAC)


def test_mdct_is_the_textbook_formula_with_a_sine_window():
    x = np.random.default_rng(0).standard_normal(5 * HOP)
    n, n0 = 2 * HOP, (HOP + 1) / 2
    window = np.sin(np.pi * (np.arange(n) + 0.5) / n)
    padded = np.concatenate([np.zeros(HOP), x, np.zeros(2 * HOP)])
    k, m = np.arange(HOP)[:, None], np.arange(n)[None, :]
    basis = np.cos(np.pi / HOP * (m + n0) * (k + 0.5))
    for t in (0, 3, 5):
        block = padded[t * HOP: t * HOP + n] * window
        np.testing.assert_allclose(mdct(x)[t], np.sqrt(2 / HOP) * basis @ block, atol=1e-10)
    np.testing.assert_allclose(odft(x).real, mdct(x))


# -- band energies ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", list(bands.LAYOUTS))
def test_layouts_cover_every_bin_once(layout):
    edges = bands.LAYOUTS[layout]
    assert edges[0] == 0 and edges[-1] == HOP and all(a < b for a, b in zip(edges, edges[1:], strict=False))
    assert 16 <= len(edges) - 1 <= 21


def test_band_levels_measure_a_tone_in_its_band():
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 1100 * t)  # 1.1 kHz: bin 43.5, band [40, 48) of bark16
    edges = bands.LAYOUTS["bark16"]
    levels = bands.band_levels(odft(tone), edges, 1)[5:-5]
    loudest = np.argmax(levels.mean(axis=0))
    assert edges[loudest] <= 40 < edges[loudest + 1]
    # Its power, 0.5**2 / 2 a sample, is a frame's 320 samples' worth spread over the band's 8
    # bins; the level is 4 log2 of the RMS (quarter-octaves), 2 log2 of the power.
    expected = 2 * np.log2(0.125 * HOP / 8)
    assert levels[:, loudest].mean() == pytest.approx(expected, abs=0.3)


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_energy_levels_round_trip_through_their_residuals(step):
    levels = bands.band_levels(odft(_speech()), bands.LAYOUTS["bark16"], 2)
    q, residual = bands.quantise_levels(levels, step)
    np.testing.assert_array_equal(bands.levels_from_residuals(residual, step), q)
    floor = bands.floor_level(step)
    assert q.min() >= floor
    # Closed loop: each level within half a step plus the dead zone of its target.
    miss = np.abs(q - np.maximum(levels / step, floor))
    assert miss.max() <= 0.5 + bands.DEAD_ZONE + 1e-9


# -- Laplace tables -----------------------------------------------------------------------------
def test_table_maths_is_exact_and_matches_the_library():
    for x in np.linspace(-30, 30, 241):
        assert laplace._exp(float(x)) == pytest.approx(math.exp(x), rel=1e-14)  # a few ulps
    for j in range(laplace.J_MIN, laplace.J_MAX + 1):
        assert laplace.scale(j) == pytest.approx(2 ** (j / 8), rel=1e-15)
    assert laplace.scale(16) == 4.0 and laplace.scale(-8) == 0.5  # powers of two exactly


def test_the_tables_never_change():
    """Streams depend on every count: a change here breaks old streams (bump the format version)."""
    digest = hashlib.sha256()
    for j in range(laplace.J_MIN, laplace.J_MAX + 1):
        digest.update(laplace._counts(j).astype("<i8").tobytes())
    assert digest.hexdigest()[:16] == TABLES_DIGEST


TABLES_DIGEST = "ef0b8154c8eeb3c7"


def test_laplace_coding_round_trips_with_escapes_and_costs_what_it_estimates():
    rng = np.random.default_rng(0)
    index = rng.integers(-30, 70, size=20000)
    scales = np.array([laplace.scale(int(j)) for j in index])
    symbols = np.rint(rng.laplace(0, scales)).astype(np.int64)
    symbols[:4] = [50000, -8000, laplace.MAX_CORE + 1, -(laplace.MAX_CORE + 2)]  # escaped
    encoder = rangecoder.new_encoder()
    laplace.TABLES.encode(encoder, symbols, index)
    data = rangecoder.finish(encoder)
    np.testing.assert_array_equal(laplace.TABLES.decode(rangecoder.new_decoder(data), index), symbols)
    assert len(data) * 8 == pytest.approx(laplace.TABLES.bits(symbols, index), abs=64)
    # A plan worked out once codes and decodes as the index does
    plan = laplace.TABLES.plan(index)
    planned = rangecoder.new_encoder()
    laplace.TABLES.encode(planned, symbols, index, plan)
    assert rangecoder.finish(planned) == data
    np.testing.assert_array_equal(laplace.TABLES.decode(rangecoder.new_decoder(data), index, plan), symbols)
    # An escape costs the same whatever its sign, in the lowest table too.
    for j in (laplace.J_MIN, 0, laplace.J_MAX):
        beyond = int(laplace.TABLES.core[j - laplace.J_MIN]) + 5
        assert laplace.TABLES.bits(np.array([beyond]), np.array([j])) == \
            laplace.TABLES.bits(np.array([-beyond]), np.array([j]))
    # The ideal cost is near the source's entropy: the tables fit a Laplace.
    assert laplace.TABLES.bits(symbols, index) / len(symbols) < 1.02 * _laplace_entropy(scales)
    with pytest.raises(ValueError, match="escape"):
        laplace.TABLES.encode(rangecoder.new_encoder(), np.array([1 << 20]), np.array([0]))


def test_rate_distortion_rounding_trades_error_for_bits_one_symbol_at_a_time():
    from speechcodec.transform.quantiser import rd_symbols

    rng = np.random.default_rng(1)
    index = rng.integers(-16, 40, size=50000)
    units = rng.laplace(0, np.array([laplace.scale(int(j)) for j in index]))
    rounded = np.rint(units).astype(np.int64)
    np.testing.assert_array_equal(rd_symbols(units, index, 0.0), rounded)  # weight 0: plain rounding
    chosen = rd_symbols(units, index, 0.1)
    moved = chosen != rounded
    assert 0.01 < moved.mean() < 0.5
    # only ever one step towards zero, and only where that lowers error + weight x bits
    np.testing.assert_array_equal(chosen[moved], rounded[moved] - np.sign(rounded[moved]))

    def cost(q):
        return (units - q) ** 2 + 0.1 * laplace.TABLES.symbol_bits(q, index)

    other = np.where(moved, rounded, rounded - np.sign(rounded))  # the choice not taken
    assert np.all(cost(chosen) <= cost(other) + 1e-9)
    assert laplace.TABLES.bits(chosen, index) < 0.99 * laplace.TABLES.bits(rounded, index)
    assert np.all(laplace.TABLES.symbol_bits(chosen, index) <= laplace.TABLES.symbol_bits(rounded, index))
    # symbol_bits is bits() one symbol at a time, escapes included
    few, at = np.array([0, 3, -2, 70000]), np.array([0, 5, -3, 0])
    assert laplace.TABLES.symbol_bits(few, at).sum() == pytest.approx(laplace.TABLES.bits(few, at))


def test_the_bits_at_many_steps_are_those_of_the_symbols_rounded_at_each():
    """``rd_bits_steps`` (the rate control's estimate at K steps in one pass, bins that round to
    zero counted per band) equals ``bits`` of the symbols ``rd_symbols`` and plain rounding make."""
    from speechcodec.transform.quantiser import rd_bits_steps, rd_symbols

    rng = np.random.default_rng(2)
    edges = np.array([0, 4, 10, 20, 40, 80, 160, 240, 320])
    band = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
    for trial in range(20):
        magnitude = np.abs(rng.laplace(0, 1, 320)) * np.exp2(rng.uniform(-4, 6, len(edges) - 1))[band]
        magnitude[edges[trial % 8]:edges[trial % 8 + 1]] = 0.0  # a silent band
        if trial == 3:
            magnitude[5] = 9e4  # beyond MAX_SYMBOL
        gains = np.exp2(-np.arange(12) / 4.0 + rng.uniform(-2, 2))
        band_index = rng.integers(-10, 30, size=(len(gains), len(edges) - 1))
        bins, weight = (0, 100, 160, 320)[trial % 4], (0.0, 0.05, 0.2)[trial % 3]
        got = rd_bits_steps(magnitude, gains, band_index, edges, weight, bins)
        for k, g in enumerate(gains):
            units, index = magnitude * g, band_index[k, band]
            symbols = np.clip(np.rint(units), -60000, 60000).astype(np.int64)
            symbols[:bins] = rd_symbols(units[:bins], index[:bins], weight)
            assert got[k] == pytest.approx(laplace.TABLES.bits(symbols, index), rel=1e-12)
    silent = rd_bits_steps(np.zeros(320), np.ones(2), np.zeros((2, 8), np.int64), edges, 0.05, 160)
    assert silent[0] == pytest.approx(laplace.TABLES.bits(np.zeros(320, np.int64), np.zeros(320, np.int64)))


def _laplace_entropy(scales: np.ndarray) -> float:
    """Mean entropy in bits of a rounded Laplace at each scale (numerically)."""
    total = 0.0
    for b in scales[:2000]:
        k = np.arange(-int(40 * b) - 5, int(40 * b) + 6)
        def cdf(x, b=b):
            return np.where(x < 0, 0.5 * np.exp(x / b), 1 - 0.5 * np.exp(-x / b))

        p = cdf(k + 0.5) - cdf(k - 0.5)
        p = p[p > 0]
        total += -(p * np.log2(p)).sum()
    return total / min(len(scales), 2000)


# -- the codec ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bps", [6000, 12000, 24000])
def test_rate_control_meets_the_target_from_the_bytes(bps):
    audio = _speech()
    codec = TransformCodec(bps)
    data = codec.encode(audio, 16000)
    real = len(data) * 8 / (len(audio) / 16000)
    assert real == pytest.approx(bps, rel=0.03)
    assert codec.payload_bytes(data) == len(data)  # every byte counts, header included
    # The energies' side rate is reported, part of the total, and costs at most about 1.5 kbps.
    side = codec.last_energy_bits / (len(audio) / 16000)
    assert 100 < side < min(1500, real / 2)
    decoded, rate = decode(data)
    assert rate == 16000 and decoded.dtype == np.float32 and len(decoded) == len(audio)
    snr = 10 * np.log10((audio ** 2).sum() / ((audio - decoded) ** 2).sum())
    assert snr > {6000: 3, 12000: 8, 24000: 14}[bps]


def test_more_bits_give_a_closer_copy_and_the_same_bytes_every_time():
    audio = _speech()
    errors = []
    for bps in (6000, 12000, 24000, 48000):
        data = TransformCodec(bps).encode(audio, 16000)
        assert TransformCodec(bps).encode(audio, 16000) == data
        errors.append(float(((decode(data)[0] - audio) ** 2).mean()))
    assert errors == sorted(errors, reverse=True)


def test_the_noise_follows_the_envelope():
    """Dividing by the band RMS**alpha puts more noise in loud bands, less in quiet ones."""
    audio = _speech()
    spectra = {}
    for alpha16 in (0, 8):
        data = TransformCodec(12000, TransformSettings(alpha16=alpha16, noise_fill16=0)).encode(audio, 16000)
        noise = mdct(decode(data)[0]) - mdct(audio)
        spectra[alpha16] = noise
    signal = mdct(audio) ** 2
    loud = signal > np.quantile(signal, 0.99)
    quiet = (signal < np.quantile(signal, 0.5)) & (signal > 0)
    ratio = {a: (n[loud] ** 2).mean() / (n[quiet] ** 2).mean() for a, n in spectra.items()}
    assert ratio[8] > 4 * ratio[0]


def test_noise_filling_fills_bands_that_quantise_to_zero():
    """Every band of a frame that quantises to all zeros, where the input had sound, gets noise;
    true silence stays silent."""
    audio = _speech()
    edges = np.asarray(bands.LAYOUTS["bark16"])

    def band_rms(x: np.ndarray) -> np.ndarray:  # [T, B]
        return np.sqrt(np.add.reduceat(mdct(x) ** 2, edges[:-1], axis=1) / np.diff(edges))

    rms = {}
    for fill in (0, 8):
        decoded, _ = decode(TransformCodec(6000, TransformSettings(noise_fill16=fill)).encode(audio, 16000))
        rms[fill] = band_rms(decoded)
    original = band_rms(audio)
    nothing = 1e-6  # float32 output re-analysed: a band coded as zeros comes back near 1e-8
    empty = (rms[0] < nothing) & (original > 1e-4)  # quantised to nothing where there was sound
    assert empty.mean() > 0.1  # at 6 kbps many bands do
    assert (rms[8][empty] > nothing).mean() > 0.99
    # The noise stays below the band's own level (half its RMS, at most half a step).
    assert np.median(rms[8][empty] / original[empty]) < 1
    silence = original == 0
    if silence.any():
        assert (rms[8][silence] < nothing).all()


def test_any_input_rate_channels_and_length():
    stereo = np.stack([synth_speech(1.0, 44100, seed=1), synth_speech(1.0, 44100, seed=2)], axis=1)
    decoded, rate = decode(TransformCodec(12000).encode(stereo, 44100))
    assert rate == 16000 and len(decoded) == 16000
    for n in (0, 1, 319, 321):
        decoded, _ = decode(TransformCodec(12000).encode(np.zeros(n, np.float32), 16000))
        assert len(decoded) == n and not decoded.any()
    with pytest.raises(SpeechCodecError, match="NaN"):
        TransformCodec(12000).encode(np.full(100, np.nan), 16000)
    with pytest.raises(SpeechCodecError, match="positive"):
        TransformCodec(0)
    with pytest.raises(SpeechCodecError, match="layout"):
        TransformSettings(layout="mel40")


def test_every_setting_travels_in_the_stream():
    audio = synth_speech(2.0, seed=3)
    for settings in (TransformSettings(), TransformSettings("uniform20", 2, 1, 6, 0),
                     TransformSettings("bark20", 4, 2, 10, 12)):
        data = TransformCodec(16000, settings).encode(audio, 16000)
        decoded, _ = decode(data)  # no settings given: the header says them
        assert 10 * np.log10((audio ** 2).sum() / ((audio - decoded) ** 2).sum()) > 5


# -- the stream ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stream() -> bytes:
    return TransformCodec(12000).encode(synth_speech(1.0, seed=5), 16000)


def test_every_cut_is_a_truncation(stream):
    for cut in range(len(stream)):
        with pytest.raises(BitstreamError) as info:
            decode(stream[:cut])
        if cut >= 4:  # shorter than the magic: not recognisable as ours at all
            assert isinstance(info.value, TruncatedBitstreamError) and isinstance(info.value, EOFError)
    with pytest.raises(BitstreamError, match="after its end"):
        decode(stream + b"\0")


def test_every_damaged_byte_is_caught(stream):
    for pos in range(len(stream)):
        damaged = bytearray(stream)
        damaged[pos] ^= 0x10
        with pytest.raises(BitstreamError):
            decode(bytes(damaged))


def test_foreign_and_future_streams_are_refused_in_one_line(stream):
    for foreign in (b"", b"RIFF\0\0\0\0WAVEfmt ", b"SPCD\x01" + bytes(40), np.random.default_rng(0).bytes(500)):
        with pytest.raises(BitstreamError, match="not a transform-baseline stream") as info:
            decode(foreign)
        assert "\n" not in str(info.value)
    future = _forge(stream, version=VERSION + 1)
    with pytest.raises(UnsupportedVersionError, match="newer .* upgrade"):
        decode(future)
    with pytest.raises(ChecksumError):
        decode(stream[:HEADER_BYTES - 4] + b"\0\0\0\0" + stream[HEADER_BYTES:])


def _forge(stream: bytes, **changes) -> bytes:
    """The stream with header fields changed and a valid CRC: what a crafted file could hold."""
    from speechcodec.baselines.transform import _HEAD

    names = ["magic", "version", "layout", "energy_step", "energy_frames", "alpha16", "noise_fill16",
             "energy_scale", "coefficient_offset", "step", "samples", "payload_bytes"]
    fields = dict(zip(names, _HEAD.unpack_from(stream), strict=True))
    fields.update(changes)
    head = _HEAD.pack(*(fields[n] for n in names))
    payload = stream[HEADER_BYTES:]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_forged_headers_and_random_payloads_never_crash_or_hang(stream):
    """Fuzz: any header value with a valid CRC, and random payloads, give audio or one error."""
    rng = np.random.default_rng(2)
    limits = {"layout": (0, 255), "energy_step": (0, 255), "energy_frames": (0, 255), "alpha16": (0, 255),
              "noise_fill16": (0, 255), "energy_scale": (-128, 127), "coefficient_offset": (-128, 127),
              "step": (-32768, 32767), "samples": (0, 20 * 16000)}
    for trial in range(300):
        name = list(limits)[trial % len(limits)]
        forged = _forge(stream, **{name: int(rng.integers(*limits[name], endpoint=True))})
        if trial % 3 == 0:  # and a random payload of a random length behind it
            payload = rng.bytes(int(rng.integers(0, 64)) * 4)
            forged = _forge(forged[:HEADER_BYTES] + payload, payload_bytes=len(payload))
        try:
            audio, rate = decode(forged)
        except BitstreamError as error:
            assert "\n" not in str(error)
        else:
            assert rate == 16000 and np.isfinite(audio).all() and np.abs(audio).max() <= 1
    assert MAGIC == stream[:4]


def test_huge_claims_are_refused_before_allocating(stream):
    with pytest.raises(BitstreamError, match="no encoder writes"):
        decode(_forge(stream, samples=2 ** 32 - 1))
