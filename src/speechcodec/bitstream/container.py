"""The speechcodec file format: magic, version, binary header, CRC-checked chunks, end marker.

Layout (all integers little-endian; docs/format.md says the same at more length)::

    offset  size  field
    0       4     magic b"SPCD"
    4       1     format version (3; versions 1 and 2 are read too)
    5       2     header length H, u16 (53 + L .. 1024; 49 + L in version 2, 47 + L in 1)
    7       H     header:
                    u32 sample_rate_hz        the model's rate
                    u64 num_samples           at sample_rate_hz, before padding to whole frames
                    u16 samples_per_frame     samples per code frame
                    u16 code_channels         symbols per code frame
                    u32 chunk_frames          code frames per chunk (the last may be shorter)
                    f32 gain                  encoder scaled the audio by this; decoder divides
                    u32 source_sample_rate_hz rate of the audio given to the encoder
                    u64 source_num_samples    its length at that rate
                    u16 source_channels       its channel count (mixed to mono)
                    u8  L, then L bytes       model name, UTF-8
                    8 bytes                   model fingerprint (SHA-256 prefix of weights,
                                              tables and config)
                    u8  postfilter_comb       comb strength in hundredths, 0..100 (version 2)
                    u8  postfilter_formant    formant strength in hundredths, 0..100 (version 2)
                    u32 bitrate_bps           the rate the encoder was asked for: it picks the
                                              step of a model that codes every rate (the
                                              perceptual family); 0 for a one-rate model (version 3)
    7+H     4     CRC32 of bytes 0 .. 7+H
    then one record per chunk, in time order:
            4     num_frames F, u32: code frames in this chunk (1 .. chunk_frames)
            4     payload length P, u32, a multiple of 4
            P     range-coded payload (constriction RangeEncoder words, u32 little-endian)
            4     CRC32 of the F, P and payload bytes of this record
    and last an end record: F = 0, P = 0, then its CRC32.

What a chunk's payload holds is the model family's (``speechcodec.model.family``): the
autoencoders' range-coded codes, or the perceptual family's transform frames.

Chunks are coded independently, so a reader holds one chunk at a time and a damaged byte is
pinned to one chunk. A stream without its end record is truncated. Every header field is range
checked before use, so a forged stream cannot make a reader allocate or loop without bound.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from speechcodec.errors import (
    BitstreamError,
    ChecksumError,
    TruncatedBitstreamError,
    UnsupportedVersionError,
)

MAGIC = b"SPCD"
# 2 added the postfilter strengths (version 1 streams decode with it off); 3 the bitrate asked for
FORMAT_VERSION = 3
MAX_HEADER_BYTES = 1024
MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ = 1000, 384_000  # what a stream can record
MAX_DURATION_S = 7 * 24 * 3600  # a week: anything larger is a forged header, not speech
# The most audio a chunk's payload byte may stand for, in samples at the model's rate: 4 times what
# any encoder here writes (an autoencoder's silence: about 1,100), so the output is in proportion
# to the input whatever a header or a chunk claims.
MAX_SAMPLES_PER_BYTE = 4096
_PREFIX = struct.Struct("<4sBH")
# sample_rate_hz, num_samples, samples_per_frame, code_channels, chunk_frames, gain,
# source_sample_rate_hz, source_num_samples, source_channels, model name length
_HEADER = struct.Struct("<IQHHIfIQHB")
_RECORD = struct.Struct("<II")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class StreamHeader:
    """What a decoder needs before the first chunk. Units are in the names."""

    model: str  # name of the model that wrote the stream
    fingerprint: str  # 16 hex digits (8 bytes): hash of that model's weights, tables, config
    sample_rate_hz: int  # the model's rate; codes describe audio at this rate
    num_samples: int  # samples at sample_rate_hz, before padding to whole frames
    samples_per_frame: int  # samples at sample_rate_hz per code frame
    code_channels: int  # symbols per code frame
    chunk_frames: int  # code frames per chunk (the last chunk may be shorter)
    gain: float  # the encoder multiplied the audio by this before coding; decoding divides
    source_sample_rate_hz: int  # rate of the audio given to the encoder
    source_num_samples: int  # its length in samples at that rate
    source_channels: int  # its channel count (it was mixed to mono)
    # the decoder's postfilter strengths in hundredths (0..100; both 0 in version 1 streams)
    postfilter_comb_pct: int = 0
    postfilter_formant_pct: int = 0
    bitrate_bps: int = 0  # the rate asked of a model that codes every rate (0: one-rate models, versions 1-2)

    @property
    def num_frames(self) -> int:
        return -(-self.num_samples // self.samples_per_frame)

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz

    def to_bytes(self, version: int = FORMAT_VERSION) -> bytes:
        name = self.model.encode("utf-8")
        tail = bytes((self.postfilter_comb_pct, self.postfilter_formant_pct)) if version >= 2 else b""
        if version >= 3:
            tail += struct.pack("<I", self.bitrate_bps)
        return (_HEADER.pack(self.sample_rate_hz, self.num_samples, self.samples_per_frame,
                             self.code_channels, self.chunk_frames, self.gain,
                             self.source_sample_rate_hz, self.source_num_samples,
                             self.source_channels, len(name))
                + name + bytes.fromhex(self.fingerprint) + tail)

    @classmethod
    def from_bytes(cls, raw: bytes, version: int = FORMAT_VERSION) -> StreamHeader:
        tail = {1: 0, 2: 2}.get(version, 6)  # the postfilter bytes (and the bitrate) after the fingerprint
        if len(raw) < _HEADER.size + 8 + tail:
            raise BitstreamError("stream header is too short")
        (rate, n, spf, channels, chunk, gain, src_rate, src_n, src_ch,
         name_len) = _HEADER.unpack_from(raw)
        if len(raw) != _HEADER.size + name_len + 8 + tail:
            raise BitstreamError("stream header length does not match its model name length")
        end = _HEADER.size + name_len + 8
        comb_pct, formant_pct = (raw[end], raw[end + 1]) if tail else (0, 0)
        (bitrate,) = struct.unpack_from("<I", raw, end + 2) if tail == 6 else (0,)
        try:
            name = raw[_HEADER.size:_HEADER.size + name_len].decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError("stream header model name is not UTF-8") from None
        header = cls(model=name, fingerprint=raw[end - 8: end].hex(), sample_rate_hz=rate, num_samples=n,
                     samples_per_frame=spf, code_channels=channels, chunk_frames=chunk,
                     gain=gain, source_sample_rate_hz=src_rate, source_num_samples=src_n,
                     source_channels=src_ch, postfilter_comb_pct=comb_pct,
                     postfilter_formant_pct=formant_pct, bitrate_bps=bitrate)
        header.validate()
        return header

    def validate(self) -> None:
        """Reject values no honest encoder writes, so a forged header cannot exhaust memory."""

        def bad(msg: str) -> BitstreamError:
            return BitstreamError(f"stream header: {msg}")

        for name in ("sample_rate_hz", "source_sample_rate_hz"):
            if not MIN_SAMPLE_RATE_HZ <= getattr(self, name) <= MAX_SAMPLE_RATE_HZ:
                raise bad(f"{name}={getattr(self, name)} is out of range")
        if not 1 <= self.samples_per_frame <= 65535:
            raise bad(f"samples_per_frame={self.samples_per_frame} is out of range")
        if not 1 <= self.code_channels <= 4096:  # u16 in the header
            raise bad(f"code_channels={self.code_channels} is out of range")
        if not 1 <= self.chunk_frames <= 1_000_000:
            raise bad(f"chunk_frames={self.chunk_frames} is out of range")
        if self.chunk_frames * self.code_channels > 16_000_000:
            raise bad("chunks are too large")
        if not 1 <= self.num_samples <= MAX_DURATION_S * self.sample_rate_hz:
            raise bad(f"num_samples={self.num_samples} is out of range")
        if not 1 <= self.source_num_samples <= MAX_DURATION_S * self.source_sample_rate_hz:
            raise bad(f"source_num_samples={self.source_num_samples} is out of range")
        # the source's length is the coded length at the source's rate (an encoder resamples it):
        # a header that says more would make a decoder pad the output with what was never coded
        ratio = self.source_sample_rate_hz / self.sample_rate_hz
        if abs(self.source_num_samples - self.num_samples * ratio) > ratio + 1:
            raise bad(f"source_num_samples={self.source_num_samples} disagrees with num_samples="
                      f"{self.num_samples} at these rates")
        if not 1 <= self.source_channels <= 65535:
            raise bad(f"source_channels={self.source_channels} is out of range")
        if not (1e-6 < self.gain < 1e6):  # also rejects NaN
            raise bad(f"gain={self.gain} is out of range")
        if not self.model or len(self.model.encode("utf-8")) > 255:
            raise bad("model name is empty or too long")
        if any(c in self.model for c in "/\\\0") or self.model in (".", "..") or self.model[0] in ".-~":
            raise bad(f"model name {self.model!r} is not a model's name (a stream names models, never files)")
        if len(self.fingerprint) != 16 or any(c not in "0123456789abcdef" for c in self.fingerprint):
            raise bad("fingerprint is not 16 hex digits")
        for name in ("postfilter_comb_pct", "postfilter_formant_pct"):
            if not 0 <= getattr(self, name) <= 100:
                raise bad(f"{name}={getattr(self, name)} is out of range")
        if not 0 <= self.bitrate_bps <= 10_000_000:
            raise bad(f"bitrate_bps={self.bitrate_bps} is out of range")


@dataclass(frozen=True)
class Chunk:
    """One record read back: its index, byte offset in the stream, frame count and payload."""

    index: int
    offset: int
    num_frames: int
    payload: bytes


def write_header(out: BinaryIO, header: StreamHeader, version: int = FORMAT_VERSION) -> int:
    """Write magic, version, header and its CRC; returns the bytes written.

    ``version`` 1 (no postfilter bytes) and 2 (no bitrate) make the streams older releases wrote."""
    header.validate()
    raw = header.to_bytes(version)
    head = _PREFIX.pack(MAGIC, version, len(raw)) + raw
    out.write(head + _CRC.pack(zlib.crc32(head)))
    return len(head) + _CRC.size


def write_chunk(out: BinaryIO, num_frames: int, payload: bytes) -> int:
    """Write one chunk record (``num_frames`` >= 1); returns the bytes written."""
    if num_frames < 1 or len(payload) % 4:
        raise ValueError("a chunk holds at least one frame and a 32-bit aligned payload")
    record = _RECORD.pack(num_frames, len(payload)) + payload
    out.write(record + _CRC.pack(zlib.crc32(record)))
    return len(record) + _CRC.size


def write_end(out: BinaryIO) -> int:
    """Write the end record that tells a complete stream from a truncated one."""
    record = _RECORD.pack(0, 0)
    out.write(record + _CRC.pack(zlib.crc32(record)))
    return len(record) + _CRC.size


def _read_exact(src: BinaryIO, size: int, what: str, offset: int) -> bytes:
    data = src.read(size)
    if len(data) != size:
        raise TruncatedBitstreamError(
            f"stream is truncated: {what} at byte {offset} needs {size} bytes, {len(data)} left"
        )
    return data


def stream_bytes(data) -> bytes:
    """``data`` as bytes when it is a stream's bytes; a one-line error for anything else (a path, text)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    hint = ("; for a file, read it with Path(path).read_bytes() or use decode_file(path, out)"
            if isinstance(data, (str, os.PathLike)) else "")
    raise BitstreamError(f"a speechcodec stream is bytes, got {type(data).__name__}{hint}")


