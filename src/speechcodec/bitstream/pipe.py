"""The framing of the perceptual family's packets, for a pipe and for files (no torch).

A packet (:mod:`speechcodec.perceptual.packets`) is the codec's payload only. What a transport
carries beside it (a length, a sequence number, a check) is here, as Ogg carries Opus packets
(RFC 7845): one header, then pages of packets. ``speechcodec stream-encode`` writes a page per
packet as it is made; a ``.spcd`` file of the perceptual family is the same framing with up to
50 packets (a second) a page. Little-endian::

    header: magic "SCPK" | version u8 (2) | flags u8 (bit 0: constant bitrate)
            | bitrate_bps u32 (what the encoder was asked for) | model fingerprint 8 bytes
            | source rate u32 (Hz; 0: raw 16 kHz PCM, as a pipe carries) | source channels u8
            | samples u32 (at 16 kHz; 0xFFFFFFFF: unknown, a live stream)
            | model name length u8 | model name (an installed model's name: letters, digits, - and _)
            | CRC32 u32 of the header's bytes before it
    page:   sync "P" | sequence number u16 of its first packet (mod 65536) | packets u8 (1 .. 255)
            | each packet's length, laced as Ogg laces (bytes of 255 add up, one below 255 ends it)
            | CRC32 u32 of the page's bytes before it and of its packets | the packets

A packet of length 0 is one the link lost. A decoder conceals it, and the packets missing
between two pages (their sequence numbers), and those of a page whose CRC fails, the same way
(:class:`Sequencer`). The CRCs catch accidents (a flipped bit, a cut); they do not authenticate:
anyone can recompute them, so everything after them is still checked (docs/format.md).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from speechcodec.errors import BitstreamError, TruncatedBitstreamError, UnsupportedVersionError

MAGIC = b"SCPK"
VERSION = 2
_HEAD = struct.Struct("<4sBBI8sIBIB")
_CRC = struct.Struct("<I")
_PAGE = struct.Struct("<cHB")
SYNC = b"P"
UNKNOWN_SAMPLES = 0xFFFFFFFF
MAX_PACKET_BYTES = 1275  # as Opus's: far above any rate's packet (64 kbps at 3 times the mean: 480)
MAX_PAGE_PACKETS = 255
FILE_PAGE_PACKETS = 50  # a file's pages: a second of packets each
MAX_SAMPLES = 16000 * 3600  # one hour at 16 kHz: what a header may say a file holds
MAX_GAP_PACKETS = 50  # a gap in the sequence numbers is concealed up to 1 s; the rest is skipped
SOURCE_RATES_HZ = (0, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
BITRATE_RANGE_BPS = (2000, 64000)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
CBR_FLAG = 1


@dataclass(frozen=True)
class PipeHeader:
    model: str
    fingerprint: str  # 16 hex digits
    bitrate_bps: int
    cbr: bool = False
    source_sample_rate_hz: int = 0  # 0: raw 16 kHz PCM
    source_channels: int = 1
    num_samples: int | None = None  # at 16 kHz; None: a live stream, its length unknown

    def __post_init__(self):
        checked_model_name(self.model)
        low, high = BITRATE_RANGE_BPS
        if not low <= self.bitrate_bps <= high:
            raise BitstreamError(f"packet stream header: bitrate {self.bitrate_bps} bps lies outside "
                                 f"{low} .. {high}")
        if self.source_sample_rate_hz not in SOURCE_RATES_HZ:
            raise BitstreamError(f"packet stream header: source rate {self.source_sample_rate_hz} Hz is none "
                                 "an encoder writes")
        if not 1 <= self.source_channels <= 64:
            raise BitstreamError(f"packet stream header: {self.source_channels} source channels")
        if self.num_samples is not None and not 0 <= self.num_samples <= MAX_SAMPLES:
            raise BitstreamError(f"packet stream header: {self.num_samples} samples is over the "
                                 f"{MAX_SAMPLES // 16000} s a file may hold")
        if not re.fullmatch(r"[0-9a-f]{16}", self.fingerprint):
            raise BitstreamError("packet stream header: the fingerprint is not 16 hex digits")

    @property
    def duration_s(self) -> float | None:
        return None if self.num_samples is None else self.num_samples / 16000

    def to_bytes(self) -> bytes:
        name = self.model.encode("ascii")
        samples = UNKNOWN_SAMPLES if self.num_samples is None else self.num_samples
        head = _HEAD.pack(MAGIC, VERSION, CBR_FLAG if self.cbr else 0, self.bitrate_bps,
                          bytes.fromhex(self.fingerprint), self.source_sample_rate_hz, self.source_channels,
                          samples, len(name)) + name
        return head + _CRC.pack(zlib.crc32(head))


def checked_model_name(name: str) -> str:
    """A model's name as a stream may carry it: an installed model's name, never a path."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BitstreamError(f"packet stream names its model {name!r}: not a model name (letters, digits, "
                             "- and _, at most 64)")
    return name


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
                             "'speechcodec stream-encode' or 'speechcodec encode'?")
    if len(head) >= 5 and head[4] == 1:
        raise UnsupportedVersionError("packet stream of format 1 (speechcodec before the one packet format, "
                                      "with a 3-byte head in each packet): this release reads format 2; "
                                      "re-encode it from the audio")
    if len(head) >= 5 and head[4] > VERSION:
        raise UnsupportedVersionError(f"packet stream of a newer format version ({head[4]}; this release "
                                      f"reads {VERSION}): upgrade speechcodec")
    if len(head) < _HEAD.size:
        raise TruncatedBitstreamError("packet stream ends inside its header")
    _, version, flags, bitrate_bps, fingerprint, rate, channels, samples, length = _HEAD.unpack(head)
    if version != VERSION:
        raise BitstreamError(f"packet stream of an unknown format version ({version})")
    rest = _read_exactly(src, length + _CRC.size)
    if len(rest) < length + _CRC.size:
        raise TruncatedBitstreamError("packet stream ends inside its header")
    (crc,) = _CRC.unpack_from(rest, length)
    if zlib.crc32(head + rest[:length]) != crc:
        raise BitstreamError("packet stream header is damaged (CRC32 mismatch)")
    if flags & ~CBR_FLAG:
        raise BitstreamError(f"packet stream header has flags {flags:#x} no encoder writes")
    try:
        model = rest[:length].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("packet stream header names its model in bytes that are not a name") from None
    return PipeHeader(model, fingerprint.hex(), bitrate_bps, bool(flags & CBR_FLAG), rate, channels,
                      None if samples == UNKNOWN_SAMPLES else samples)


