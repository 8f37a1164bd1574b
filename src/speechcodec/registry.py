"""Finding models by name: the shipped ones, plus any folder named in $SPEECHCODEC_MODEL_PATH."""

from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from pathlib import Path

from speechcodec.bitstream.container import read_header, stream_bytes
from speechcodec.codec import Codec
from speechcodec.errors import ModelError, UnknownModelError
from speechcodec.model.config import ModelConfig
from speechcodec.modelfile import load_model_file, nominal_bitrate_bps, read_metadata

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MODEL_PATH_ENV = "SPEECHCODEC_MODEL_PATH"


def model_dirs() -> list[Path]:
    """Where models are looked up, first match wins: $SPEECHCODEC_MODEL_PATH, then shipped ones."""
    extra = [Path(p) for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    return extra + [PRETRAINED_DIR]


def list_models() -> list[dict]:
    """Every installed model: ``name``, ``bitrate_bps``, ``sample_rate_hz``, ``arch``, ``path``..."""
    return scan_models()[0]


def scan_models() -> tuple[list[dict], list[str]]:
    """``list_models()``, and a note on each file it passed over: not a model, or a name already
    found in an earlier folder (the first one found is the one used)."""
    seen: dict[str, dict] = {}
    notes: list[str] = []
    for folder in model_dirs():
        if not folder.is_dir():
            notes.append(f"${MODEL_PATH_ENV} names {folder}, which is not a folder")
            continue
        for path in sorted(folder.glob("*.safetensors")):
            try:
                meta = read_metadata(path)
                config = ModelConfig.from_dict(json.loads(meta["config"]))
                info = json.loads(meta.get("info", "{}"))
            except (ModelError, KeyError, ValueError, TypeError) as exc:
                reason = str(exc).splitlines()[0]
                notes.append(f"skipped {reason}" if str(path) in reason else f"skipped {path}: {reason}")
                continue
            name = meta["name"]
            if name in seen:
                notes.append(f"{path} is also named {name!r}: {seen[name]['path']} is used")
                continue
            seen[name] = {
                "name": name,
                "bitrate_bps": nominal_bitrate_bps(info),
                "sample_rate_hz": config.sample_rate_hz,
                "arch": config.arch,
                "frame_rate_hz": config.frame_rate_hz,
                "code_channels": config.code_channels,
                "description": info.get("description", ""),
                "path": str(path),
            }
    return sorted(seen.values(), key=lambda m: (m["bitrate_bps"] or 0, m["name"])), notes


def find_model(name: str) -> Path:
    for model in list_models():
        if model["name"] == name:
            return Path(model["path"])
    names = ", ".join(m["name"] for m in list_models()) or "none"
    raise UnknownModelError(f"no installed model is named {name!r} (installed: {names}); "
                            f"pass a model file path or add its folder to ${MODEL_PATH_ENV}")


def model_for_bitrate(bitrate_bps: float) -> str:
    """Name of the installed model whose nominal bitrate is nearest to ``bitrate_bps``."""
    models = [m for m in list_models() if m["bitrate_bps"]]
    if not models:
        raise UnknownModelError("no installed model declares a bitrate; pass --model")
    return min(models, key=lambda m: abs(m["bitrate_bps"] - bitrate_bps))["name"]


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int, threads: int | None) -> Codec:
    return Codec(load_model_file(path), threads=threads)


def model_path(name_or_path: str | os.PathLike) -> Path:
    """The file of an installed model name, or the given model file path (which must exist)."""
    path = Path(name_or_path)
    if not path.exists():
        if path.suffix == ".safetensors" or os.sep in str(name_or_path):
            raise ModelError(f"model file {path} does not exist")
        path = find_model(str(name_or_path))
    return path


def load(name_or_path: str | os.PathLike, threads: int | None = 1) -> Codec:
    """A :class:`Codec` for an installed model name or a model file path.

    ``threads``: torch threads it codes with (1, the fastest per stream; ``None`` leaves torch's
    setting, which is every core by default)."""
    path = model_path(name_or_path)
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, threads)


def decode(data: bytes, sample_rate_hz: int | None = None):
    """Decode a stream with the installed model named in its header: ``(audio, rate)``."""
    data = stream_bytes(data)
    header, _ = read_header(io.BytesIO(data))
    return load(header.model).decode(data, sample_rate_hz)
