"""Rate-distortion training of one model per target bitrate: resumable, GPU-ready, multi-GPU.

The parts: the step and its loss (``step``), the rate controllers (``rate``), validation and
checkpoint selection with roll-back (``selection``), checkpoint and resume (``checkpoint``),
logs (``logs``), what a model file records of its run (``lineage``), the processes of a
multi-GPU run (``distributed``). This module puts them together.

Every batch is drawn from a generator seeded by (seed, rank, step), so a resumed run sees the
same batches as an uninterrupted one: on the CPU the result is identical.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from speechcodec.model import CodecModel, ModelConfig
from speechcodec.modelfile import ModelFile, load_model_file, save_model
from speechcodec.registry import model_path
from speechcodec.training.adversarial import MultiResolutionDiscriminator
from speechcodec.training.checkpoint import (
    CHECKPOINT_FILE,
    Trainables,
    read_checkpoint,
    work_folder,
    write_checkpoint,
)
from speechcodec.training.config import TrainConfig
from speechcodec.training.data import TrainingData
from speechcodec.training.distributed import Distributed, cpu_has_bfloat16
from speechcodec.training.lineage import initial_state, run_info
from speechcodec.training.logs import RunLogs
from speechcodec.training.rate import RateController, training_estimate_kbps
from speechcodec.training.selection import Selection, validate
from speechcodec.training.step import learning_rate, training_step


def build_trainables(model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device) -> Trainables:
    """A fresh codec (and discriminator, when the loss has adversarial terms) with its optimisers."""
    model = CodecModel(model_cfg).to(device)
    if cfg.decoder_only:
        for p in [*model.autoencoder.encoder.parameters(), *model.prior.parameters()]:
            p.requires_grad_(False)
    # The prior has few parameters and must follow the moving code distribution closely: a
    # faster learning rate for it keeps the estimated rate honest early in training.
    optimizer = torch.optim.Adam([
        {"params": [p for p in model.autoencoder.parameters() if p.requires_grad], "lr_scale": 1.0},
        {"params": [p for p in model.prior.parameters() if p.requires_grad], "lr_scale": cfg.prior_lr_scale},
    ], lr=cfg.lr)
    if not (cfg.adversarial_weight or cfg.feature_matching_weight):
        return Trainables(model, optimizer)
    disc = MultiResolutionDiscriminator().to(device)
    return Trainables(model, optimizer, disc,
                      torch.optim.Adam(disc.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.9)))


@dataclass
class Run:
    """One training run's parts, as the loop, the checkpoints and the end share them."""

    name: str
    model_cfg: ModelConfig
    cfg: TrainConfig
    dist: Distributed
    data: TrainingData
    parts: Trainables
    rate: RateController
    selection: Selection
    logs: RunLogs
    work: Path
    start: ModelFile | None  # the model a continued run starts from
    amp: bool
    progress: bool
    seconds_before: float = 0.0  # wall-clock training time of earlier runs that this one resumes
    started: float = 0.0
    skipped: int = 0  # updates skipped for a non-finite loss or gradient
    rollbacks: int = 0
    last_real_kbps: float = math.nan

    def say(self, text: str) -> None:
        if self.dist.main:
            tqdm.write(f"train {self.name}: {text}")


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
    dist = Distributed.from_environment(cfg.device)
    work = work_folder(out_path, work_dir)
    logs = RunLogs(Path(metrics_dir) if metrics_dir else work)
    for folder in (work, logs.folder):
        folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = TrainingData.load(model_cfg, cfg, audio_paths, val_paths, dist.rank, dist.device)
    parts = build_trainables(model_cfg, cfg, dist.device)
    rate, selection = RateController(cfg), Selection(work, cfg, name)
    resumed = read_checkpoint(work, dist.device, parts, rate, selection, model_cfg, cfg,
                              restart_on_change, clear_stale=dist.main)
    if resumed.restarted and dist.main:
        logs.remove()
    start = load_model_file(model_path(cfg.init_from)) if cfg.init_from else None
    if resumed.step == 0 and start:  # a fresh run that continues an earlier model
        parts.model.load_state_dict(initial_state(start, model_cfg))
    if dist.main:  # a fresh run keeps no rows of an earlier, unfinished one
        logs.start_at(resumed.step)
    amp = cfg.amp == "on" or (cfg.amp == "auto" and dist.device.type == "cuda")
    run = Run(name, model_cfg, cfg, dist, data, parts, rate, selection, logs, work, start, amp, progress,
              resumed.seconds_before)
    if amp and dist.device.type == "cpu" and cpu_has_bfloat16() is False:
        run.say("note: train.amp is 'on' but this CPU has no bfloat16 instructions, so autocast is "
                "emulated and many times slower than float32; set amp: auto to train in float32")
    step = fit(run, resumed.step, stop_after)
    dist.barrier()
    if step < cfg.steps or not dist.main:
        return None
    return finish(run, step, Path(out_path), info)


