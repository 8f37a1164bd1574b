"""Rate-distortion training of one model per target bitrate: resumable, GPU-ready, multi-GPU.

loss = stft_weight * STFT + mse_weight * normalised MSE + lambda * kbps, where kbps is the ideal
rate of the rounded codes under the learned prior (plus, when asked, adversarial and
feature-matching terms against a discriminator trained alongside: ``speechcodec.adversarial``).
Two controllers keep the *real* bitrate on target:

- every step, lambda is multiplied by ``exp(gain * clip(est / goal - 1, -1, 1))``: above the goal
  it grows, below it shrinks;
- at every checkpoint the model's tables are frozen and the validation files are really
  range-coded; ``goal = target * est_train / real_val`` (smoothed) then corrects for the gap
  between the estimate on training crops and the bytes written for whole validation files
  (pauses, headers).

Every batch is drawn from a generator seeded by (seed, rank, step), so a resumed run sees the
same batches as an uninterrupted one: on the CPU the result is identical.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import soxr
import torch
from tqdm import tqdm

from speechcodec.adversarial import (
    MultiResolutionDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from speechcodec.audio import active_rms, read_audio
from speechcodec.codec import Codec
from speechcodec.errors import ModelMismatchError, TrainingError
from speechcodec.files import AtomicWriter
from speechcodec.losses import normalized_mse, stft_loss
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.modelfile import ModelFile, load_model_file, save_model
from speechcodec.registry import model_path
from speechcodec.training.config import TrainConfig

TRAIN_FIELDS = ["step", "loss", "stft", "mse", "kbps_estimated", "rate_lambda", "lr", "grad_norm",
                "audio_s_per_s", "adversarial", "feature_matching", "discriminator"]
VAL_FIELDS = ["step", "kbps_real", "kbps_estimated_val", "distortion", "rate_goal_kbps", "best", "rolled_back"]


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86 AVX512-BF16 / AMX, Arm BF16); None when unknown.

    Without them torch emulates bfloat16, and autocast on the CPU runs many times slower than
    float32 (22 s against 2.1 s per training step on an AVX2-only AMD EPYC).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for, but torch sees no GPU (leave --device out: "
                            "it trains on the CPU then)")
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
        raise TrainingError(f"no usable training audio (need files of at least {min_samples} samples)")
    return corpus


class Batches:
    """Random crops with level and polarity augmentation; batch ``step`` depends only on
    (seed, rank, step), which is what makes resumption exact.

    The corpus is packed into one flat float32 tensor on the training device (116 min of 16 kHz
    speech is 450 MB), so a batch is a single gather there: no per-step host work beyond drawing
    the crop positions, and no host-to-device copy of audio."""

    def __init__(self, corpus: list[np.ndarray], crop: int, batch_size: int, gain_db: float,
                 seed: int, rank: int = 0, device: torch.device | str = "cpu"):
        self.crop = crop
        self.batch_size = batch_size
        self.gain_db = gain_db
        self.seed = seed
        self.rank = rank
        sizes = np.array([len(a) for a in corpus], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.starts_max = sizes - crop + 1
        self.weights = self.starts_max / self.starts_max.sum()
        self.flat = torch.from_numpy(np.concatenate(corpus)).to(device)
        self.window = torch.arange(crop, device=device)

    def positions(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Where each crop of batch ``step`` starts in the packed corpus, and its gain (signed)."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        files = rng.choice(len(self.starts_max), size=self.batch_size, p=self.weights)
        starts = np.empty(self.batch_size, np.int64)
        scales = np.empty(self.batch_size, np.float32)
        for i, f in enumerate(files):
            starts[i] = self.offsets[f] + rng.integers(0, self.starts_max[f])
            gain = 10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)
            scales[i] = gain if rng.random() < 0.5 else -gain
        return starts, scales

    def at(self, step: int) -> torch.Tensor:
        """Batch ``step``: ``[batch_size, 1, crop]`` on the corpus's device."""
        starts, scales = self.positions(step)
        device = self.flat.device
        index = torch.from_numpy(starts).to(device)[:, None] + self.window
        return (self.flat[index] * torch.from_numpy(scales).to(device)[:, None])[:, None, :]


def _save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError
    torch.save(state, buffer)
    with AtomicWriter(path) as tmp:  # a kill leaves the old checkpoint or the new one
        tmp.write_bytes(buffer.getbuffer())


