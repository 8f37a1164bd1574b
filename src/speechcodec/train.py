"""Rate-distortion training of one model per target bitrate, resumable from atomic checkpoints.

loss = stft_weight * STFT + mse_weight * normalised MSE + lambda * kbps, where kbps is the ideal
rate of the rounded codes under the learned prior. A simple multiplicative controller moves lambda
so the measured rate settles on the target: above target, lambda grows; below, it shrinks.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
from tqdm import tqdm

from speechcodec.audio import read_audio
from speechcodec.codec import active_rms
from speechcodec.losses import normalized_mse, stft_loss
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.modelfile import save_model


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``bitrate_bps`` is the target the rate controller steers to."""

    bitrate_bps: int
    steps: int = 2000
    batch_size: int = 16
    crop_s: float = 1.0
    lr: float = 1.5e-3
    lr_decay_from: float = 0.7  # fraction of steps after which the LR decays linearly to 0
    mse_weight: float = 2.0
    stft_weight: float = 1.0
    rate_lambda: float = 0.05  # initial weight of kbps in the loss
    controller_gain: float = 0.02  # how fast lambda reacts to a relative rate error
    prior_lr_scale: float = 10.0  # learning-rate multiplier of the entropy model
    gain_db: float = 6.0  # random level augmentation, +-dB
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    device: str = "auto"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_corpus(paths: Sequence[str | os.PathLike], sample_rate_hz: int, input_rms: float,
                min_samples: int) -> list[np.ndarray]:
    """Read, resample and level-normalise training audio once (active RMS -> ``input_rms``)."""
    corpus = []
    for path in paths:
        audio, rate = read_audio(path)
        if rate != sample_rate_hz:
            audio = soxr.resample(audio, rate, sample_rate_hz).astype(np.float32)
        rms, _ = active_rms(iter((audio,)), sample_rate_hz)
        if rms == 0.0 or len(audio) < min_samples:
            continue
        corpus.append((audio * (input_rms / rms)).astype(np.float32))
    if not corpus:
        raise ValueError(f"no usable training audio (need files of at least {min_samples} samples)")
    return corpus


class Batches:
    """Random crops with level and polarity augmentation, from a seeded numpy generator."""

    def __init__(self, corpus: list[np.ndarray], crop: int, batch_size: int, gain_db: float,
                 seed: int):
        self.corpus = corpus
        self.crop = crop
        self.batch_size = batch_size
        self.gain_db = gain_db
        lengths = np.array([len(a) - crop + 1 for a in corpus], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.rng = np.random.default_rng(seed)

    def next(self) -> np.ndarray:
        batch = np.empty((self.batch_size, 1, self.crop), np.float32)
        files = self.rng.choice(len(self.corpus), size=self.batch_size, p=self.weights)
        for i, f in enumerate(files):
            audio = self.corpus[f]
            start = self.rng.integers(0, len(audio) - self.crop + 1)
            gain = 10 ** (self.rng.uniform(-self.gain_db, self.gain_db) / 20)
            sign = 1.0 if self.rng.random() < 0.5 else -1.0
            batch[i, 0] = audio[start: start + self.crop] * (gain * sign)
        return batch


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a kill leaves the old checkpoint or the new one
    finally:
        tmp.unlink(missing_ok=True)


def train(model_cfg: ModelConfig, cfg: TrainConfig, audio_paths: Sequence[str | os.PathLike],
          out_path: str | os.PathLike, name: str, work_dir: str | os.PathLike | None = None,
          progress: bool = True, stop_after: int | None = None) -> Path | None:
    """Train (or resume) and write the model file with frozen tables to ``out_path``.

    ``work_dir`` holds ``checkpoint.pt`` and ``metrics.csv``; a rerun resumes from the checkpoint.
    ``stop_after`` ends the run after that many steps without writing the model (for testing
    resumption); returns None then.
    """
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir else out_path.with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    spf = model_cfg.samples_per_frame
    crop = max(spf, round(cfg.crop_s * model_cfg.sample_rate_hz) // spf * spf)
    corpus = load_corpus(audio_paths, model_cfg.sample_rate_hz, model_cfg.input_rms, crop)
    batches = Batches(corpus, crop, cfg.batch_size, cfg.gain_db, cfg.seed)

    model = CodecModel(model_cfg).to(device)
    # The prior has few parameters and must track the moving code distribution closely: a
    # faster learning rate for it keeps the estimated rate honest early in training.
    optimizer = torch.optim.Adam([
        {"params": model.autoencoder.parameters(), "lr_scale": 1.0},
        {"params": model.prior.parameters(), "lr_scale": cfg.prior_lr_scale},
    ], lr=cfg.lr)
    step, rate_lambda = 0, cfg.rate_lambda
    ckpt_path = work / "checkpoint.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["model_config"] != model_cfg.to_dict() or state["train_config"] != asdict(cfg):
            raise ValueError(f"{ckpt_path} was written with another configuration; "
                             f"delete {work} to start afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, rate_lambda = state["step"], state["rate_lambda"]
        batches.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])

    metrics_path = work / "metrics.csv"
    fields = ["step", "loss", "stft", "mse", "kbps_estimated", "rate_lambda", "lr"]
    if step == 0 or not metrics_path.exists():
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)
    else:  # drop rows logged after the checkpoint we resume from
        with open(metrics_path) as f:
            rows = [r for r in csv.reader(f)]
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerows(keep)

    frame_seconds = crop / model_cfg.sample_rate_hz * cfg.batch_size
    target_kbps = cfg.bitrate_bps / 1000
    decay_from = int(cfg.steps * cfg.lr_decay_from)
    started = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {name}", disable=not progress,
               dynamic_ncols=True)
    log_rows = []
    model.train()
    while step < cfg.steps:
        if stop_after is not None and step >= stop_after:
            break
        lr = cfg.lr if step < decay_from else cfg.lr * (cfg.steps - step) / max(1, cfg.steps - decay_from)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        x = torch.from_numpy(batches.next()).to(device)
        x_hat, _, bits = model(x)
        kbps = bits / frame_seconds / 1000
        l_stft = stft_loss(x_hat, x)
        l_mse = normalized_mse(x_hat, x)
        loss = cfg.stft_weight * l_stft + cfg.mse_weight * l_mse + rate_lambda * kbps
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        measured = float(kbps.detach())
        # Multiplicative controller on the rounded-code rate: bounded, never negative.
        rate_lambda *= math.exp(cfg.controller_gain * max(-1.0, min(1.0, measured / target_kbps - 1)))
        rate_lambda = min(max(rate_lambda, 1e-5), 100.0)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log_rows.append([step, loss.item(), l_stft.item(), l_mse.item(), measured, rate_lambda, lr])
            bar.set_postfix(loss=f"{loss.item():.3f}", kbps=f"{measured:.2f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            with open(metrics_path, "a", newline="") as f:
                csv.writer(f).writerows(log_rows)
            log_rows = []
            _save_checkpoint(ckpt_path, {
                "step": step, "rate_lambda": rate_lambda,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "numpy_rng": batches.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
            })
    bar.close()
    if step < cfg.steps:
        return None
    model = model.cpu().eval()
    pmf = model.prior.freeze(model_cfg.max_symbol)
    info = {
        "bitrate_bps": cfg.bitrate_bps,
        "steps": step,
        "device": str(device),
        "train_seconds_last_run": round(time.time() - started, 1),
        "train_files": len(corpus),
        "train_audio_s": round(sum(len(a) for a in corpus) / model_cfg.sample_rate_hz, 1),
        "train_config": asdict(cfg),
    }
    return save_model(out_path, model, pmf, name, info)
