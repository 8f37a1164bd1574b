"""Evaluation: code every test utterance into a real file, decode it, and score it.

Works for any codec with ``encode(audio, rate) -> bytes``, ``decode(bytes) -> (audio, rate)``
and ``payload_bytes(bytes)``: the neural codec, Opus, Codec 2 and the textbook transform coder
alike, so scoring never branches on the kind of codec. Scoring runs in parallel processes; PESQ
is CPU-bound.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from speechcodec.audio import read_audio
from speechcodec.codecs import capabilities
from speechcodec.data.manifest import read_manifest
from speechcodec.errors import DataError
from speechcodec.metrics import METRICS as _METRICS
from speechcodec.metrics import PESQ_RATE_HZ, all_metrics, to_pesq_rate

METRICS = tuple(m.name for m in _METRICS)  # speechcodec.metrics.METRICS: the one list
SCORE_COLUMNS = ["codec", "utterance", "speaker", "duration_s", "bytes", "kbps", *METRICS]
OPUS_PREFIX = "opus:"
CODEC2_PREFIX = "codec2:"
TRANSFORM_PREFIX = "transform:"

_worker: dict = {}


def codec_kind(spec: str) -> str:
    """``"opus"``, ``"codec2"``, ``"transform"`` or ``"neural"``: what a codec spec names."""
    for kind, prefix in (("opus", OPUS_PREFIX), ("codec2", CODEC2_PREFIX), ("transform", TRANSFORM_PREFIX)):
        if spec.startswith(prefix):
            return kind
    return "neural"


def load_codec(spec: str):
    """``opus:BPS`` for libopus at that target, ``codec2:BPS`` for that Codec 2 mode,
    ``transform:BPS`` for the textbook transform coder at that target, else a speechcodec model
    name or file (``MODEL@BPS``: a model that codes every rate, at that one)."""
    if spec.startswith(OPUS_PREFIX):
        from speechcodec.baselines import OpusCodec

        return OpusCodec(int(float(spec[len(OPUS_PREFIX):])))
    if spec.startswith(CODEC2_PREFIX):
        from speechcodec.baselines import Codec2Codec

        return Codec2Codec(int(float(spec[len(CODEC2_PREFIX):])))
    if spec.startswith(TRANSFORM_PREFIX):
        from speechcodec.baselines import TransformCodec

        return TransformCodec(int(float(spec[len(TRANSFORM_PREFIX):])))
    import speechcodec

    if "@" in spec:
        model, bps = spec.rsplit("@", 1)
        return speechcodec.load(model, bitrate_bps=int(float(bps)))
    return speechcodec.load(spec)


def codes_every_rate(spec: str) -> bool:
    """Whether the model ``spec`` names codes every rate (its family says; the perceptual one does)."""
    return capabilities(load_codec(spec)).every_rate


def _init_worker(spec: str, streams_dir: str, decoded_dir: str | None, postfilter: str | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    _worker.update(codec=load_codec(spec), streams=Path(streams_dir),
                   decoded=Path(decoded_dir) if decoded_dir else None, postfilter=postfilter)


def _score_one(row: dict) -> dict:
    codec = _worker["codec"]
    audio, rate = read_audio(row["path"])
    ref = to_pesq_rate(audio, rate)
    data = codec.encode(ref, PESQ_RATE_HZ)
    stream = _worker["streams"] / f"{row['utterance']}.bin"
    stream.write_bytes(data)  # a real file: the bitrate is measured from what was written
    options = {"postfilter": _worker["postfilter"]} if _worker.get("postfilter") else {}
    decoded, out_rate = codec.decode(stream.read_bytes(), **options)
    deg = to_pesq_rate(decoded, out_rate)
    if _worker["decoded"] is not None:
        sf.write(_worker["decoded"] / f"{row['utterance']}.flac", np.clip(deg, -1, 1), PESQ_RATE_HZ,
                 subtype="PCM_16")
    duration_s = len(ref) / PESQ_RATE_HZ
    size = codec.payload_bytes(data)
    return {"codec": codec.name, "utterance": row["utterance"], "speaker": row["speaker"],
            "duration_s": duration_s, "bytes": size, "kbps": size * 8 / duration_s / 1000,
            **all_metrics(ref, deg)}


def evaluate(spec: str, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
             workers: int | None = None, keep_audio: bool = False, progress: bool = True,
             target_bitrate_bps: int | None = None, matched_to: str | None = None,
             note: str = "", postfilter: str | None = None) -> dict:
    """Score codec ``spec`` on a test manifest; writes ``scores.csv`` and ``summary.json``.

    ``matched_to`` names the neural model whose measured bitrate an Opus run was set to;
    ``postfilter`` (neural models) overrides what the streams say, e.g. ``"off"``.
    """
    rows = read_manifest(manifest_path).to_dict("records")
    if not rows:
        raise DataError(f"manifest {manifest_path} lists no utterances")
    if target_bitrate_bps and codec_kind(spec) == "neural" and "@" not in spec and codes_every_rate(spec):
        spec = f"{spec}@{int(target_bitrate_bps)}"  # one model, every rate: at the one asked
    out = Path(out_dir)
    streams = out / "streams"
    streams.mkdir(parents=True, exist_ok=True)
    decoded = out / "decoded" if keep_audio else None
    if decoded:
        decoded.mkdir(exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(rows)))
    init = (spec, str(streams), str(decoded) if decoded else None, postfilter)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init) as pool:
        results = list(tqdm(pool.map(_score_one, rows), total=len(rows), desc=f"score {spec}",
                            unit="utt", disable=not progress))
    scores = pd.DataFrame(results, columns=SCORE_COLUMNS)
    scores.to_csv(out / "scores.csv", index=False)
    total_s = float(scores["duration_s"].sum())
    codec_name = scores["codec"].iloc[0]
    kind = codec_kind(spec)
    summary = {
        "codec": codec_name,
        "spec": spec,
        "kind": kind,
        "arch": load_codec(spec).model_file.config.arch if kind == "neural" else None,
        "target_bitrate_bps": target_bitrate_bps,
        "matched_to": matched_to,
        "kbps": float(scores["bytes"].sum()) * 8 / total_s / 1000,
        "items": len(scores),
        "duration_s": round(total_s, 3),
        "note": note,
        "postfilter": postfilter,
    }
    for metric in METRICS:
        values = scores[metric].dropna()
        summary[metric] = float(values.mean()) if len(values) else math.nan
        summary[f"{metric}_std"] = float(values.std(ddof=0)) if len(values) else math.nan
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


MATCH_TOLERANCE = 0.02  # an Opus run whose real rate misses the neural model's by more is repeated


def evaluate_opus_matched(neural: dict, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
                          attempts: int = 3, **kwargs) -> dict:
    """Opus at the real bitrate a neural model measured (``neural``: its summary).

    libopus's real rate falls short of its nominal one (a few per cent on read speech, far more
    on sparse audio), so a run that misses the neural rate by more than ``MATCH_TOLERANCE`` is
    repeated at a corrected nominal rate (scaled by the miss, then along the secant of the last
    two runs; ``attempts`` runs at most) and the run nearest the neural rate is kept in
    ``out_dir``. Below what Opus can reach it runs at its lowest nominal rate and says so (the
    comparison is there, not extrapolated).
    """
    import shutil

    from speechcodec.baselines.opus import MAX_BITRATE_BPS, MIN_BITRATE_BPS

    out = Path(out_dir)
    kbps = float(neural["kbps"])
    bps = max(MIN_BITRATE_BPS, int(round(kbps * 1000)))
    tried: dict[int, dict] = {}
    while len(tried) < attempts and bps not in tried:
        tried[bps] = evaluate(f"opus:{bps}", manifest_path, out.with_name(f"{out.name}.opus-{bps}.tmp"),
                              target_bitrate_bps=bps, matched_to=neural["codec"], **kwargs)
        real = tried[bps]["kbps"]
        if abs(real / kbps - 1) <= MATCH_TOLERANCE or (bps == MIN_BITRATE_BPS and real > kbps):
            break
        runs = [(b, s["kbps"]) for b, s in tried.items()]
        if len(runs) > 1 and runs[-1][1] != runs[-2][1]:  # nominal bps per real kbps, from the last two
            (b0, k0), (b1, k1) = runs[-2:]
            step = (kbps - k1) * (b1 - b0) / (k1 - k0)
        else:
            step = bps * (kbps / real - 1)
        bps = min(MAX_BITRATE_BPS, max(MIN_BITRATE_BPS, int(round(bps + step))))
    bps = min(tried, key=lambda b: abs(tried[b]["kbps"] - kbps))
    summary = tried[bps]
    if bps == MIN_BITRATE_BPS and summary["kbps"] > kbps * (1 + MATCH_TOLERANCE):
        summary["note"] = (f"Opus goes no lower than {summary['kbps']:.2f} kbps here (nominal "
                           f"{MIN_BITRATE_BPS / 1000:g} kbps): compared there, not extrapolated")
    chosen = out.with_name(f"{out.name}.opus-{bps}.tmp")
    (chosen / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    chosen.rename(out)
    for other in tried:
        shutil.rmtree(out.with_name(f"{out.name}.opus-{other}.tmp"), ignore_errors=True)
    return summary


def evaluate_transform_matched(neural: dict, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
                               **kwargs) -> dict:
    """The textbook transform coder at the real bitrate a neural model measured (``neural``: its
    summary). Its rate control meets the target on every file from the bytes it writes, so one
    run lands within a few per cent; no correction loop is needed."""
    bps = max(1, int(round(float(neural["kbps"]) * 1000)))
    return evaluate(f"{TRANSFORM_PREFIX}{bps}", manifest_path, out_dir, target_bitrate_bps=bps,
                    matched_to=neural["codec"], **kwargs)
