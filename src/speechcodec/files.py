"""Files in and out, for audio, streams, model files and checkpoints alike: ``-`` for stdin and
stdout, pipes spooled to a regular file, outputs written atomically, an input never written over."""

from __future__ import annotations

import errno
import os
import select
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from speechcodec.errors import AudioInputError, SpeechCodecError

STDIO = "-"  # as an input: stdin; as an output: stdout


def audio_format(path: str | os.PathLike) -> tuple[str, str]:
    """(soundfile format, subtype) to write decoded speech to ``path``, by its extension (none:
    WAV): 16-bit PCM where the format has it (wav, flac, aiff), else its own (ogg, mp3)."""
    import soundfile as sf

    ext = Path(path).suffix.lstrip(".").upper() or "WAV"
    if ext not in sf.available_formats():
        raise AudioInputError(f"cannot write .{ext.lower()} files; use .wav, .flac, .ogg or .mp3")
    return ext, "PCM_16" if sf.check_format(ext, "PCM_16") else sf.default_subtype(ext)


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode  # follows symlinks
    except OSError:
        return None


SPOOL_WAIT_S = 0.2  # the longest a pending Ctrl-C waits while a pipe stays silent


def _spool(fd: int, out) -> None:
    """Copy a pipe or device to ``out`` until its end, never blocking in ``read`` while it is silent.

    A plain blocking read loses a Ctrl-C that lands between two reads: Python runs its handler
    only between bytecodes, and the next read then blocks for as long as the writer stays
    silent. Waiting in ``select`` with a timeout instead returns to Python at least every
    ``SPOOL_WAIT_S``, so the KeyboardInterrupt is always raised.
    """
    while True:
        ready, _, _ = select.select([fd], [], [], SPOOL_WAIT_S)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        out.write(chunk)


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
                _spool(sys.stdin.buffer.fileno(), out)
            else:
                with open(path, "rb") as src:
                    _spool(src.fileno(), out)
        shown = "stdin" if dash else str(path)
        if not tmp.stat().st_size:
            raise AudioInputError(f"input {shown} is empty: nothing came through the pipe")
        said: list = []
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                yield tmp
        except SpeechCodecError as e:  # say what the user gave, not the spool file's name
            message = str(e).replace(str(tmp), shown)
            if message == str(e):
                raise
            raise type(e)(message) from None
        finally:
            for w in said:  # the same in warnings, said once the spooled file is done with
                text = str(w.message).replace(str(tmp), shown)
                warnings.warn_explicit(text, w.category, w.filename, w.lineno)


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
        if isinstance(exc, OSError) and str(exc.filename) == str(self.tmp):  # name the output, not its spool
            self._cleanup()
            raise OSError(exc.errno, exc.strerror, "-" if self.to_stdout else str(self.path)) from None
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
            self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            return
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError as exc:  # a name too long was never made; anything else is worth saying
            if exc.errno != errno.ENAMETOOLONG:
                raise
