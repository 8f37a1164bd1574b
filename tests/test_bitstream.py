"""The container and the range coder, without torch: round trips and every way bytes go bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from speechcodec.bitstream import (
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
    data[4] = 2
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
