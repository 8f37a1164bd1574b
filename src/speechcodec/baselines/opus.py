"""Opus (the real libopus, through opuslib) behind the codec interface, delay-compensated.

VOIP application, 20 ms frames, VBR, complexity 10, 16 kHz mono. ``encode`` returns a minimal
framing of the packets (a 16-byte header, then a u16 length before each packet) so the bytes can
be decoded again; :meth:`OpusCodec.payload_bytes` counts only the packets, which is the bitrate
reported for Opus (as opus-tools and the literature quote it), a slightly generous count next
to speechcodec's, which counts every byte of its file.
"""

from __future__ import annotations

import struct

import numpy as np
import soxr

from speechcodec.audio import as_mono, check_finite
from speechcodec.errors import BitstreamError, SpeechCodecError, missing_extra

MIN_BITRATE_BPS = 6000  # below this Opus (SILK) does not go any lower in practice
MAX_BITRATE_BPS = 510000  # libopus clamps above this
_HEADER = struct.Struct("<8sIII")  # magic, bitrate_bps, sample_rate_hz, num_samples
_MAGIC = b"OPUSRAW1"


def _opuslib():
    try:
        import opuslib
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) or exc from None
    except Exception as exc:  # opuslib raises a bare Exception when libopus is missing
        raise SpeechCodecError(f"Opus is unavailable ({exc}); `make setup` installs libopus0") from None
    return opuslib


class OpusCodec:
    """libopus at a target bitrate; ``name`` says so, e.g. ``opus-12000bps``."""

    sample_rate_hz = 16000
    frame_ms = 20

    def __init__(self, bitrate_bps: int, complexity: int = 10):
        self.bitrate_bps = int(bitrate_bps)
        self.complexity = complexity
        self.name = f"opus-{self.bitrate_bps}bps"
        self.frame = self.sample_rate_hz * self.frame_ms // 1000

    def _encoder(self):
        opuslib = _opuslib()
        enc = opuslib.Encoder(self.sample_rate_hz, 1, opuslib.APPLICATION_VOIP)
        enc.bitrate = max(self.bitrate_bps, 500)
        enc.complexity = self.complexity
        enc.vbr = 1
        return enc

    @property
    def version(self) -> str:
        return _opuslib().api.info.get_version_string().decode()

    def encode(self, audio: np.ndarray, sample_rate: int) -> bytes:
        mono = as_mono(audio)
        check_finite(mono)
        if sample_rate != self.sample_rate_hz:
            mono = soxr.resample(mono, sample_rate, self.sample_rate_hz).astype(np.float32)
        enc = self._encoder()
        delay = enc.lookahead  # samples; compensated by coding that many extra and dropping them
        n = len(mono)
        padded = np.concatenate([mono, np.zeros(delay, np.float32)])
        total = -(-len(padded) // self.frame) * self.frame
        padded = np.pad(padded, (0, total - len(padded)))
        pcm = (np.clip(padded, -1, 1 - 1 / 32768) * 32768).astype("<i2")
        out = [_HEADER.pack(_MAGIC, self.bitrate_bps, self.sample_rate_hz, n)]
        for start in range(0, total, self.frame):
            packet = enc.encode(pcm[start:start + self.frame].tobytes(), self.frame)
            out.append(struct.pack("<H", len(packet)) + packet)
        out.append(struct.pack("<H", delay))
        return b"".join(out)

    def _packets(self, data: bytes) -> tuple[int, list[bytes], int]:
        if len(data) < _HEADER.size + 2 or data[:8] != _MAGIC:
            raise BitstreamError("not an Opus stream written by OpusCodec")
        _, _, rate, n = _HEADER.unpack_from(data)
        pos, packets = _HEADER.size, []
        while pos < len(data) - 2:
            (size,) = struct.unpack_from("<H", data, pos)
            packets.append(data[pos + 2: pos + 2 + size])
            pos += 2 + size
        (delay,) = struct.unpack_from("<H", data, len(data) - 2)
        return n, packets, delay

    def payload_bytes(self, data: bytes) -> int:
        """Bytes of Opus packets only: what the Opus bitrate is computed from."""
        return sum(len(p) for p in self._packets(data)[1])

    def packet_count(self, data: bytes) -> int:
        return len(self._packets(data)[1])

    def decode(self, data: bytes, lost: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The decoded audio; ``lost`` (bool, one per packet) marks packets a link lost, which
        libopus conceals (its packet-loss concealment: a decode given no data)."""
        opuslib = _opuslib()
        n, packets, delay = self._packets(data)
        if lost is not None and len(lost) != len(packets):
            raise SpeechCodecError(f"{len(lost)} loss flags for {len(packets)} Opus packets")
        dec = opuslib.Decoder(self.sample_rate_hz, 1)
        gone = np.zeros(len(packets), bool) if lost is None else lost
        pcm = b"".join(dec.decode(b"" if g else p, self.frame) for p, g in zip(packets, gone, strict=True))
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        return audio[delay: delay + n], self.sample_rate_hz
