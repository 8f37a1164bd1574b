"""The two controllers that keep a run's *real* bitrate on its target.

- Every step, lambda (the weight of kbps in the loss) is multiplied by
  ``exp(gain * clip(est / goal - 1, -1, 1))``: above the goal it grows, below it shrinks.
- At every checkpoint the validation files are really range-coded, and
  ``goal = target * est_train / real_val`` (smoothed) corrects for the gap between the estimate
  on training crops and the bytes written for whole validation files (pauses, headers).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from speechcodec.model import CodecModel
from speechcodec.training.config import TrainConfig
from speechcodec.training.data import Batches

LAMBDA_RANGE = (1e-5, 100.0)


class RateController:
    """Lambda and the goal it steers the training estimate to (both saved in checkpoints)."""

    def __init__(self, cfg: TrainConfig, rate_lambda: float | None = None, goal_kbps: float | None = None):
        self.target_kbps = cfg.bitrate_bps / 1000
        self.gain = cfg.controller_gain
        self.lr_ref = cfg.controller_lr_ref
        self.rate_lambda = cfg.rate_lambda if rate_lambda is None else rate_lambda
        self.goal_kbps = self.target_kbps if goal_kbps is None else goal_kbps
        self.window_kbps: list[float] = []  # training-rate estimates since the last checkpoint

    def step(self, measured_kbps: float, lr: float) -> float:
        """Move lambda after a step that estimated ``measured_kbps``; returns the rate it acted on
        (the goal itself for a non-finite estimate: lambda stays as it is)."""
        if math.isfinite(measured_kbps):
            self.window_kbps.append(measured_kbps)
        else:
            measured_kbps = self.goal_kbps
        # The rate answers lambda at a speed proportional to the step size: with lr_ref set, the
        # gain follows the scheduled learning rate.
        gain = self.gain * (lr / self.lr_ref if self.lr_ref else 1.0)
        self.rate_lambda *= math.exp(gain * max(-1.0, min(1.0, measured_kbps / self.goal_kbps - 1)))
        self.rate_lambda = min(max(self.rate_lambda, LAMBDA_RANGE[0]), LAMBDA_RANGE[1])
        return measured_kbps

    def correct(self, kbps_real: float, kbps_estimated_val: float) -> None:
        """After a validation: steer the training estimate so that the real rate hits the target."""
        ratio = kbps_estimated_val / max(kbps_real, 1e-6)
        mean_kbps = float(np.mean(self.window_kbps)) if self.window_kbps else self.goal_kbps
        est_to_val = mean_kbps / max(kbps_estimated_val, 1e-6)
        self.goal_kbps = 0.5 * self.goal_kbps + 0.5 * self.target_kbps * ratio * est_to_val

    def start_from(self, training_kbps: float, kbps_real: float) -> None:
        """For weights whose real rate is known (a continued run's start): the goal that gives the
        target, so the rate holds from the first step instead of dipping until the first checkpoint."""
        self.goal_kbps = self.target_kbps * training_kbps / max(kbps_real, 1e-6)

    def new_window(self) -> None:
        self.window_kbps = []


@torch.no_grad()
def training_estimate_kbps(model: CodecModel, batches: Batches, batch_audio_s: float, amp: bool,
                           device: torch.device, count: int = 8) -> float:
    """The mean rate the training loss sees (kbps) over the first ``count`` batches of the run."""
    model.train()
    total = 0.0
    for i in range(count):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, _, bits = model(batches.at(i))
        total += float(bits) / batch_audio_s / 1000
    return total / count
