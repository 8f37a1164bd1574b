"""Finding models by name: the shipped ones, plus any folder named in $SPEECHCODEC_MODEL_PATH."""

from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from pathlib import Path

from speechcodec.bitstream.container import read_header, stream_bytes
from speechcodec.codec import Codec
from speechcodec.codecs import capabilities, codec_record
from speechcodec.errors import ModelError, UnknownModelError
from speechcodec.model.config import ModelConfig
from speechcodec.modelfile import load_model_file, nominal_bitrate_bps, read_metadata

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MODEL_PATH_ENV = "SPEECHCODEC_MODEL_PATH"
# Models no longer installed (issue 44), and what replaces each (docs/retired/ keeps their cards,
# with how pc compares; git history keeps their weights).
RETIRED = {"sc-6k": "pc-6k", "sc-12k": "pc-12k", "sc-24k": "pc-24k"}
RETIRED_AT = "280caa9"  # the last commit that installed them


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
            base = meta["name"]
            for name, bps in _names(base, config, info):
                if name in seen:
                    notes.append(f"{path} is also named {name!r}: {seen[name]['path']} is used")
                    continue
                seen[name] = {
                    "name": name,
                    "model": base,
                    "bitrate_bps": bps,
                    "sample_rate_hz": config.sample_rate_hz,
                    "arch": config.arch,
                    "frame_rate_hz": config.frame_rate_hz,
                    "code_channels": config.code_channels,
                    "description": info.get("description", ""),
                    "path": str(path),
                }
    return sorted(seen.values(), key=lambda m: (m["bitrate_bps"] or 0, m["name"])), notes


def _names(base: str, config: ModelConfig, info: dict) -> list[tuple[str, int | None]]:
    """A model's names and nominal rates: its own, or, for a model that codes every rate, one per
    rate its info lists (``pc-6k``: the model ``pc`` at 6000 bps)."""
    rates = info.get("bitrates_bps") if codec_record(config.arch).every_rate else None
    if not rates:
        return [(base, nominal_bitrate_bps(info))]
    return [(f"{base}-{bps / 1000:g}k", int(bps)) for bps in rates]


def _installed(name: str) -> dict:
    """The listed model of this name, or of this model name (``bitrate_bps`` None: its file's own
    nominal rate)."""
    models = list_models()
    for model in models:
        if model["name"] == name:
            return model
    by_model = [m for m in models if m["model"] == name]
    if by_model:
        return dict(by_model[0], bitrate_bps=None)
    if name in RETIRED:
        raise UnknownModelError(
            f"model {name!r} was retired (docs/retired/{name}.md says why): use {RETIRED[name]}; "
            f"to decode an old stream, fetch its weights (as that card says) into a folder named by "
            f"${MODEL_PATH_ENV}")
    names = ", ".join(m["name"] for m in models) or "none"
    raise UnknownModelError(f"no installed model is named {name!r} (installed: {names}); "
                            f"pass a model file path or add its folder to ${MODEL_PATH_ENV}")


def find_model(name: str) -> Path:
    return Path(_installed(name)["path"])


def model_for_bitrate(bitrate_bps: float) -> str:
    """Name of the installed model whose nominal bitrate is nearest to ``bitrate_bps``."""
    models = [m for m in list_models() if m["bitrate_bps"]]
    if not models:
        raise UnknownModelError("no installed model declares a bitrate; pass --model")
    return min(models, key=lambda m: abs(m["bitrate_bps"] - bitrate_bps))["name"]


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int, threads: int | None) -> Codec:
    model_file = load_model_file(path)
    return codec_record(model_file.config.arch).codec_class()(model_file, threads=threads)


def _resolve(name_or_path: str | os.PathLike) -> tuple[Path, int | None]:
    """(model file, the rate its name says: ``pc-12k`` 12000; None for a path or a plain name)."""
    path = Path(name_or_path)
    if path.exists():
        return path, None
    if path.suffix == ".safetensors" or os.sep in str(name_or_path):
        raise ModelError(f"model file {path} does not exist")
    entry = _installed(str(name_or_path))
    return Path(entry["path"]), entry["bitrate_bps"]


def model_path(name_or_path: str | os.PathLike) -> Path:
    """The file of an installed model name, or the given model file path (which must exist)."""
    return _resolve(name_or_path)[0]


def load(name_or_path: str | os.PathLike, threads: int | None = 1, bitrate_bps: int | None = None) -> Codec:
    """A :class:`Codec` for an installed model name or a model file path.

    ``threads``: torch threads it codes with (1, the fastest per stream; ``None`` leaves torch's
    setting, which is every core by default). ``bitrate_bps``: the rate of a model that codes
    every rate (the perceptual family; ``pc-12k`` names one at 12000 too)."""
    path, named_bps = _resolve(name_or_path)
    stat = path.stat()
    codec = _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, threads)
    every_rate = capabilities(codec).every_rate
    if bitrate_bps is not None and not every_rate:
        raise ModelError(f"model {codec.name!r} codes one rate ({codec.bitrate_bps} bps), not {bitrate_bps}")
    rate = bitrate_bps if bitrate_bps is not None else named_bps
    if rate and every_rate:  # a model that codes every rate: at the one asked or named
        codec = codec.at(rate)
    return codec


def load_named(name: str, threads: int | None = 1) -> Codec:
    """:func:`load` of an installed model's name only, never a path: for the name a stream's
    header gives (a stranger's bytes must not name a file to read)."""
    if not isinstance(name, str) or not name or os.sep in name or "/" in name or name in (".", ".."):
        raise UnknownModelError(f"a stream names its model {name!r}: not a model name")
    entry = _installed(name)
    path = Path(entry["path"])
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, threads)


def decode(data: bytes, sample_rate_hz: int | None = None):
    """Decode a stream with the installed model named in its header: ``(audio, rate)``."""
    from speechcodec.bitstream import pipe

    data = stream_bytes(data)
    if data[:4] == pipe.MAGIC:
        header = pipe.read_header(io.BytesIO(data))
    else:
        header, _ = read_header(io.BytesIO(data))
    return load_named(header.model).decode(data, sample_rate_hz)
