"""The container and the range coder, without torch: round trips and every way bytes go bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from speechcodec.bitstream import (
    FORMAT_VERSION,
    RangeCoder,
    StreamHeader,
    read_stream,
    write_chunk,
    write_end,
    write_header,
)
from speechcodec.errors import (
    BitstreamError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)

HEADER = StreamHeader(model="m-1", fingerprint="0123456789abcdef", sample_rate_hz=16000,
                      num_samples=1000, samples_per_frame=80, code_channels=4, chunk_frames=8,
                      gain=2.5, source_sample_rate_hz=44100, source_num_samples=2757,
                      source_channels=2)


def laplace_pmf(channels: int, max_symbol: int, scales) -> np.ndarray:
    from speechcodec.entropy.factorized import counts_from_pmf

    k = np.arange(-max_symbol, max_symbol + 1)
    pmf = np.stack([np.exp(-np.abs(k) / s) for s in scales[:channels]])
    return counts_from_pmf(pmf, 16)


def make_stream(chunks=((8, b"\x01\x02\x03\x04"), (5, b"\xff" * 8))) -> bytes:
    out = io.BytesIO()
    write_header(out, HEADER)
    for frames, payload in chunks:
        write_chunk(out, frames, payload)
    write_end(out)
    return out.getvalue()


def test_container_round_trip():
    header, chunks = read_stream(io.BytesIO(make_stream()))
    assert header == HEADER
    got = [(c.index, c.num_frames, c.payload) for c in chunks]
    assert got == [(0, 8, b"\x01\x02\x03\x04"), (1, 5, b"\xff" * 8)]
    assert header.num_frames == 13


def test_flipped_bit_is_caught_and_located():
    data = bytearray(make_stream())
    chunk1 = data.rindex(b"\xff" * 8)  # inside chunk 1's payload
    for offset, expect in ((10, "header"), (chunk1 + 3, "chunk 1")):
        bad = bytearray(data)
        bad[offset] ^= 0x10
        with pytest.raises(BitstreamError, match=expect):
            _, chunks = read_stream(io.BytesIO(bytes(bad)))
            list(chunks)


def test_every_truncation_is_an_eof_error():
    data = make_stream()
    for cut in range(len(data)):
        with pytest.raises(BitstreamError) as info:
            _, chunks = read_stream(io.BytesIO(data[:cut]))
            list(chunks)
        assert isinstance(info.value, EOFError), (cut, info.value)
        assert isinstance(info.value, TruncatedBitstreamError)


def test_random_bytes_and_foreign_files_are_rejected():
    rng = np.random.default_rng(1)
    for size in (1, 3, 10, 100, 5000):
        with pytest.raises(BitstreamError):
            _, chunks = read_stream(io.BytesIO(rng.bytes(size)))
            list(chunks)
    with pytest.raises(BitstreamError, match="not a speechcodec stream"):
        read_stream(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEfmt "))
    # Random bytes behind a valid magic still fail on lengths or CRC, never hang.
    for seed in range(50):
        junk = np.random.default_rng(seed).bytes(200)
        with pytest.raises(BitstreamError):
            _, chunks = read_stream(io.BytesIO(b"SPCD\x01" + junk))
            list(chunks)


def test_future_version_is_refused_with_advice():
    data = bytearray(make_stream())
    data[4] = FORMAT_VERSION + 1
    with pytest.raises(UnsupportedVersionError, match="newer .* upgrade"):
        read_stream(io.BytesIO(bytes(data)))


def _with_header(**changes) -> bytes:
    """A stream whose header carries forged values but a valid CRC."""
    fields = {**HEADER.__dict__, **changes}
    h = StreamHeader.__new__(StreamHeader)
    for k, v in fields.items():
        object.__setattr__(h, k, v)
    body = h.to_bytes()
    head = b"SPCD" + bytes([1]) + struct.pack("<H", len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.parametrize("changes", [
    {"sample_rate_hz": 0}, {"num_samples": 0}, {"chunk_frames": 0}, {"samples_per_frame": 0},
    {"code_channels": 0}, {"gain": float("nan")}, {"num_samples": 2**62},
    {"source_channels": 0},
])
def test_forged_header_values_are_refused(changes):
    with pytest.raises(BitstreamError, match="stream header"):
        read_stream(io.BytesIO(_with_header(**changes)))


def test_extra_or_missing_frames_are_refused():
    with pytest.raises(BitstreamError, match="promises"):
        _, chunks = read_stream(io.BytesIO(make_stream(((8, b"\x00" * 4),))))
        list(chunks)
    with pytest.raises(BitstreamError, match="runs past"):
        _, chunks = read_stream(io.BytesIO(make_stream(((8, b"\0" * 4), (8, b"\0" * 4)))))
        list(chunks)
    with pytest.raises(BitstreamError, match="after the end record"):
        list(read_stream(io.BytesIO(make_stream() + b"x"))[1])


def test_range_coder_round_trip_and_estimate():
    rng = np.random.default_rng(0)
    pmf = laplace_pmf(4, 16, [0.5, 1.0, 2.0, 4.0])
    coder = RangeCoder(pmf)
    probs = pmf / pmf.sum(axis=1, keepdims=True)
    codes = np.stack([rng.choice(np.arange(-16, 17), size=4000, p=p) for p in probs])
    payload = coder.encode(codes)
    assert np.array_equal(coder.decode(payload, 4000), codes)
    estimate = coder.estimate_bits(codes)
    assert abs(len(payload) * 8 - estimate) <= 0.03 * estimate + 64


def test_range_coder_rejects_bad_input():
    coder = RangeCoder(laplace_pmf(2, 4, [1.0, 2.0]))
    with pytest.raises(ValueError, match="clip"):
        coder.encode(np.array([[0, 5], [0, 0]]))
    with pytest.raises(ValueError):
        coder.encode(np.zeros((3, 2), int))
    with pytest.raises(BitstreamError, match="aligned"):
        coder.decode(b"\x00\x01\x02", 2)
    # Garbage words decode to some symbols within range, quickly.
    out = coder.decode(np.random.default_rng(0).bytes(64), 1000)
    assert out.shape == (2, 1000) and np.abs(out).max() <= 4


def _bursty_codes(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    """Codes like speech's: runs of silent frames (all zero) between loud stretches."""
    rng = np.random.default_rng(seed)
    loud = np.repeat(rng.random(frames // 20 + 1) < 0.5, 20)[:frames]
    codes = np.round(rng.laplace(0, 3.0, (channels, frames))) * loud
    return np.clip(codes, -16, 16).astype(np.int64)


def _context_tables(codes: np.ndarray, max_symbol: int) -> np.ndarray:
    """Per channel and context tables fitted to ``codes`` (rows ``c * NUM_CONTEXTS + k``)."""
    from speechcodec.bitstream.context import NUM_CONTEXTS, frame_contexts
    from speechcodec.entropy.factorized import counts_from_pmf

    channels = codes.shape[0]
    counts = np.ones((channels * NUM_CONTEXTS, 2 * max_symbol + 1))
    rows = np.arange(channels)[:, None] * NUM_CONTEXTS + frame_contexts(codes)
    np.add.at(counts, (rows, codes + max_symbol), 1)
    return counts_from_pmf(counts, 16)


def test_context_coder_round_trips_and_pays_less_for_pauses():
    from speechcodec.bitstream.context import NUM_CONTEXTS
    from speechcodec.bitstream.rangecoder import CORE_MAX

    codes = _bursty_codes(6, 3000)
    codes[0, 5], codes[1, 6], codes[2, 7] = 16, -16, CORE_MAX + 1  # the table edges and first escape
    assert (np.abs(codes) > CORE_MAX).mean() > 0.01  # the escape pass is exercised
    coder = RangeCoder(_context_tables(codes, 16), NUM_CONTEXTS)
    payload = coder.encode(codes)
    assert np.array_equal(coder.decode(payload, codes.shape[1]), codes)
    estimate = coder.estimate_bits(codes)
    assert abs(len(payload) * 8 - estimate) <= 0.03 * estimate + 64
    # The best tables without contexts (each channel's own histogram) cost clearly more.
    from speechcodec.entropy.factorized import counts_from_pmf

    counts = np.ones((6, 33))
    np.add.at(counts, (np.arange(6)[:, None].repeat(3000, 1), codes + 16), 1)
    plain = RangeCoder(counts_from_pmf(counts, 16))
    assert len(payload) < 0.85 * len(plain.encode(codes))
    small = np.clip(codes, -4, 4)  # tables narrower than the core: no escape symbol at all
    narrow = RangeCoder(_context_tables(small, 4), NUM_CONTEXTS)
    assert np.array_equal(narrow.decode(narrow.encode(small), small.shape[1]), small)
    # Chunks are coded on their own: each starts from a frame of zeros, as the decoder does.
    for part in (codes[:, :1], codes[:, 1:40], np.zeros((6, 0), np.int64)):
        assert np.array_equal(coder.decode(coder.encode(part), part.shape[1]), part)


def test_context_coder_rejects_bad_tables_and_survives_garbage():
    from speechcodec.bitstream.context import NUM_CONTEXTS

    tables = _context_tables(_bursty_codes(3, 200), 16)
    with pytest.raises(ValueError, match="contexts"):
        RangeCoder(tables[:-1], NUM_CONTEXTS)
    with pytest.raises(ValueError, match="contexts"):
        RangeCoder(tables, 5)
    coder = RangeCoder(tables, NUM_CONTEXTS)
    # Garbage decodes to symbols within range or is rejected, quickly; it never hangs.
    for seed in range(20):
        try:
            out = coder.decode(np.random.default_rng(seed).bytes(64), 2000)
        except BitstreamError as exc:
            assert "rejected" in str(exc)
        else:
            assert out.shape == (3, 2000) and np.abs(out).max() <= 16


def test_contexts_follow_the_previous_frame():
    from speechcodec.bitstream.context import NUM_CONTEXTS, contexts_after, frame_contexts

    codes = np.array([[0, 5, -1, 0], [0, 0, 2, 0], [0, 0, 0, 0], [0, 0, -3, 0]])
    ctx = frame_contexts(codes)
    assert (ctx[:, 0] == 0).all()  # after silence (and before the first frame): context 0
    assert ctx[0, 1] == 0 and ctx[0, 2] == 3 * 4 + 2  # |5| -> level 3; 1 of 4 channels active (>= 1/4)
    assert ctx[0, 3] == 1 * 4 + 3  # |-1| -> level 1; 3 of 4 channels active (>= 1/2)
    assert np.array_equal(ctx[:, 2], contexts_after(codes[:, 1]))
    assert ctx.max() < NUM_CONTEXTS


def test_the_shortest_cut_is_worked_out_from_the_coders_state():
    """``shortest_cut`` gives, without decoding, what a search by decoding finds: the fewest bytes
    (the words cut short, or rounded up in their last byte) that decode to every symbol coded."""
    import constriction

    from speechcodec.bitstream.rangecoder import finish_cut, new_cut_decoder, new_encoder, shortest_cut

    rng = np.random.default_rng(3)
    model = constriction.stream.model.Categorical(np.array([0.6, 0.2, 0.1, 0.05, 0.05]), perfect=False)

    def decodes(candidate: bytes, symbols: np.ndarray) -> bool:
        try:
            return np.array_equal(new_cut_decoder(candidate).decode(model, len(symbols)), symbols)
        except Exception:
            return False

    shorter = 0
    for n in list(range(1, 40)) + [200, 1000]:
        for _ in range(8):
            symbols = rng.choice(5, size=n, p=[0.6, 0.2, 0.1, 0.05, 0.05]).astype(np.int32)
            encoder = new_encoder()
            encoder.encode(symbols, model)
            full = finish_cut(encoder)
            cut = shortest_cut(encoder, full)
            assert decodes(cut, symbols)
            shorter += len(cut) < len(full)
            # no shorter prefix decodes, as is or rounded up in its last byte
            for keep in range(max(1, len(full) - 4), len(cut)):
                head = full[:keep]
                up = int.from_bytes(head, "big") + 1
                assert not decodes(head, symbols)
                assert up >= 256 ** keep or not decodes(up.to_bytes(keep, "big"), symbols)
    assert shorter > 100  # the words' trailing bytes are mostly not needed