def _append_csv(path: Path, header: list[str], rows: list[list]) -> None:
    new = not path.exists()
    if not new:  # written by a version with fewer columns: pad the old rows
        with open(path, newline="") as f:
            old = list(csv.reader(f))
        if old and old[0] != header and old[0] == header[: len(old[0])]:
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows([header] + [r + [""] * (len(header) - len(r)) for r in old[1:]])
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if int(r[0]) <= step])


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


def validate(model: CodecModel, cfg: ModelConfig, val_audio: list[np.ndarray], name: str) -> dict:
    """Freeze the tables, really range-code the validation audio, and measure distortion."""
    cpu = CodecModel(cfg)
    cpu.load_state_dict({k: v.detach().cpu().float() for k, v in model.state_dict().items()})
    cpu.eval()
    pmf = cpu.prior.freeze(cfg.max_symbol)
    codec = Codec(ModelFile(name, cfg, cpu.state_dict(), pmf))
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


def _adversarial_step(disc, disc_net, disc_optimizer, x, x_hat, loss, cfg: TrainConfig, step: int,
                      amp: bool, device: torch.device):
    """Update the discriminator on this batch, then add the codec's adversarial and
    feature-matching terms (from ``adversarial_from_step``) against the updated one.

    Returns the codec's loss and the three values logged, as tensors (no GPU sync every step):
    adversarial, feature matching, discriminator; the first two None before ``adversarial_from_step``."""
    disc.requires_grad_(True)
    n = x.shape[0]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        # real and decoded speech as one batch: one call through the discriminator, not two
        both = disc_net(torch.cat([x, x_hat.detach()]))
        real = [(logits[:n], [f[:n] for f in maps]) for logits, maps in both]
        l_disc = discriminator_loss(real, [(logits[n:], []) for logits, _ in both])
    disc_optimizer.zero_grad(set_to_none=True)
    l_disc.backward()
    norm = torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip_norm or float("inf"))
    if torch.isfinite(l_disc) and torch.isfinite(norm):  # as for the codec: skip a non-finite update
        disc_optimizer.step()
    disc.requires_grad_(False)  # the codec's terms below move the codec only
    if step < cfg.adversarial_from_step:
        return loss, [None, None, l_disc.detach()]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        fake = disc(x_hat)
        l_adv, l_fm = generator_loss(fake).float(), feature_matching_loss(real, fake).float()
    loss = loss + cfg.adversarial_weight * l_adv + cfg.feature_matching_weight * l_fm
    return loss, [l_adv.detach(), l_fm.detach(), l_disc.detach()]


CHECKPOINT_FILE = "checkpoint.pt"  # in the work folder: what a rerun resumes from