def page_bytes(first_seq: int, packets: list[bytes | None]) -> bytes:
    """One page: ``packets`` (``None`` for one the link lost) numbered from ``first_seq``."""
    if not 1 <= len(packets) <= MAX_PAGE_PACKETS:
        raise BitstreamError(f"a page holds 1 to {MAX_PAGE_PACKETS} packets, got {len(packets)}")
    lacing = bytearray()
    for packet in packets:
        size = len(packet or b"")
        if size > MAX_PACKET_BYTES:
            raise BitstreamError(f"a packet of {size} bytes exceeds the framing's {MAX_PACKET_BYTES}")
        lacing += b"\xff" * (size // 255) + bytes((size % 255,))
    head = _PAGE.pack(SYNC, first_seq & 0xFFFF, len(packets)) + bytes(lacing)
    body = b"".join(p or b"" for p in packets)
    return head + _CRC.pack(zlib.crc32(body, zlib.crc32(head))) + body


def write_packet(out: BinaryIO, seq: int, packet: bytes | None) -> int:
    """One packet as a page of its own (what a live pipe sends); ``None``: one the link lost.
    Returns the bytes written."""
    page = page_bytes(seq, [packet])
    out.write(page)
    return len(page)


@dataclass
class Page:
    first_seq: int
    packets: list[bytes]  # empty when the page is damaged
    damaged: bool = False


def read_pages(src: BinaryIO) -> Iterator[Page]:
    """Each page in turn until the stream ends. A page whose CRC fails comes back damaged (its
    packets unknown) and reading goes on after it when the next page starts where its lengths
    say; otherwise the stream is damaged beyond that point (one-line error)."""
    offset = 0
    while True:
        head = _read_exactly(src, _PAGE.size)
        if not head:
            return
        if head[:1] != SYNC:
            raise BitstreamError(f"packet stream is damaged at byte {offset} of its pages (no page starts "
                                 "there)")
        if len(head) < _PAGE.size:
            raise TruncatedBitstreamError("packet stream ends inside a page")
        _, first_seq, count = _PAGE.unpack(head)
        sizes, lacing = [], bytearray()
        for _ in range(count):
            size = 0
            while True:
                byte = _read_exactly(src, 1)
                if not byte:
                    raise TruncatedBitstreamError("packet stream ends inside a page's lengths")
                lacing += byte
                size += byte[0]
                if byte[0] < 255 or size > MAX_PACKET_BYTES:
                    break
            sizes.append(size)
        crc_raw = _read_exactly(src, _CRC.size)
        body = _read_exactly(src, sum(sizes)) if all(s <= MAX_PACKET_BYTES for s in sizes) else b""
        offset += len(head) + len(lacing) + len(crc_raw) + len(body)
        if len(crc_raw) < _CRC.size or len(body) < sum(sizes):
            if count and all(s <= MAX_PACKET_BYTES for s in sizes):
                raise TruncatedBitstreamError(f"packet stream ends inside a page ({len(body)} of its "
                                              f"{sum(sizes)} packet bytes)")
            raise BitstreamError("packet stream is damaged (a page's lengths exceed the framing's packets)")
        if count == 0 or zlib.crc32(body, zlib.crc32(head + lacing)) != _CRC.unpack(crc_raw)[0]:
            yield Page(first_seq, [], damaged=True)
            continue
        packets, at = [], 0
        for size in sizes:
            packets.append(body[at:at + size])
            at += size
        yield Page(first_seq, packets)


class Sequencer:
    """Pages to the packets a decoder pulls, in order: each packet, and ``None`` for each one lost
    (a zero-length packet, a gap in the sequence numbers, a damaged page's). A packet behind the
    one expected (late or repeated) is dropped. One rule for ``stream-decode`` and ``decode``.

    A gap of more than :data:`MAX_GAP_PACKETS` is concealed as that many (a second: what follows
    is silence anyway), so the output is bounded by the input's size. Two packets in a row far
    behind the one expected are followed from the second on (the numbering jumped), so one stray
    page costs at most one good packet after it.
    """

    def __init__(self):
        self.expected: int | None = None
        self.lost = self.damaged_pages = self.late = 0
        self.damaged_at_end = 0  # damaged pages after the last good one (their packets are not counted)
        self._stray: int | None = None  # the last packet dropped as behind

    def packets(self, pages) -> Iterator[bytes | None]:
        for page in pages:
            if page.damaged:
                self.damaged_pages += 1
                self.damaged_at_end += 1
                continue  # the next page's sequence number says how many were lost
            self.damaged_at_end = 0
            yield from self._page(page)

    def _page(self, page: Page) -> Iterator[bytes | None]:
        seq = page.first_seq
        for packet in page.packets:
            if self.expected is not None:
                ahead = (seq - self.expected) % 65536
                behind = (65536 - ahead) % 65536
                # behind the one expected: late or repeated, unless it is the second packet in a
                # row from far off (the sender's count jumped, or a stray page made ours jump):
                # then it is followed, as RTP receivers do (RFC 3550, A.1)
                if ahead >= 32768 and not (behind > MAX_GAP_PACKETS and self._stray == (seq - 1) % 65536):
                    self.late += 1
                    self._stray = seq
                    seq = (seq + 1) % 65536
                    continue
                if ahead >= 32768:
                    ahead = 0
                for _ in range(min(ahead, MAX_GAP_PACKETS)):
                    self.lost += 1
                    yield None
            self.expected = (seq + 1) % 65536
            seq = self.expected
            if not packet:
                self.lost += 1
                yield None
            else:
                yield packet
