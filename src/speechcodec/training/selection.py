"""Which weights a run ends with: at every checkpoint the model is really range-coded on the
validation files; the best distortion within the rate tolerance is kept as ``best.safetensors``,
which is both the run's result and where a diverged run rolls back to."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from speechcodec.codec import AutoencoderCodec
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.modelfile import ModelFile, load_model_file, save_model
from speechcodec.training.config import TrainConfig
from speechcodec.training.losses import normalized_mse, stft_loss
from speechcodec.training.rate import RateController

BEST_FILE = "best.safetensors"


def validate(model: CodecModel, cfg: ModelConfig, val_audio: list[np.ndarray], name: str) -> dict:
    """Freeze the tables, really range-code the validation audio, and measure distortion."""
    cpu = CodecModel(cfg)
    cpu.load_state_dict({k: v.detach().cpu().float() for k, v in model.state_dict().items()})
    cpu.eval()
    pmf = cpu.prior.freeze(cfg.max_symbol)
    codec = AutoencoderCodec(ModelFile(name, cfg, cpu.state_dict(), pmf))
    total_bytes, total_s, est_bits, distortion = 0, 0.0, 0.0, 0.0
    with torch.inference_mode():
        for audio in val_audio:
            data = codec.encode(audio, cfg.sample_rate_hz)
            total_bytes += len(data)
            total_s += len(audio) / cfg.sample_rate_hz
            est_bits += codec.coder.estimate_bits(codec.codes(audio, cfg.sample_rate_hz))
            decoded, _ = codec.decode(data)
            x = torch.from_numpy(audio)[None, None]
            x_hat = torch.from_numpy(decoded)[None, None]
            distortion += float(stft_loss(x_hat, x) + 2.0 * normalized_mse(x_hat, x))
    return {"kbps_real": total_bytes * 8 / total_s / 1000, "kbps_estimated_val": est_bits / total_s / 1000,
            "distortion": distortion / len(val_audio), "pmf": pmf, "model": cpu}


class Selection:
    """The best validated weights on target so far: their distortion (``best``) and step
    (``best_step``; 0: the starting weights of a continued run, None: none yet)."""

    def __init__(self, work: Path, cfg: TrainConfig, name: str, best: float = math.inf,
                 best_step: int | None = None):
        self.path = work / BEST_FILE
        self.cfg = cfg
        self.name = name
        self.best = best
        self.best_step = best_step

    def consider(self, v: dict, step: int, rate: RateController) -> bool:
        """Save validated weights as the best (the roll-back target) when on target and better.

        A continued run's starting weights (step 0) are only a roll-back target, never the result:
        its first checkpoint on target replaces them even at a higher distortion (they may sit at
        the other end of the tolerance band, where the distortion is lower for the extra bits)."""
        if abs(v["kbps_real"] / rate.target_kbps - 1) > self.cfg.rate_tolerance:
            return False
        if not (v["distortion"] < self.best or (self.best_step == 0 and step > 0)):
            return False
        self.best, self.best_step = v["distortion"], step
        save_model(self.path, v["model"], v["pmf"], self.name,
                   {"bitrate_bps": self.cfg.bitrate_bps, "step": step, "rate_lambda": rate.rate_lambda,
                    "goal_kbps": rate.goal_kbps})
        return True

    def diverged(self, v: dict) -> bool:
        """Whether a validation is so much worse than the best that the run must roll back.
        NaN compares False: a non-finite distortion counts as diverged too."""
        return bool(self.cfg.rollback_factor) and self.path.exists() and not (
            v["distortion"] <= self.cfg.rollback_factor * self.best)

    def roll_back(self, model: CodecModel, optimizer: torch.optim.Optimizer, rate: RateController) -> ModelFile:
        """Put the best weights (and the controller's state then) back; Adam starts afresh."""
        back = load_model_file(self.path)
        model.load_state_dict(back.state_dict)
        optimizer.state.clear()  # the moments belong to the diverged weights
        rate.rate_lambda = back.info.get("rate_lambda", rate.rate_lambda)
        rate.goal_kbps = back.info.get("goal_kbps", rate.goal_kbps)
        return back

    def result(self) -> ModelFile | None:
        """The run's result: the best validated model on target; None when there is none beyond a
        continued run's starting weights (the final weights are the result then)."""
        if self.path.exists() and self.best_step != 0:
            return load_model_file(self.path)
        return None
