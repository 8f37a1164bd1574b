"""The pipeline's one parameter file (config.yaml): loading it and deriving per-bitrate settings.

Snakemake, DVC and the CLI all read the same file; per-bitrate ``overrides`` change one
bitrate's model or training without touching the others.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from speechcodec.errors import SpeechCodecError
from speechcodec.layout import (
    codec2_run,
    neural_run,
    opus_matched_run,
    opus_run,
    shipped_run,
    transform_matched_run,
    transform_run,
)
from speechcodec.model.config import ModelConfig
from speechcodec.training.config import TrainConfig

# The top-level sections (workflow/schemas/config.schema.yaml validates each in full for the
# pipeline; a test keeps the two lists equal).
SECTIONS = ("name", "dataset", "data", "model", "train", "bitrates_bps", "overrides", "eval", "listen", "ship")


HISTORY = "history"  # config/history/: configs that only record how the shipped models were made


def moved_config(path: Path) -> Path:
    """``path``, or where it moved: a config that only records history lives in ``config/history/``
    now, and model files made with it still name ``config/NAME.yaml``."""
    moved = path.parent / HISTORY / path.name
    return moved if not path.is_file() and moved.is_file() else path


def load_config(path: str | os.PathLike, seen: set[Path] | None = None) -> dict:
    """The settings of a YAML file; a top-level ``base: other.yaml`` key starts from that file's."""
    import yaml

    path = moved_config(Path(path))
    if not path.is_file():
        raise SpeechCodecError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpeechCodecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise SpeechCodecError(f"{path} does not hold a mapping of settings")
    base = config.pop("base", None)
    if base:  # a variant: this file's settings over those of ``base`` (relative to this file)
        if seen and path.resolve() in seen:
            raise SpeechCodecError(f"{path}: its 'base' settings lead back to itself")
        parent = load_config(path.parent / base, (seen or set()) | {path.resolve()})
        config = _merge(parent, config)
    unknown = sorted(str(k) for k in set(config) - set(SECTIONS))
    if unknown:
        raise SpeechCodecError(f"{path}: unknown section(s) {', '.join(unknown)} "
                               f"(known: base, {', '.join(SECTIONS)})")
    return config


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def bitrate_settings(config: dict, bitrate_bps: int) -> dict:
    """The ``model`` and ``train`` sections for one bitrate, with its overrides applied."""
    overrides = (config.get("overrides") or {}).get(str(bitrate_bps)) or \
        (config.get("overrides") or {}).get(int(bitrate_bps)) or {}
    return {"model": _merge(config.get("model", {}), overrides.get("model", {})),
            "train": _merge(config.get("train", {}), overrides.get("train", {}))}


def training_configs(config: dict, bitrate_bps: int) -> tuple[ModelConfig, TrainConfig, int]:
    """(model config, train config, number of GPUs/processes) for one bitrate."""
    settings = bitrate_settings(config, bitrate_bps)
    train = dict(settings["train"])
    gpus = int(train.pop("gpus", 1))
    try:
        return (ModelConfig.from_dict(settings["model"]),
                TrainConfig.from_dict({**train, "bitrate_bps": int(bitrate_bps)}), gpus)
    except (TypeError, ValueError) as exc:
        raise SpeechCodecError(f"bad model/train settings for {bitrate_bps} bps: {exc}") from None


def model_name(config: dict, bitrate_bps: int) -> str:
    """A trained model's name: ``NAME-6000bps``; a perceptual config's one model (every rate): ``NAME``."""
    name = config.get("name", "speechcodec")
    if (config.get("model") or {}).get("arch") == "perceptual":
        return name
    return f"{name}-{int(bitrate_bps)}bps"


def eval_names(config: dict) -> list[str]:
    """Names of the eval runs a config asks for, as the pipeline lays them out."""
    names = []
    for bps in config["bitrates_bps"]:
        run = neural_run(int(bps))
        names += [run, opus_matched_run(run), transform_matched_run(run)]
    names += [opus_run(int(bps)) for bps in config["eval"]["opus_grid_bps"]]
    names += [transform_run(int(bps)) for bps in config["eval"]["opus_grid_bps"]]
    names += [codec2_run(int(bps)) for bps in config["eval"]["codec2_modes_bps"]]
    for model in shipped_models(config):
        run = shipped_run(model)
        names += [run, opus_matched_run(run), transform_matched_run(run)]
    return names


def shipped_models(config: dict) -> list[str]:
    """The installed models a config also scores on its test speakers (``eval.shipped_models``)."""
    return [str(m) for m in (config.get("eval") or {}).get("shipped_models") or []]


def eval_dirs(config: dict, parent: str | os.PathLike) -> list[Path]:
    dirs = [Path(parent) / name for name in eval_names(config)]
    missing = [str(d) for d in dirs if not (d / "summary.json").exists()]
    if missing:
        raise SpeechCodecError(f"eval runs missing: {', '.join(missing)}")
    return dirs