def work_folder(out_path: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> Path:
    """Where a training run keeps its checkpoints: ``work_dir``, else ``out_path`` with ``.work``."""
    return Path(work_dir) if work_dir else Path(out_path).with_suffix(".work")


def resume_note(work: Path) -> str:
    """What a rerun of a stopped training does, for the message it stops with."""
    if (work / CHECKPOINT_FILE).exists():
        return f"rerun the same command to resume from the last checkpoint in {work}"
    return f"no checkpoint was written yet in {work}: a rerun starts afresh"


def train(model_cfg: ModelConfig, cfg: TrainConfig, audio_paths: Sequence[str | os.PathLike],
          out_path: str | os.PathLike, name: str, val_paths: Sequence[str | os.PathLike] = (),
          work_dir: str | os.PathLike | None = None, progress: bool = True,
          stop_after: int | None = None, info: dict | None = None,
          metrics_dir: str | os.PathLike | None = None, restart_on_change: bool = False) -> Path | None:
    """Train (or resume) and write the best model, with frozen tables, to ``out_path``.

    ``work_dir`` (default: ``out_path`` with ``.work``) holds ``checkpoint.pt``, ``best.safetensors``,
    ``metrics.csv`` and ``val_metrics.csv``; rerunning the same call resumes from the checkpoint.
    Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel; rank 0 writes.
    ``stop_after`` ends the run after that step without writing the model (returns None).
    ``metrics_dir`` puts the two CSVs elsewhere; ``restart_on_change`` starts afresh, instead of
    refusing, when the checkpoint was written with other settings (what a pipeline wants).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    out_path = Path(out_path)
    work = work_folder(out_path, work_dir)
    work.mkdir(parents=True, exist_ok=True)
    logs = Path(metrics_dir) if metrics_dir else work
    logs.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    spf = model_cfg.samples_per_frame
    crop = max(spf, round(cfg.crop_s * model_cfg.sample_rate_hz) // spf * spf)
    corpus = load_corpus(audio_paths, model_cfg.sample_rate_hz, model_cfg.input_rms, crop)
    batches = Batches(corpus, crop, cfg.batch_size, cfg.gain_db, cfg.seed, rank, device)
    corpus_files, corpus_s = len(corpus), sum(len(a) for a in corpus) / model_cfg.sample_rate_hz
    del corpus  # packed into ``batches``
    val_audio = []
    if main and val_paths:
        val_audio = load_corpus(list(val_paths)[: cfg.val_max_files], model_cfg.sample_rate_hz,
                                model_cfg.input_rms, spf)

    model = CodecModel(model_cfg).to(device)
    fixed = [*model.autoencoder.encoder.parameters(), *model.prior.parameters()] if cfg.decoder_only else []
    for p in fixed:
        p.requires_grad_(False)
    # The prior has few parameters and must follow the moving code distribution closely: a
    # faster learning rate for it keeps the estimated rate honest early in training.
    optimizer = torch.optim.Adam([
        {"params": [p for p in model.autoencoder.parameters() if p.requires_grad], "lr_scale": 1.0},
        {"params": [p for p in model.prior.parameters() if p.requires_grad], "lr_scale": cfg.prior_lr_scale},
    ], lr=cfg.lr)
    disc = disc_optimizer = None
    if cfg.adversarial_weight or cfg.feature_matching_weight:
        disc = MultiResolutionDiscriminator().to(device)
        disc_optimizer = torch.optim.Adam(disc.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.9))
    step, rate_lambda, goal_kbps, best = 0, cfg.rate_lambda, cfg.bitrate_bps / 1000, math.inf
    best_step = None  # the step of the best weights; 0: the starting weights of a continued run
    seconds_before = 0.0  # wall-clock training time of earlier runs that this one resumes
    ckpt_path, best_path = work / CHECKPOINT_FILE, work / "best.safetensors"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        # Settings added after a checkpoint was written count as their defaults.
        saved = {**asdict(TrainConfig(bitrate_bps=cfg.bitrate_bps)), **state["train_config"]}
        same = state["model_config"] == model_cfg.to_dict() and saved == asdict(cfg)
        if not same and not restart_on_change:
            raise TrainingError(f"{ckpt_path} was written with other settings: delete {work} or pass "
                                f"--restart-on-change to start afresh, or rerun with its settings to resume")
        if same:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if disc is not None:
                disc.load_state_dict(state["discriminator"])
                disc_optimizer.load_state_dict(state["discriminator_optimizer"])
            step, rate_lambda = state["step"], state["rate_lambda"]
            goal_kbps, best = state["goal_kbps"], state["best"]
            best_step = state.get("best_step")
            if best_step is None and best_path.exists():  # a checkpoint from before best_step
                best_step = load_model_file(best_path).info.get("step")
            seconds_before = state.get("train_seconds", 0.0)
        elif main:
            for stale in (ckpt_path, best_path, logs / "metrics.csv", logs / "val_metrics.csv"):
                stale.unlink(missing_ok=True)
    start = load_model_file(model_path(cfg.init_from)) if cfg.init_from else None
    if step == 0 and start:  # a fresh run that continues an earlier model
        model.load_state_dict(initial_state(start, model_cfg))
    if main:  # a fresh run keeps no rows of an earlier, unfinished one
        _truncate_csv(logs / "metrics.csv", step or -1)
        _truncate_csv(logs / "val_metrics.csv", step or -1)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    disc_net = torch.nn.parallel.DistributedDataParallel(disc) if world > 1 and disc is not None else disc
    amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if amp and device.type == "cpu" and main and cpu_has_bfloat16() is False:
        tqdm.write(f"train {name}: note: train.amp is 'on' but this CPU has no bfloat16 instructions, "
                   "so autocast is emulated and many times slower than float32; set amp: auto to train "
                   "in float32")

    batch_audio_s = crop / model_cfg.sample_rate_hz * cfg.batch_size
    target_kbps = cfg.bitrate_bps / 1000
    decay_from = int(cfg.steps * cfg.lr_decay_from)
    started, run_steps = time.time(), 0
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {name}", disable=not (progress and main),
               dynamic_ncols=True)
    log_rows: list[list] = []
    last_real = math.nan
    window_kbps: list[float] = []  # training-rate estimates since the last checkpoint
    skipped = 0  # updates skipped for a non-finite loss or gradient
    rollbacks = 0

    def keep_if_best(v: dict, step: int) -> bool:
        """Save validated weights as the best (the roll-back target) when on target and better.

        A continued run's starting weights (step 0) are only a roll-back target, never the result:
        its first checkpoint on target replaces them even at a higher distortion (they may sit at
        the other end of the tolerance band, where the distortion is lower for the extra bits)."""
        nonlocal best, best_step
        if abs(v["kbps_real"] / target_kbps - 1) > cfg.rate_tolerance:
            return False
        if not (v["distortion"] < best or (best_step == 0 and step > 0)):
            return False
        best, best_step = v["distortion"], step
        save_model(best_path, v["model"], v["pmf"], name, {"bitrate_bps": cfg.bitrate_bps, "step": step,
                                                           "rate_lambda": rate_lambda, "goal_kbps": goal_kbps})
        return True

    if main and step == 0 and start and val_audio:
        # The starting weights are the first candidate: a run that collapses or blows up before
        # its first checkpoint on target rolls back to them rather than ending with nothing.
        v = validate(model, model_cfg, val_audio, name)
        last_real = v["kbps_real"]
        # The controller steers the training estimate onto a goal; the goal that gives the target
        # real rate is known for the starting weights, so the rate holds from the first step
        # instead of dipping (and costing distortion) until the first checkpoint corrects it.
        goal_kbps = target_kbps * training_estimate_kbps(model, batches, batch_audio_s, amp,
                                                         device) / max(v["kbps_real"], 1e-6)
        is_best = keep_if_best(v, 0)
        _append_csv(logs / "val_metrics.csv", VAL_FIELDS, [[0, v["kbps_real"], v["kbps_estimated_val"],
                                                            v["distortion"], goal_kbps, int(is_best), 0]])
    if world > 1 and step == 0 and start:
        goal = torch.tensor([goal_kbps], dtype=torch.float64, device=device)
        torch.distributed.broadcast(goal, 0)
        goal_kbps = float(goal)
    model.train()
    while step < cfg.steps and (stop_after is None or step < stop_after):
        lr = cfg.lr if step < decay_from else cfg.lr * (cfg.steps - step) / max(1, cfg.steps - decay_from)
        if step < cfg.warmup_steps:
            lr *= (step + 1) / cfg.warmup_steps
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        x = batches.at(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            x_hat, _, bits = net(x)
        x_hat = x_hat.float()
        kbps = bits / batch_audio_s / 1000
        l_stft = stft_loss(x_hat, x)
        l_mse = normalized_mse(x_hat, x)
        loss = cfg.stft_weight * l_stft + cfg.mse_weight * l_mse + rate_lambda * kbps
        adversarial_row = [None, None, None]
        if disc is not None:
            loss, adversarial_row = _adversarial_step(disc, disc_net, disc_optimizer, x, x_hat, loss, cfg,
                                                      step, amp, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # A non-finite loss or gradient would poison Adam's state and every later step: skip
        # that update (the step still counts, so schedules and resumption stay aligned).
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm or float("inf"))
        if torch.isfinite(loss) and torch.isfinite(grad_norm):
            optimizer.step()
        else:
            skipped += 1
        step += 1
        run_steps += 1
        measured = kbps.detach()
        if world > 1:  # every rank applies the same lambda update
            torch.distributed.all_reduce(measured)
            measured /= world
        measured = float(measured)
        if math.isfinite(measured):
            window_kbps.append(measured)
        else:
            measured = goal_kbps  # leave lambda as it is
        gain = cfg.controller_gain * (lr / cfg.controller_lr_ref if cfg.controller_lr_ref else 1.0)
        rate_lambda *= math.exp(gain * max(-1.0, min(1.0, measured / goal_kbps - 1)))
        rate_lambda = min(max(rate_lambda, 1e-5), 100.0)
        if main and (step % cfg.log_every == 0 or step == cfg.steps):
            speed = run_steps * batch_audio_s * world / max(1e-6, time.time() - started)
            log_rows.append([step, loss.item(), l_stft.item(), l_mse.item(), measured, rate_lambda,
                             lr, float(grad_norm), round(speed, 2),
                             *("" if v is None else float(v) for v in adversarial_row)])
            bar.set_postfix(loss=f"{loss.item():.3f}", kbps=f"{measured:.2f}",
                            real=f"{last_real:.2f}", skipped=skipped, refresh=False)
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            diverged = False
            if main:
                val_row = None
                if val_audio:
                    v = validate(model, model_cfg, val_audio, name)
                    last_real = v["kbps_real"]
                    # Steer the training estimate so that the real validation rate hits the target.
                    ratio = v["kbps_estimated_val"] / max(v["kbps_real"], 1e-6)
                    mean_kbps = float(np.mean(window_kbps)) if window_kbps else goal_kbps
                    est_to_val = mean_kbps / max(v["kbps_estimated_val"], 1e-6)
                    goal_kbps = 0.5 * goal_kbps + 0.5 * target_kbps * ratio * est_to_val
                    is_best = keep_if_best(v, step)
                    # NaN compares False: a non-finite distortion counts as diverged too.
                    diverged = bool(cfg.rollback_factor) and best_path.exists() and not (
                        v["distortion"] <= cfg.rollback_factor * best)
                    val_row = [step, v["kbps_real"], v["kbps_estimated_val"], v["distortion"],
                               goal_kbps, int(is_best), int(diverged)]
            if world > 1:  # every rank rolls back together
                flag = torch.tensor([int(diverged)], device=device)  # NCCL wants tensors on the GPU
                torch.distributed.broadcast(flag, 0)
                diverged = bool(flag)
            if diverged:
                back = load_model_file(best_path)
                model.load_state_dict(back.state_dict)
                optimizer.state.clear()  # the moments belong to the diverged weights
                rate_lambda = back.info.get("rate_lambda", rate_lambda)
                goal_kbps = back.info.get("goal_kbps", goal_kbps)
                rollbacks += 1
                if main:
                    tqdm.write(f"train {name}: step {step} diverged (validation distortion "
                               f"{val_row[3]:.3g}, best {best:.3g}); back to step {back.info.get('step')}")
            if main:
                _append_csv(logs / "metrics.csv", TRAIN_FIELDS, log_rows)
                if val_row:
                    _append_csv(logs / "val_metrics.csv", VAL_FIELDS, [val_row])
                log_rows = []
                _save_checkpoint(ckpt_path, {
                    "step": step, "rate_lambda": rate_lambda, "goal_kbps": goal_kbps, "best": best,
                    "best_step": best_step,
                    "train_seconds": seconds_before + time.time() - started,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
                    **({"discriminator": disc.state_dict(),
                        "discriminator_optimizer": disc_optimizer.state_dict()} if disc is not None else {}),
                })
            window_kbps = []
            if world > 1:
                goal = torch.tensor([goal_kbps], dtype=torch.float64, device=device)
                torch.distributed.broadcast(goal, 0)
                goal_kbps = float(goal)
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    if step < cfg.steps or not main:
        return None
    model = model.cpu().float().eval()
    elapsed = time.time() - started
    meta = {
        "bitrate_bps": cfg.bitrate_bps,
        "steps": step,
        "device": f"{device.type} x{world}" if world > 1 else str(device),
        "train_seconds": round(seconds_before + elapsed, 1),  # all runs up to the final step
        "train_seconds_last_run": round(elapsed, 1),
        # over every run up to the final step: a resume that had nothing left to train still says it
        "train_audio_s_per_s": round(step * batch_audio_s * world / max(seconds_before + elapsed, 1e-6), 1),
        "train_files": corpus_files,
        "skipped_updates_last_run": skipped,
        "rollbacks_last_run": rollbacks,
        "train_audio_s": round(corpus_s, 1),
        "train_config": asdict(cfg),
        **(info or {}),
    }
    if start:  # the runs this one continues: a model's card can add them all up
        meta["history"] = lineage(start)
        if "description" not in meta and start.info.get("description"):
            meta["description"] = start.info["description"]  # what ``speechcodec models`` shows
    if best_path.exists() and best_step != 0:  # the best validated model on target, else the final one
        chosen = load_model_file(best_path)
        meta["selected_step"] = chosen.info.get("step")
        return save_model(out_path, chosen.build(), chosen.pmf, name, meta)
    meta["selected_step"] = step
    if best_step == 0 and progress:
        tqdm.write(f"train {name}: no checkpoint within {cfg.rate_tolerance:.0%} of {target_kbps:g} kbps; "
                   f"writing the final weights (see val_metrics.csv)")
    return save_model(out_path, model, model.prior.freeze(model_cfg.max_symbol), name, meta)

