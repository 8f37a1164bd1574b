"""Files in and out, for audio, streams, model files and checkpoints alike: ``-`` for stdin and
stdout, pipes spooled to a regular file, outputs written atomically, an input never written over."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from speechcodec.errors import AudioInputError, SpeechCodecError

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
