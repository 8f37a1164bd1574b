"""Cleaning: keep usable items, resample them once to the model rate, and say why the rest went.

Drop reasons, checked in this order:

- ``no_transcript``: no transcript file, or an empty one (when transcripts are required)
- ``missing_audio``: a transcript without its audio file
- ``unreadable_audio``: the audio file cannot be decoded (empty, corrupt, not audio)
- ``too_short``: shorter than ``min_duration_s``
- ``silence``: the loudest 20 ms frame is below ``silence_dbfs``
- ``duplicate``: the same samples as an item kept earlier (in speaker, utterance order)
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from tqdm import tqdm

from speechcodec.errors import DataError

DROP_REASONS = ("no_transcript", "missing_audio", "unreadable_audio", "too_short", "silence",
                "duplicate")
MANIFEST_COLUMNS = ["speaker", "utterance", "transcript", "duration_s", "path", "source"]
REPORT_COLUMNS = ["speaker", "utterance", "source", "reason", "detail"]


@dataclass(frozen=True)
class CleanConfig:
    sample_rate_hz: int = 16000
    min_duration_s: float = 0.5
    silence_dbfs: float = -60.0
    require_transcript: bool = True


def _read_transcript(path: str) -> str:
    if not path:
        return ""
    try:
        return " ".join(Path(path).read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return ""


def _clean_one(args: tuple[dict, str, CleanConfig]) -> dict:
    """Decide one item; write its cleaned audio when kept. Runs in a worker process."""
    item, out_dir, cfg = args
    base = {"speaker": item["speaker"], "utterance": item["utterance"],
            "source": item["audio_path"] or item["transcript_path"]}
    transcript = _read_transcript(item["transcript_path"])
    if cfg.require_transcript and not transcript:
        return {**base, "reason": "no_transcript", "detail": "no transcript file or an empty one"}
    if not item["audio_path"] or not Path(item["audio_path"]).exists():
        return {**base, "reason": "missing_audio", "detail": "audio file missing"}
    try:
        audio, rate = sf.read(item["audio_path"], dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports corrupt files in many ways
        return {**base, "reason": "unreadable_audio", "detail": str(exc).splitlines()[0][:200]}
    audio = audio.mean(axis=1)
    if not np.isfinite(audio).all():
        return {**base, "reason": "unreadable_audio", "detail": "NaN or infinite samples"}
    duration_s = len(audio) / rate
    if duration_s < cfg.min_duration_s:
        return {**base, "reason": "too_short", "detail": f"{duration_s:.3f} s"}
    frame = max(1, rate // 50)
    usable = len(audio) // frame * frame
    peak_power = float(np.max(np.mean(audio[:usable].reshape(-1, frame) ** 2, axis=1))) if usable else 0.0
    peak_dbfs = 10 * np.log10(max(peak_power, 1e-20))
    if peak_dbfs < cfg.silence_dbfs:
        return {**base, "reason": "silence", "detail": f"loudest frame {peak_dbfs:.1f} dBFS"}
    if rate != cfg.sample_rate_hz:
        audio = soxr.resample(audio, rate, cfg.sample_rate_hz)
    pcm = (np.clip(audio, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)
    rel = Path("audio") / item["speaker"] / f"{item['utterance']}.flac"
    target = Path(out_dir) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    # Encode in memory and write with Python's I/O: libsndfile reports a full disk only as
    # "System error", while os.write raises ENOSPC, which names the problem.
    buf = io.BytesIO()
    sf.write(buf, pcm, cfg.sample_rate_hz, format="FLAC", subtype="PCM_16")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        hint = "disk full; free space and rerun" if exc.errno == errno.ENOSPC else exc.strerror
        raise DataError(f"cannot write {target}: {hint}; no manifest was written") from None
    return {**base, "reason": "", "transcript": transcript, "duration_s": len(pcm) / cfg.sample_rate_hz,
            "path": rel.as_posix(), "sha1": hashlib.sha1(pcm.tobytes()).hexdigest()}


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DataError(f"disk full while writing {path}; nothing was written") from None
        raise


def clean_corpus(items: pd.DataFrame, out_dir: str | os.PathLike, cfg: CleanConfig = CleanConfig(),
                 workers: int | None = None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean ``items`` (columns speaker, utterance, audio_path, transcript_path) into ``out_dir``.

    Writes ``audio/<speaker>/<utterance>.flac`` (mono, 16-bit, ``cfg.sample_rate_hz``),
    ``manifest.csv`` (kept items; paths relative to ``out_dir``), ``report.csv`` (every dropped
    item and why) and ``summary.json`` (counts per reason). Manifests are written last and
    atomically: an interrupted run leaves no manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = items.sort_values(["speaker", "utterance"]).to_dict("records")
    jobs = [(r, str(out), cfg) for r in records]
    workers = workers or os.cpu_count() or 1
    desc = "clean"
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_clean_one, jobs, chunksize=16), total=len(jobs),
                                desc=desc, unit="file", disable=not progress))
    else:
        results = [_clean_one(j) for j in tqdm(jobs, desc=desc, unit="file", disable=not progress)]
    first_of: dict[str, str] = {}
    for r in results:
        if r["reason"]:
            continue
        key = r["sha1"]
        if key in first_of:
            (out / r["path"]).unlink(missing_ok=True)
            r.update(reason="duplicate", detail=f"same samples as {first_of[key]}")
        else:
            first_of[key] = f"{r['speaker']}/{r['utterance']}"
    kept = pd.DataFrame([r for r in results if not r["reason"]], columns=MANIFEST_COLUMNS + ["sha1"])
    kept = kept[MANIFEST_COLUMNS]
    dropped = pd.DataFrame([r for r in results if r["reason"]], columns=REPORT_COLUMNS)
    if kept.empty:
        raise DataError(f"cleaning kept no item of {len(records)}; see the reasons: "
                        f"{dropped['reason'].value_counts().to_dict()}")
    summary = {
        "items_seen": len(records),
        "items_kept": len(kept),
        "speakers_kept": int(kept["speaker"].nunique()),
        "hours_kept": round(float(kept["duration_s"].sum()) / 3600, 4),
        "dropped": {reason: int((dropped["reason"] == reason).sum()) for reason in DROP_REASONS},
    }
    write_csv_atomic(dropped, out / "report.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_csv_atomic(kept, out / "manifest.csv")
    return kept, dropped
