"""A packet stream on a pipe (``speechcodec stream-encode | speechcodec stream-decode``).

Little-endian, no torch::

    magic "SCPK" | version u8 | bitrate_bps u32 | fingerprint 8 bytes | model name length u8 | name
    then per packet: length u16 (0: a packet the link lost) | the packet
    (:mod:`speechcodec.perceptual.packets`)

The header names the model, so the decoder needs nothing else; each packet carries its own
check byte, so a damaged one is concealed as lost rather than decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from speechcodec.errors import BitstreamError, TruncatedBitstreamError, UnsupportedVersionError

MAGIC = b"SCPK"
VERSION = 1
_HEAD = struct.Struct("<4sBI8sB")
_LENGTH = struct.Struct("<H")
MAX_PACKET_BYTES = 4096  # far above any rate's packet (64 kbps: 160 bytes)


@dataclass(frozen=True)
class PipeHeader:
    model: str
    fingerprint: str  # 16 hex digits
    bitrate_bps: int

    def to_bytes(self) -> bytes:
        name = self.model.encode("utf-8")
        return _HEAD.pack(MAGIC, VERSION, self.bitrate_bps, bytes.fromhex(self.fingerprint), len(name)) + name


def _read_exactly(src: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = src.read(n - len(data))
        if not more:
            break
        data += more
    return data


def read_header(src: BinaryIO) -> PipeHeader:
    head = _read_exactly(src, _HEAD.size)
    if not head:
        raise TruncatedBitstreamError("packet stream is empty: no header")
    if head[:4] != MAGIC[: len(head[:4])]:
        raise BitstreamError("not a speechcodec packet stream (no SCPK magic): was it written by "
                             "'speechcodec stream-encode'?")
    if len(head) < _HEAD.size:
        raise TruncatedBitstreamError("packet stream ends inside its header")
    _, version, bitrate_bps, fingerprint, length = _HEAD.unpack(head)
    if version > VERSION:
        raise UnsupportedVersionError(f"packet stream of a newer format version ({version}; this release "
                                      f"reads {VERSION}): upgrade speechcodec")
    if version != VERSION:
        raise BitstreamError(f"packet stream of an unknown format version ({version})")
    name = _read_exactly(src, length)
    if len(name) < length:
        raise TruncatedBitstreamError("packet stream ends inside its header")
    try:
        model = name.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("packet stream header names its model in invalid UTF-8") from None
    if not model:
        raise BitstreamError("packet stream header names no model")
    return PipeHeader(model, fingerprint.hex(), bitrate_bps)


def write_packet(out: BinaryIO, packet: bytes | None) -> None:
    """One packet, or ``None`` for one the link lost."""
    data = packet or b""
    if len(data) > MAX_PACKET_BYTES:
        raise BitstreamError(f"a packet of {len(data)} bytes exceeds the pipe's {MAX_PACKET_BYTES}")
    out.write(_LENGTH.pack(len(data)) + data)


def read_packets(src: BinaryIO) -> Iterator[bytes | None]:
    """Each packet in turn (``None`` for a lost one) until the stream ends."""
    while True:
        raw = _read_exactly(src, _LENGTH.size)
        if not raw:
            return
        if len(raw) < _LENGTH.size:
            raise TruncatedBitstreamError("packet stream ends inside a packet's length")
        (size,) = _LENGTH.unpack(raw)
        if size > MAX_PACKET_BYTES:
            raise BitstreamError(f"packet length {size} exceeds the pipe's {MAX_PACKET_BYTES}: "
                                 "not a packet stream")
        packet = _read_exactly(src, size)
        if len(packet) < size:
            raise TruncatedBitstreamError(f"packet stream ends inside a packet ({len(packet)} of {size} bytes)")
        yield packet if size else None
