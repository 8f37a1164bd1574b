"""Audio in: read any soundfile format in blocks, mix to mono, resample with soxr (files in and
out, atomic writes and pipes, are in files.py)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechcodec.errors import AudioInputError, AudioInputWarning

BLOCK_SAMPLES = 1 << 16


def as_mono(audio: np.ndarray) -> np.ndarray:
    """``[N]``, ``[N, channels]`` or ``[channels, N]`` (up to 64 channels) -> float32 ``[N]``."""
    audio = np.asarray(audio)
    if audio.dtype.kind not in "fiu":
        raise AudioInputError(f"audio must be a numeric array, got dtype {audio.dtype}")
    if audio.dtype.kind == "i":  # signed integer PCM: scale to [-1, 1), as soundfile reads it
        audio = audio.astype(np.float64) / float(np.iinfo(audio.dtype).max + 1)
    elif audio.dtype.kind == "u":  # unsigned PCM (8-bit WAV's kind): centred on its midpoint first
        half = float(np.iinfo(audio.dtype).max // 2 + 1)
        audio = (audio.astype(np.float64) - half) / half
    if audio.ndim == 2:
        channels_last = audio.shape[1] <= 64 or audio.shape[0] > 64
        audio = audio.mean(axis=1 if channels_last else 0)
    elif audio.ndim != 1:
        raise AudioInputError(f"audio must be 1-D or 2-D, got shape {audio.shape}")
    return np.ascontiguousarray(audio, dtype=np.float32)


MAX_PHYSICAL_PEAK = 1000.0  # 60 dB over full scale: float audio this loud is a broken file, not sound


def check_finite(block: np.ndarray, where: str = "input") -> None:
    """Refuse samples that are not sound: NaN, infinite, or far beyond full scale."""
    if not np.isfinite(block).all():
        raise AudioInputError(f"{where} holds NaN or infinite samples")
    peak = float(np.abs(block).max()) if block.size else 0.0
    if peak > MAX_PHYSICAL_PEAK:
        raise AudioInputError(f"{where} holds samples of {peak:.3g}, far beyond full scale (1.0): not "
                              f"recorded sound; scale it to within +-1 (divide by its peak) and retry")


def expected_length(num_samples: int, rate_in_hz: int, rate_out_hz: int) -> int:
    """Samples after resampling ``num_samples`` from ``rate_in_hz`` to ``rate_out_hz``."""
    if rate_in_hz == rate_out_hz:
        return num_samples
    return max(1, round(num_samples * rate_out_hz / rate_in_hz))


def resample_blocks(blocks: Iterable[np.ndarray], rate_in_hz: int, rate_out_hz: int,
                    num_samples_out: int) -> Iterator[np.ndarray]:
    """Stream-resample mono float32 blocks; the total is trimmed or zero-padded to ``num_samples_out``."""
    stream = None if rate_in_hz == rate_out_hz else soxr.ResampleStream(
        rate_in_hz, rate_out_hz, 1, dtype="float32")
    emitted = 0
    for block in blocks:
        out = block if stream is None else stream.resample_chunk(block)
        out = out[: num_samples_out - emitted]
        emitted += len(out)
        if len(out):
            yield out
    if stream is not None:
        out = stream.resample_chunk(np.zeros(0, np.float32), last=True)[: num_samples_out - emitted]
        emitted += len(out)
        if len(out):
            yield out
    if emitted < num_samples_out:
        yield np.zeros(num_samples_out - emitted, np.float32)


@dataclass(frozen=True)
class AudioFileInfo:
    path: Path
    sample_rate_hz: int
    channels: int
    num_samples: int

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz


def probe(path: str | os.PathLike) -> AudioFileInfo:
    """Open an audio file and read its format, with a one-line error for every way it can fail."""
    path = Path(path)
    if not path.exists():
        raise AudioInputError(f"input file {path} does not exist")
    if path.is_dir():
        raise AudioInputError(f"input {path} is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"input file {path} is empty (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            info = AudioFileInfo(path, int(f.samplerate), int(f.channels), int(f.frames))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioInputError(f"cannot read {path} as audio ({exc})") from None
    if info.num_samples <= 0:
        raise AudioInputError(f"input file {path} holds no audio samples")
    if info.sample_rate_hz <= 0:
        raise AudioInputError(f"input file {path} has an invalid sample rate")
    promised = wav_promised_samples(path)
    if promised is not None and promised > info.num_samples:
        promised_s = promised / info.sample_rate_hz
        warnings.warn(f"input file {path} was cut short: its header promises {promised_s:.2f} s, the file "
                      f"holds {info.duration_s:.2f} s; coding what is there", AudioInputWarning, stacklevel=2)
    return info


def wav_promised_samples(path: str | os.PathLike) -> int | None:
    """Samples per channel a WAV's ``data`` chunk header promises; ``None`` for other files and for
    WAVs written to a pipe (size 0 or 0xFFFFFFFF: unknown). libsndfile quietly reads only what is
    there, so a file cut short is found by comparing this with what it reports."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        for _ in range(64):  # a few chunks (fmt, fact, LIST, ...) come before the data
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"fmt ":
                fmt = f.read(min(size, 16))
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
                f.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
            elif name == b"data":
                if size in (0, 0xFFFFFFFF) or not block_align:
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def read_mono_blocks(path: str | os.PathLike, block_samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks of ``path``, checking every sample is finite."""
    try:
        for block in sf.blocks(str(path), blocksize=block_samples, dtype="float32", always_2d=True):
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            check_finite(mono, str(path))
            yield np.ascontiguousarray(mono)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(f"cannot read {path} as audio ({exc})") from None


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Whole file as float32 mono ``[N]`` and its sample rate."""
    info = probe(path)
    blocks = list(read_mono_blocks(path))
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), info.sample_rate_hz


ACTIVE_FLOOR_DB = -40.0  # frames this far below the loudest count as pauses, not speech


def active_rms(blocks: Iterable[np.ndarray], sample_rate_hz: int) -> tuple[float, int]:
    """RMS over the 20 ms frames within 40 dB of the loudest, and the sample count.

    Checks every sample is finite. Returns RMS 0.0 for digital silence.
    """
    frame = max(1, sample_rate_hz // 50)
    powers: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    total = 0
    for block in blocks:
        check_finite(block)
        total += len(block)
        data = np.concatenate([carry, block])
        usable = len(data) // frame * frame
        if usable:
            powers.append(np.mean(data[:usable].reshape(-1, frame).astype(np.float64) ** 2, axis=1))
        carry = data[usable:]
    if len(carry):
        powers.append(np.array([np.mean(carry.astype(np.float64) ** 2)]))
    if not powers:
        return 0.0, total
    p = np.concatenate(powers)
    loudest = float(p.max())
    if loudest < 1e-14:
        return 0.0, total
    active = p[p >= loudest * 10 ** (ACTIVE_FLOOR_DB / 10)]
    return math.sqrt(float(active.mean())), total