def fit(run: Run, step: int, stop_after: int | None) -> int:
    """Train from ``step`` to the end (or ``stop_after``), checkpointing on the way; the step reached."""
    cfg, parts, dist = run.cfg, run.parts, run.dist
    net, disc_net = dist.wrap(parts.model), dist.wrap(parts.disc)
    run.started, steps_this_run = time.time(), 0
    if step == 0 and run.start:
        validate_start(run)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {run.name}", dynamic_ncols=True,
               disable=not (run.progress and dist.main))
    parts.model.train()
    while step < cfg.steps and (stop_after is None or step < stop_after):
        lr = learning_rate(cfg, step)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        result = training_step(net, disc_net, parts, run.data.batches.at(step), cfg, run.rate.rate_lambda,
                               step, run.amp, run.data.batch_audio_s)
        run.skipped += not result.updated
        step, steps_this_run = step + 1, steps_this_run + 1
        measured = run.rate.step(dist.mean(result.kbps), lr)  # every rank applies the same update
        if dist.main and (step % cfg.log_every == 0 or step == cfg.steps):
            speed = steps_this_run * run.data.batch_audio_s * dist.world / max(1e-6, time.time() - run.started)
            run.logs.step(result.row(step, measured, run.rate.rate_lambda, lr, speed))
            bar.set_postfix(loss=f"{result.loss.item():.3f}", kbps=f"{measured:.2f}",
                            real=f"{run.last_real_kbps:.2f}", skipped=run.skipped, refresh=False)
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint(run, step)
    bar.close()
    return step


def validate_start(run: Run) -> None:
    """A continued run's starting weights are the first candidate: a run that collapses or blows
    up before its first checkpoint on target rolls back to them rather than ending with nothing.
    Their real rate also sets the rate goal, so the rate holds from the first step."""
    rate, data = run.rate, run.data
    if run.dist.main and data.val_audio:
        v = validate(run.parts.model, run.model_cfg, data.val_audio, run.name)
        run.last_real_kbps = v["kbps_real"]
        rate.start_from(training_estimate_kbps(run.parts.model, data.batches, data.batch_audio_s, run.amp,
                                               run.dist.device), v["kbps_real"])
        is_best = run.selection.consider(v, 0, rate)
        run.logs.validation([0, v["kbps_real"], v["kbps_estimated_val"], v["distortion"], rate.goal_kbps,
                             int(is_best), 0])
    rate.goal_kbps = run.dist.broadcast(rate.goal_kbps)


def checkpoint(run: Run, step: int) -> None:
    """Validate (rank 0), steer the rate goal, keep the best, roll back a diverged run, write the
    logs and the checkpoint."""
    rate, selection, dist = run.rate, run.selection, run.dist
    diverged, val_row = False, None
    if dist.main and run.data.val_audio:
        v = validate(run.parts.model, run.model_cfg, run.data.val_audio, run.name)
        run.last_real_kbps = v["kbps_real"]
        rate.correct(v["kbps_real"], v["kbps_estimated_val"])
        is_best = selection.consider(v, step, rate)
        diverged = selection.diverged(v)
        val_row = [step, v["kbps_real"], v["kbps_estimated_val"], v["distortion"], rate.goal_kbps,
                   int(is_best), int(diverged)]
    if dist.broadcast(float(diverged)):  # every rank rolls back together
        back = selection.roll_back(run.parts.model, run.parts.optimizer, rate)
        run.rollbacks += 1
        if dist.main:
            run.say(f"step {step} diverged (validation distortion {val_row[3]:.3g}, best "
                    f"{selection.best:.3g}); back to step {back.info.get('step')}")
    if dist.main:
        run.logs.flush()
        if val_row:
            run.logs.validation(val_row)
        write_checkpoint(run.work / CHECKPOINT_FILE, step, run.seconds_before + time.time() - run.started,
                         run.parts, rate, selection, run.model_cfg, run.cfg)
    rate.new_window()
    rate.goal_kbps = dist.broadcast(rate.goal_kbps)


def finish(run: Run, step: int, out_path: Path, info: dict | None) -> Path:
    """Write the run's model (``info``: more facts for its file): the best validated one on
    target, else the final weights."""
    model = run.parts.model.cpu().float().eval()
    meta = run_info(run.cfg, step, run.dist.describe(), run.seconds_before, time.time() - run.started,
                    run.data.batch_audio_s * run.dist.world, (run.data.files, run.data.seconds),
                    run.skipped, run.rollbacks, run.start, info)
    chosen = run.selection.result()
    if chosen is not None:
        meta["selected_step"] = chosen.info.get("step")
        return save_model(out_path, chosen.build(), chosen.pmf, run.name, meta)
    meta["selected_step"] = step
    if run.selection.best_step == 0 and run.progress:
        run.say(f"no checkpoint within {run.cfg.rate_tolerance:.0%} of {run.rate.target_kbps:g} kbps; "
                "writing the final weights (see val_metrics.csv)")
    return save_model(out_path, model, model.prior.freeze(run.model_cfg.max_symbol), run.name, meta)
