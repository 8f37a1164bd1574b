"""Audio in and out: read any soundfile format in blocks, mix to mono, resample with soxr."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechcodec.errors import AudioInputError, SpeechCodecError

BLOCK_SAMPLES = 1 << 16


def as_mono(audio: np.ndarray) -> np.ndarray:
    """``[N]``, ``[N, channels]`` or ``[channels, N]`` (up to 64 channels) -> float32 ``[N]``."""
    audio = np.asarray(audio)
    if audio.dtype.kind not in "fiu":
        raise AudioInputError(f"audio must be a numeric array, got dtype {audio.dtype}")
    if audio.dtype.kind in "iu":  # integer PCM: scale to [-1, 1)
        audio = audio.astype(np.float64) / float(np.iinfo(audio.dtype).max + 1)
    if audio.ndim == 2:
        channels_last = audio.shape[1] <= 64 or audio.shape[0] > 64
        audio = audio.mean(axis=1 if channels_last else 0)
    elif audio.ndim != 1:
        raise AudioInputError(f"audio must be 1-D or 2-D, got shape {audio.shape}")
    return np.ascontiguousarray(audio, dtype=np.float32)


def check_finite(block: np.ndarray, where: str = "input") -> None:
    if not np.isfinite(block).all():
        raise AudioInputError(f"{where} holds NaN or infinite samples")


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
    return info


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


STDIO = "-"  # as an input: stdin; as an output: stdout


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode  # follows symlinks
    except OSError:
        return None


@contextmanager
def regular_input(path: str | os.PathLike) -> Iterator[Path]:
    """``path`` as a regular file, which can be read twice (level, then code) and sized.

    ``-`` (stdin), a pipe or a device (``/dev/stdin``) is first copied to a temporary file, which
    is removed afterwards; anything else, a missing path included, is passed through as it is.
    """
    dash = str(path) == STDIO
    mode = None if dash else _mode(Path(path))
    if not dash and (mode is None or stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        yield Path(path)
        return
    if dash and sys.stdin.isatty():
        raise AudioInputError("input '-' is the terminal: pipe a file in, e.g. `cat x.wav | ... - out`")
    with tempfile.TemporaryDirectory(prefix="speechcodec-") as folder:
        tmp = Path(folder) / "stdin"
        with open(tmp, "wb") as out:
            if dash:
                shutil.copyfileobj(sys.stdin.buffer, out)
            else:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out)
        shown = "stdin" if dash else str(path)
        if not tmp.stat().st_size:
            raise AudioInputError(f"input {shown} is empty: nothing came through the pipe")
        try:
            yield tmp
        except SpeechCodecError as e:  # say what the user gave, not the spool file's name
            message = str(e).replace(str(tmp), shown)
            if message == str(e):
                raise
            raise type(e)(message) from None


def check_not_input(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Refuse to write ``dst`` when it is the file ``src`` (a link to it included): the input would be lost."""
    try:
        same = os.path.samefile(src, dst)
    except (OSError, ValueError):  # one of them does not exist (yet): nothing to lose
        return
    if same:
        raise SpeechCodecError(f"output {dst} is the input file: writing it would destroy the input; "
                               "name another output")


class AtomicWriter:
    """Write to a hidden sibling of ``path``; rename it onto ``path`` only on success.

    A symlink is written through (its target is replaced, the link stays). A destination that is
    not a regular file (``-`` for stdout, ``/dev/null``, a FIFO) has nothing to lose and must not
    be renamed over: the output is written to a temporary file first, then copied into it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._tmpdir: str | None = None
        self.to_stdout = str(path) == STDIO
        mode = None if self.to_stdout else _mode(self.path)
        self.stream = self.to_stdout or (mode is not None and not stat.S_ISREG(mode)
                                         and not stat.S_ISDIR(mode))
        if mode is not None and stat.S_ISREG(mode):
            self.path = Path(os.path.realpath(self.path))
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")

    def __enter__(self) -> Path:
        if self.path.is_dir():
            raise AudioInputError(f"output {self.path} is a directory")
        if self.to_stdout and sys.stdout.isatty():
            raise AudioInputError("output '-' is the terminal: redirect it to a file or pipe it on")
        if self.stream:
            self._tmpdir = tempfile.mkdtemp(prefix="speechcodec-")
            self.tmp = Path(self._tmpdir) / f"out{self.path.suffix}"
        elif not self.path.parent.exists():
            raise AudioInputError(f"output folder {self.path.parent} does not exist")
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.to_stdout:
                with open(self.tmp, "rb") as src:
                    shutil.copyfileobj(src, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            elif exc_type is None and self.stream:
                with open(self.tmp, "rb") as src, open(self.path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            elif exc_type is None:
                os.replace(self.tmp, self.path)
        finally:
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            else:
                self.tmp.unlink(missing_ok=True)
