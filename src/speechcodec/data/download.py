"""Resumable, verified HTTP download: Range requests, a progress bar, size and SHA-256 checks.

The transfer goes to ``DEST.part``; only a verified file is renamed to ``DEST`` (the rename is
the completion mark). An existing ``DEST`` is never deleted or overwritten: if it does not match
the checksum, that is an error the user resolves.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from speechcodec.errors import DataError

BLOCK_BYTES = 1 << 20


def sha256_of(path: Path, progress: bool = False) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc="sha256",
                                     disable=not progress or size < (64 << 20)) as bar:
        for block in iter(lambda: f.read(BLOCK_BYTES), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _fetch(url: str, part: Path, timeout_s: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``, asking for a byte range when ``part`` has data."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "speechcodec", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the part is whole
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            offset = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5],
                disable=not progress) as bar:
            while True:
                block = response.read1(BLOCK_BYTES)  # what has arrived: kept if the user stops it
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


TIMEOUT_S = 20.0  # the longest a silent server is waited for, per attempt (and between bytes)
RETRIES = 3  # resumed attempts after the first: a dead server fails in about a minute and a half


def download(url: str, dest: str | os.PathLike, sha256: str | None = None,
             size_bytes: int | None = None, retries: int = RETRIES, timeout_s: float = TIMEOUT_S,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is there; resume partial transfers.

    Each failed attempt is said on stderr (what failed, what comes next), progress bar or not:
    a server that accepts and never answers is not waited on in silence.

    Raises:
        DataError: network failure after ``retries`` resumed attempts (the partial file stays,
            so the next call resumes), a size or checksum mismatch (the bad download is
            removed), or an existing ``dest`` that fails the checksum (left untouched).
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 and sha256_of(dest, progress) != sha256.lower():
            raise DataError(f"{dest} exists but its SHA-256 is not {sha256}; it was left untouched: "
                            f"move it away to download afresh")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout_s, progress)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:  # ENOSPC
                raise DataError(f"disk full while downloading to {part}; free space and rerun "
                                f"to resume") from None
            have = part.stat().st_size if part.exists() else 0
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                reason = f"no answer from the server in {timeout_s:g} s"
            if attempt == retries:
                kept = f"{have} bytes kept in {part}, rerun to resume" if have else "nothing was written"
                raise DataError(f"download of {url} failed ({reason}); {kept}") from None
            pause_s = min(2.0**attempt * 0.1, 5.0)
            tqdm.write(f"download of {url}: attempt {attempt + 1} of {retries + 1} failed ({reason}); "
                       f"trying again in {pause_s:g} s", file=sys.stderr)
            time.sleep(pause_s)
    got = part.stat().st_size
    if size_bytes is not None and got != size_bytes:
        part.unlink()
        raise DataError(f"download of {url} has {got} bytes, expected {size_bytes}; removed it")
    if sha256:
        digest = sha256_of(part, progress)
        if digest != sha256.lower():
            part.unlink()
            raise DataError(f"download of {url} is corrupt (SHA-256 {digest[:12]}..., expected "
                            f"{sha256[:12]}...); removed it, rerun to fetch it again")
    os.replace(part, dest)
    return dest
