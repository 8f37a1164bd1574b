"""From what a user asks for (``speechcodec train``'s options) to a call of ``train()``:
settings from a config file or the defaults, flags on top, the audio, the validation files, the
number of processes (several GPUs: the command reruns itself under torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from speechcodec.errors import SpeechCodecError
from speechcodec.training.config import TrainConfig


@dataclass(frozen=True)
class TrainRequest:
    """One ``speechcodec train``: where to write, at what rate, with what settings and audio."""

    out: str
    bitrate_bps: int
    config: str | None = None  # a pipeline config file (model, train, overrides)
    model_config_json: str | None = None  # without ``config``: model settings as JSON
    name: str | None = None
    description: str | None = None
    train_manifest: str | None = None
    val_manifest: str | None = None
    data: list[str] = field(default_factory=list)  # instead of a manifest: files or folders
    val_files: int = 0  # without ``val_manifest``: this many files spread over the training audio
    changes: dict = field(default_factory=dict)  # train settings given as flags (steps, seed, ...)
    nproc: int = 0  # processes; 0: the config's ``train.gpus``
    threads: int = 0
    work_dir: str | None = None
    metrics_dir: str | None = None
    restart_on_change: bool = False
    quiet: bool = False


@dataclass(frozen=True)
class TrainPlan:
    """A checked request: the settings, the model's name and how many processes train it."""

    request: TrainRequest
    model_cfg: object  # ModelConfig
    train_cfg: TrainConfig
    name: str
    nproc: int
    bitrates_bps: tuple[int, ...] = ()  # every rate the config trains for (a perceptual model codes them all)

    @property
    def needs_torchrun(self) -> bool:
        return self.nproc > 1 and "LOCAL_RANK" not in os.environ

    def run(self) -> Path | None:
        """Find the audio and train; the model file, or None on a rank that does not write."""
        import torch

        from speechcodec.training.loop import train

        req = self.request
        if req.threads:
            torch.set_num_threads(req.threads)
        audio = training_audio(req)
        val = manifest_paths(req.val_manifest) if req.val_manifest else []
        if req.val_files and not val:  # evenly spread files of the training audio (they stay in it)
            step = max(1, len(audio) // req.val_files)
            val = audio[::step][: req.val_files]
        info = {k: v for k, v in (("description", req.description),
                                  ("config_file", req.config and project_relative(req.config))) if v}
        if self.model_cfg.arch == "perceptual":  # the transform coder's enhancer, once for every rate
            from speechcodec.perceptual.train import settings_from_config, train_in_pipeline

            return train_in_pipeline(settings_from_config(self.model_cfg, self.train_cfg), audio, Path(req.out),
                                     self.name, req.bitrate_bps, self.bitrates_bps or (req.bitrate_bps,),
                                     req.work_dir, req.metrics_dir, val, info, req.quiet)
        return train(self.model_cfg, self.train_cfg, audio, req.out, self.name, val_paths=val,
                     work_dir=req.work_dir, progress=not req.quiet, metrics_dir=req.metrics_dir,
                     restart_on_change=req.restart_on_change, info=info or None)


def plan(req: TrainRequest) -> TrainPlan:
    """Check a request and settle its settings, before any audio is read."""
    from speechcodec.config import load_config, model_name, training_configs
    from speechcodec.model import ModelConfig

    if Path(req.out).suffix != ".safetensors":  # hours of training, then a file no one finds
        raise SpeechCodecError(f"--out {req.out}: a model file is named *.safetensors "
                               "(what `speechcodec models` and --model look for)")
    if req.config:
        config = load_config(req.config)
        overrides = {str(k) for k in (config.get("overrides") or {})}
        if overrides and str(req.bitrate_bps) not in overrides:
            known = ", ".join(sorted(overrides, key=lambda k: (len(k), k)))
            print(f"note: {req.config} has per-bitrate settings for {known} bps, none for {req.bitrate_bps}: "
                  f"training with its base model and train settings", file=sys.stderr)
        model_cfg, train_cfg, gpus = training_configs(config, req.bitrate_bps)
        name = req.name or model_name(config, req.bitrate_bps)
        rates = tuple(int(b) for b in config.get("bitrates_bps") or ())
    else:
        try:
            model_cfg = ModelConfig.from_dict(json.loads(req.model_config_json)) if req.model_config_json \
                else ModelConfig()
            train_cfg = TrainConfig(bitrate_bps=req.bitrate_bps)
        except (ValueError, TypeError) as exc:
            raise SpeechCodecError(f"bad configuration: {exc}") from None
        gpus, name = 1, req.name or Path(req.out).stem
        rates = ()
    try:
        train_cfg = TrainConfig.from_dict({**train_cfg.__dict__, **req.changes})
    except ValueError as exc:
        raise SpeechCodecError(f"bad configuration: {exc}") from None
    nproc = 1 if model_cfg.arch == "perceptual" else req.nproc or gpus  # the enhancer trains in one process
    return TrainPlan(req, model_cfg, train_cfg, name, nproc, rates)


def relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """Run the ``speechcodec`` command ``argv`` again under torchrun with ``nproc`` processes (DDP)."""
    argv = list(argv)
    if "--nproc" in argv:
        i = argv.index("--nproc")
        del argv[i:i + 2]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "speechcodec.cli", *argv]
    return subprocess.call(command)


def audio_files(sources: list[str]) -> list[Path]:
    """Audio files named, or found under folders (recursively)."""
    from speechcodec.data.vctk import find_audio

    files: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files += find_audio(p)
        elif p.is_file():
            files.append(p)
        else:
            raise SpeechCodecError(f"training data {p} does not exist")
    if not files:
        raise SpeechCodecError(f"no .wav/.flac/.ogg files under {', '.join(sources)}")
    return files


def manifest_paths(path: str) -> list[str]:
    from speechcodec.data.manifest import read_manifest

    return read_manifest(path, columns=("path",))["path"].tolist()


def training_audio(req: TrainRequest) -> list[str]:
    if req.train_manifest:
        return manifest_paths(req.train_manifest)
    if req.data:
        return [str(p) for p in audio_files(req.data)]
    raise SpeechCodecError("name the training audio: --train-manifest CSV or --data DIR")


PROJECT_MARKERS = (".git", "pyproject.toml", "Snakefile", "dvc.yaml")


def project_relative(path: str) -> str:
    """A config file's path as a model records it: relative to its project (the nearest folder above
    it holding .git, pyproject.toml, a Snakefile or dvc.yaml), so that ``scripts/retrain.py`` finds it
    from the project root wherever training ran; outside any project, the path as given."""
    full = Path(path).resolve()
    for folder in full.parents:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return full.relative_to(folder).as_posix()
    return path
