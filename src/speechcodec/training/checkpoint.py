"""A run's work folder and its checkpoint: what a rerun of the same command resumes from.

The checkpoint holds the weights and optimiser moments (the discriminator's too), the step,
both rate controllers' state, the best validation so far and the settings it was written with;
a run with other settings refuses it, or (``restart_on_change``) starts afresh.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from speechcodec.errors import TrainingError
from speechcodec.files import AtomicWriter
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.modelfile import load_model_file
from speechcodec.training.config import TrainConfig
from speechcodec.training.rate import RateController
from speechcodec.training.selection import Selection

CHECKPOINT_FILE = "checkpoint.pt"  # in the work folder: what a rerun resumes from


def work_folder(out_path: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> Path:
    """Where a training run keeps its checkpoints: ``work_dir``, else ``out_path`` with ``.work``."""
    return Path(work_dir) if work_dir else Path(out_path).with_suffix(".work")


def resume_note(work: Path) -> str:
    """What a rerun of a stopped training does, for the message it stops with."""
    if (work / CHECKPOINT_FILE).exists():
        return f"rerun the same command to resume from the last checkpoint in {work}"
    return f"no checkpoint was written yet in {work}: a rerun starts afresh"


@dataclass
class Trainables:
    """What learns: the codec and, in an adversarial run, the discriminator, with their optimisers."""

    model: CodecModel
    optimizer: torch.optim.Optimizer
    disc: torch.nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None

    def state(self) -> dict:
        extra = {"discriminator": self.disc.state_dict(),
                 "discriminator_optimizer": self.disc_optimizer.state_dict()} if self.disc is not None else {}
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), **extra}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.disc is not None:
            self.disc.load_state_dict(state["discriminator"])
            self.disc_optimizer.load_state_dict(state["discriminator_optimizer"])


@dataclass
class Resumed:
    """Where a resumed run stands: its step and the training time of the runs before it
    (``restarted``: a checkpoint with other settings was there and is gone)."""

    step: int = 0
    seconds_before: float = 0.0
    restarted: bool = False


def save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError
    torch.save(state, buffer)
    with AtomicWriter(path) as tmp:  # a kill leaves the old checkpoint or the new one
        tmp.write_bytes(buffer.getbuffer())


def write_checkpoint(path: Path, step: int, seconds: float, parts: Trainables, rate: RateController,
                     selection: Selection, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    save_checkpoint(path, {
        "step": step, "rate_lambda": rate.rate_lambda, "goal_kbps": rate.goal_kbps,
        "best": selection.best, "best_step": selection.best_step, "train_seconds": seconds,
        **parts.state(), "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
    })


def read_checkpoint(work: Path, device: torch.device, parts: Trainables, rate: RateController,
                    selection: Selection, model_cfg: ModelConfig, cfg: TrainConfig,
                    restart_on_change: bool, clear_stale: bool) -> Resumed:
    """Load the work folder's checkpoint, if any, into ``parts``, ``rate`` and ``selection``.

    One written with other settings is an error, or with ``restart_on_change`` a fresh start
    (``clear_stale``: its checkpoint and best weights are deleted then)."""
    path = work / CHECKPOINT_FILE
    if not path.exists():
        return Resumed()
    state = torch.load(path, map_location=device, weights_only=True)
    # Settings added after a checkpoint was written count as their defaults.
    saved = {**asdict(TrainConfig(bitrate_bps=cfg.bitrate_bps)), **state["train_config"]}
    if state["model_config"] == model_cfg.to_dict() and saved == asdict(cfg):
        parts.load(state)
        rate.rate_lambda, rate.goal_kbps = state["rate_lambda"], state["goal_kbps"]
        selection.best, selection.best_step = state["best"], state.get("best_step")
        if selection.best_step is None and selection.path.exists():  # written before best_step
            selection.best_step = load_model_file(selection.path).info.get("step")
        return Resumed(state["step"], state.get("train_seconds", 0.0))
    if not restart_on_change:
        raise TrainingError(f"{path} was written with other settings: delete {work} or pass "
                            f"--restart-on-change to start afresh, or rerun with its settings to resume")
    if clear_stale:
        for stale in (path, selection.path):
            stale.unlink(missing_ok=True)
    return Resumed(restarted=True)
