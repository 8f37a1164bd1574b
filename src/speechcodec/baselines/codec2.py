"""Codec 2 (the real libcodec2, through ctypes) behind the codec interface, delay-compensated.

Codec 2 is the open speech codec of 0.7-3.2 kbps, below Opus's floor; it is narrowband: it codes
8 kHz audio, so ``encode`` resamples to 8 kHz and ``decode`` returns 8 kHz audio (the evaluation
resamples it back for the wideband score, as for every codec). Its frames have a fixed size, so
its bitrate is exactly its mode's: :meth:`Codec2Codec.payload_bytes` counts the frames only.

``encode`` returns a small framing of the frames (a 20-byte header, then the frames back to back)
so the bytes can be decoded again. The library is the system's (Debian/Ubuntu: ``codec2``, which
`make setup` installs; macOS: ``brew install codec2``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct

import numpy as np
import soxr

from speechcodec.audio import as_mono, check_finite
from speechcodec.errors import BitstreamError, SpeechCodecError

SAMPLE_RATE_HZ = 8000
# bits per second -> the library's mode number (codec2.h); 700C and 450 are left out: 700C is a
# different (vocoder-only) family and 450 is experimental.
MODES = {3200: 0, 2400: 1, 1600: 2, 1400: 3, 1300: 4, 1200: 5}
_HEADER = struct.Struct("<8sIIHH")  # magic, mode_bps, num_samples (8 kHz), delay, bytes per frame
_MAGIC = b"CODEC2R1"
_LIBRARY_NAMES = ("libcodec2.so.1.0", "libcodec2.so.1", "libcodec2.so", "libcodec2.dylib")
_lib: list = []


def _library() -> ctypes.CDLL:
    if _lib:
        return _lib[0]
    names = [n for n in (ctypes.util.find_library("codec2"),) if n] + list(_LIBRARY_NAMES)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise SpeechCodecError("Codec 2 is unavailable (libcodec2 not found); `make setup` installs it "
                               "(Debian/Ubuntu: apt-get install codec2; macOS: brew install codec2)")
    lib.codec2_create.restype = ctypes.c_void_p
    lib.codec2_create.argtypes = [ctypes.c_int]
    lib.codec2_destroy.argtypes = [ctypes.c_void_p]
    for fn in (lib.codec2_samples_per_frame, lib.codec2_bytes_per_frame):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p]
    lib.codec2_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.codec2_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
    _lib.append(lib)
    return lib


class _State:
    """One libcodec2 encoder/decoder state, destroyed on exit."""

    def __init__(self, mode: int):
        self.lib = _library()
        self.ptr = self.lib.codec2_create(mode)
        if not self.ptr:
            raise SpeechCodecError(f"this libcodec2 does not offer mode {mode}")
        self.samples = self.lib.codec2_samples_per_frame(self.ptr)
        self.bytes = self.lib.codec2_bytes_per_frame(self.ptr)

    def __enter__(self) -> _State:
        return self

    def __exit__(self, *exc) -> None:
        self.lib.codec2_destroy(self.ptr)


class Codec2Codec:
    """libcodec2 in one of its modes; ``name`` says so, e.g. ``codec2-3200bps``."""

    sample_rate_hz = SAMPLE_RATE_HZ
    # Samples the decoded speech lags the input (measured on real speech, the same in every mode
    # here); ``encode`` codes that many extra and ``decode`` drops them, as for Opus's look-ahead.
    delay_samples = 160  # 20 ms: the envelope cross-correlation peak on real speech, every mode

    def __init__(self, mode_bps: int):
        mode_bps = int(mode_bps)
        if mode_bps not in MODES:
            raise SpeechCodecError(f"Codec 2 has no {mode_bps} bps mode; choose one of "
                                   f"{', '.join(str(m) for m in sorted(MODES))}")
        self.mode_bps = self.bitrate_bps = mode_bps
        self.name = f"codec2-{mode_bps}bps"

    def encode(self, audio: np.ndarray, sample_rate: int) -> bytes:
        mono = as_mono(audio)
        check_finite(mono)
        if sample_rate != SAMPLE_RATE_HZ:
            mono = soxr.resample(mono, sample_rate, SAMPLE_RATE_HZ).astype(np.float32)
        n = len(mono)
        with _State(MODES[self.mode_bps]) as state:
            padded = np.concatenate([mono, np.zeros(self.delay_samples, np.float32)])
            total = -(-len(padded) // state.samples) * state.samples
            padded = np.pad(padded, (0, total - len(padded)))
            pcm = np.ascontiguousarray((np.clip(padded, -1, 1 - 1 / 32768) * 32768).astype(np.int16))
            out = [_HEADER.pack(_MAGIC, self.mode_bps, n, self.delay_samples, state.bytes)]
            frame = ctypes.create_string_buffer(state.bytes)
            for start in range(0, total, state.samples):
                chunk = pcm[start:start + state.samples]
                state.lib.codec2_encode(state.ptr, frame, chunk.ctypes.data)
                out.append(frame.raw)
        return b"".join(out)

    def _frames(self, data: bytes) -> tuple[int, int, int, bytes]:
        if len(data) < _HEADER.size or data[:8] != _MAGIC:
            raise BitstreamError("not a Codec 2 stream written by Codec2Codec")
        _, mode_bps, n, delay, frame_bytes = _HEADER.unpack_from(data)
        body = data[_HEADER.size:]
        if mode_bps != self.mode_bps or frame_bytes == 0 or len(body) % frame_bytes:
            raise BitstreamError(f"not a whole Codec 2 {self.mode_bps} bps stream")
        return n, delay, frame_bytes, body

    def payload_bytes(self, data: bytes) -> int:
        """Bytes of Codec 2 frames only: what its bitrate is computed from."""
        return len(self._frames(data)[3])

    def decode(self, data: bytes) -> tuple[np.ndarray, int]:
        n, delay, frame_bytes, body = self._frames(data)
        with _State(MODES[self.mode_bps]) as state:
            if state.bytes != frame_bytes:
                raise BitstreamError("the Codec 2 stream's frame size does not match this libcodec2")
            frames = len(body) // frame_bytes
            pcm = np.zeros(frames * state.samples, np.int16)
            for i in range(frames):
                out = pcm[i * state.samples:(i + 1) * state.samples]
                state.lib.codec2_decode(state.ptr, out.ctypes.data, body[i * frame_bytes:(i + 1) * frame_bytes])
        audio = pcm.astype(np.float32) / 32768
        audio = audio[delay: delay + n]
        return np.pad(audio, (0, n - len(audio))), SAMPLE_RATE_HZ