def read_header(src: BinaryIO) -> tuple[StreamHeader, int]:
    """Read and check magic, version, header and CRC; returns the header and the bytes read."""
    prefix = src.read(_PREFIX.size)
    if len(prefix) < 4 or prefix[:4] != MAGIC:
        if len(prefix) == 0:
            raise TruncatedBitstreamError("stream is empty")
        if MAGIC.startswith(prefix[:4]):
            raise TruncatedBitstreamError("stream is truncated inside its magic number")
        raise BitstreamError("not a speechcodec stream (bad magic number)")
    if len(prefix) < _PREFIX.size:
        raise TruncatedBitstreamError("stream is truncated inside its prefix")
    _, version, header_len = _PREFIX.unpack(prefix)
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"stream format version {version} is newer than this release reads "
            f"(up to {FORMAT_VERSION}); upgrade speechcodec"
        )
    if version == 0:
        raise BitstreamError("stream format version 0 does not exist")
    if not _HEADER.size + 8 <= header_len <= MAX_HEADER_BYTES:
        raise BitstreamError(f"stream header length {header_len} is out of range")
    raw = _read_exact(src, header_len, "header", _PREFIX.size)
    (crc,) = _CRC.unpack(_read_exact(src, _CRC.size, "header checksum", _PREFIX.size + header_len))
    if crc != zlib.crc32(prefix + raw):
        raise ChecksumError("stream header is damaged (CRC32 mismatch)")
    return StreamHeader.from_bytes(raw, version), _PREFIX.size + header_len + _CRC.size


