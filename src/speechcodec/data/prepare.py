"""The pipeline's view of the data stages: one config in, the same code for every dataset.

``dataset: demo``   synthesise the eSpeak NG corpus (a zip in the VCTK 0.92 layout), extract it
``dataset: vctk``   use ``data.vctk.local_path`` (a zip or an extracted folder) when set, else
                    download ``data.vctk.url`` into ``data.vctk.download_dir`` (resumable,
                    verified), then extract the mic1 audio and transcripts
``dataset: folder`` any folder of audio (``data.folder.path``; speaker = sub-folder)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from speechcodec.data.clean import CleanConfig
from speechcodec.data.demo import ZIP_NAME, build_demo_corpus
from speechcodec.data.download import RETRIES, TIMEOUT_S, download
from speechcodec.data.vctk import extract_vctk, scan_folder, scan_vctk
from speechcodec.errors import DataError

DATASETS = ("demo", "vctk", "folder")
SOURCE_FILE = "source.json"


def fetch_corpus(config: dict, out_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Make the corpus available under ``out_dir``: ``vctk/`` extracted, or ``source.json``."""
    out = Path(out_dir)
    dataset = config.get("dataset")
    if dataset not in DATASETS:
        raise DataError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch_into(config, dataset, out, progress)
    except BaseException:
        if made and out.is_dir() and not any(out.iterdir()):  # a failed fetch leaves no empty corpus
            out.rmdir()
        raise


def _fetch_into(config: dict, dataset: str, out: Path, progress: bool) -> Path:
    if dataset == "folder":
        folder = Path(config["data"]["folder"]["path"]).expanduser().resolve()
        if not folder.is_dir():
            raise DataError(f"data.folder.path {folder} is not a folder")
        (out / SOURCE_FILE).write_text(json.dumps({"dataset": "folder", "path": str(folder)}) + "\n")
        return out
    if dataset == "demo":
        archive = build_demo_corpus(out / ZIP_NAME)
        extract_vctk(archive, out / "vctk", progress=progress)
        archive.unlink()  # the extracted tree is the output; the zip can be rebuilt in seconds
        return out
    vctk = config["data"]["vctk"]
    local = vctk.get("local_path")
    if local:
        local = Path(local).expanduser()
        if local.is_dir():  # an extracted corpus the user already has: point at it, copy nothing
            (out / SOURCE_FILE).write_text(json.dumps({"dataset": "vctk", "path": str(local.resolve())}) + "\n")
            return out
        archive = local
        if not archive.is_file():
            raise DataError(f"data.vctk.local_path {archive} does not exist")
        remove_if_corrupt = False  # never delete a user's file
    else:
        archive = download(vctk["url"], Path(vctk["download_dir"]) / Path(vctk["url"]).name,
                           sha256=vctk.get("sha256"), size_bytes=vctk.get("size_bytes"),
                           timeout_s=float(vctk.get("timeout_s", TIMEOUT_S)),
                           retries=int(vctk.get("retries", RETRIES)), progress=progress)
        remove_if_corrupt = True
    extract_vctk(archive, out / "vctk", remove_if_corrupt=remove_if_corrupt, progress=progress)
    return out


def corpus_items(fetched_dir: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """Candidate items of a fetched corpus and its kind (``vctk`` or ``folder``)."""
    fetched = Path(fetched_dir)
    source = fetched / SOURCE_FILE
    if source.exists():
        info = json.loads(source.read_text())
        if info["dataset"] == "folder":
            return scan_folder(info["path"]), "folder"
        return scan_vctk(info["path"]), "vctk"
    if (fetched / "vctk").is_dir():
        return scan_vctk(fetched / "vctk"), "vctk"
    raise DataError(f"{fetched} holds no fetched corpus; run 'speechcodec data fetch' first")


def clean_config(config: dict, kind: str) -> CleanConfig:
    c = config["data"]["clean"]
    return CleanConfig(sample_rate_hz=int(c["sample_rate_hz"]), min_duration_s=float(c["min_duration_s"]),
                       silence_dbfs=float(c["silence_dbfs"]),
                       require_transcript=bool(c["require_transcript"]) and kind == "vctk")
