"""Where a run starts from and what its model file says about it: the runs behind a continued
model (its lineage), and the facts of this run (steps, device, time, corpus, settings)."""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from speechcodec.errors import ModelMismatchError
from speechcodec.model import ModelConfig
from speechcodec.modelfile import ModelFile
from speechcodec.training.config import TrainConfig


def run_summary(model: ModelFile) -> dict:
    """What a model's own training run was, for the history of a run continued from it."""
    tc = model.info.get("train_config", {})
    keys = ("steps", "device", "train_seconds", "train_files", "train_audio_s", "selected_step",
            "bitrate_bps", "config_file")
    return {"name": model.name, "fingerprint": model.fingerprint, **{k: model.info.get(k) for k in keys},
            "batch_size": tc.get("batch_size"), "lr": tc.get("lr")}


def lineage(start: ModelFile) -> list[dict]:
    """The runs behind a model that training starts from, oldest first (its own run last)."""
    return list(start.info.get("history", [])) + [run_summary(start)]


def initial_state(start: ModelFile, model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Weights (entropy model included) of an installed or saved model to continue training from;
    its configuration must be the one being trained, except that a factorised prior may grow
    contexts (``prior_context: previous``): each context then starts as its channel's prior."""
    state = start.state_dict
    grows = start.config.prior_contexts == 1 < model_cfg.prior_contexts
    if grows and replace(start.config, prior_context=model_cfg.prior_context) == model_cfg:
        k = model_cfg.prior_contexts
        return {key: v.repeat_interleave(k, dim=0) if key.startswith("prior.") else v
                for key, v in state.items()}
    if start.config != model_cfg:
        mine, theirs = model_cfg.to_dict(), start.config.to_dict()
        diff = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here"
                         for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
        raise ModelMismatchError(f"cannot start from {start.path or start.name}: its model configuration "
                                 f"differs ({diff})")
    return state


def run_info(cfg: TrainConfig, steps: int, device: str, seconds_before: float, elapsed: float,
             audio_s_per_step: float, corpus: tuple[int, float], skipped: int, rollbacks: int,
             start: ModelFile | None, info: dict | None) -> dict:
    """What a model file records of the run that made it (``corpus``: files, seconds of audio;
    ``audio_s_per_step``: over every process)."""
    meta = {
        "bitrate_bps": cfg.bitrate_bps,
        "steps": steps,
        "device": device,
        "train_seconds": round(seconds_before + elapsed, 1),  # all runs up to the final step
        "train_seconds_last_run": round(elapsed, 1),
        # over every run up to the final step: a resume that had nothing left to train still says it
        "train_audio_s_per_s": round(steps * audio_s_per_step / max(seconds_before + elapsed, 1e-6), 1),
        "train_files": corpus[0],
        "skipped_updates_last_run": skipped,
        "rollbacks_last_run": rollbacks,
        "train_audio_s": round(corpus[1], 1),
        "train_config": asdict(cfg),
        **(info or {}),
    }
    if start:  # the runs this one continues: a model's card can add them all up
        meta["history"] = lineage(start)
        if "description" not in meta and start.info.get("description"):
            meta["description"] = start.info["description"]  # what ``speechcodec models`` shows
    return meta