def iter_chunks(src: BinaryIO, header: StreamHeader, start_offset: int) -> Iterator[Chunk]:
    """Yield chunks after the header, checking each CRC and the frame total, up to the end record."""
    offset = start_offset
    frames_seen = 0
    index = 0
    max_payload = header.chunk_frames * header.code_channels * 8 + 64
    while True:
        record = _read_exact(src, _RECORD.size, f"chunk {index} record", offset)
        num_frames, payload_len = _RECORD.unpack(record)
        if num_frames > header.chunk_frames or payload_len > max_payload or payload_len % 4:
            # Do not trust the lengths before the CRC: read no more than a real chunk could hold.
            raise ChecksumError(f"chunk {index} at byte {offset} is damaged (impossible lengths)")
        payload = _read_exact(src, payload_len, f"chunk {index} payload", offset + _RECORD.size)
        crc_at = offset + _RECORD.size + payload_len
        (crc,) = _CRC.unpack(_read_exact(src, _CRC.size, f"chunk {index} checksum", crc_at))
        if crc != zlib.crc32(record + payload):
            raise ChecksumError(f"chunk {index} at byte {offset} is damaged (CRC32 mismatch)")
        if num_frames == 0:
            if payload_len != 0:
                raise BitstreamError(f"end record at byte {offset} carries a payload")
            if frames_seen != header.num_frames:
                raise BitstreamError(
                    f"stream holds {frames_seen} frames but its header promises {header.num_frames}"
                )
            if src.read(1):
                raise BitstreamError(f"unexpected bytes after the end record at byte {crc_at + 4}")
            return
        if num_frames * header.samples_per_frame > MAX_SAMPLES_PER_BYTE * max(payload_len, 4):
            raise BitstreamError(f"chunk {index} at byte {offset} claims {num_frames} frames, more than its "
                                 f"{payload_len} bytes can carry")
        frames_seen += num_frames
        if frames_seen > header.num_frames:
            raise BitstreamError(f"chunk {index} runs past the {header.num_frames} frames promised")
        yield Chunk(index=index, offset=offset, num_frames=num_frames, payload=payload)
        offset = crc_at + _CRC.size
        index += 1


def read_stream(src: BinaryIO) -> tuple[StreamHeader, Iterator[Chunk]]:
    """Parse a stream lazily: the header now, the chunks as the iterator is consumed."""
    header, start = read_header(src)
    return header, iter_chunks(src, header, start)
