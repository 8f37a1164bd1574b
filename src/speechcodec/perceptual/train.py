"""Training the perceptual family's enhancer on a folder of speech (resumable).

The encoder is not trained: it is the textbook coder's. So a training example is made without a
stream: analyse the speech once (MDCT frames, band levels, the coefficients over their band's
RMS**alpha), then for a random crop and a random quantiser step, quantise and dequantise as the
decoder does (noise fill included, :func:`speechcodec.transform.quantiser.dequantise`) and teach
the network to return the unquantised coefficients: MSE in the normalised domain, in steps.
One model learns every step in ``step_range`` (6 to 24 kbps on speech at 12-dB-ish levels).

    python -m speechcodec.perceptual.train --data ../shared/data/train/audio --out pc.safetensors

The work folder (``OUT.work``) keeps the analysis and a checkpoint every few minutes; the same
command resumes. ``--hold-out`` leaves out every tenth speaker (``speechcodec.data.held_out_speakers``),
the speakers choices are made on.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechcodec.errors import SpeechCodecError, TrainingError

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")


@dataclass(frozen=True)
class EnhancerTraining:
    width: int = 384
    res_blocks: int = 3
    steps: int = 60000  # optimiser steps in all
    decay_from: int = 40000  # the learning rate is held until this step, then falls (cosine) to lr_end
    lr: float = 5e-4
    lr_end: float = 3e-5
    batch: int = 16
    crop_frames: int = 64  # 1.28 s
    step_low: int = -374  # quantiser steps trained on, 64ths of an octave: the textbook coder's
    step_high: int = -22  # at 24 and 6 kbps on held-out speech, with a quarter octave either side
    init_from: str = ""  # a model (name or file) of the same shape to start from: a further round
    bf16: bool = True  # bfloat16 autocast on the CPU (about twice the speed)
    seed: int = 0
    device: str = "cpu"  # where it trains: cpu, cuda, or auto (CUDA when there is one)
    # the decoder's band-energy ramp written into the model (ModelConfig): chosen on the held-out
    # speakers (docs/history.md, 2026-12-05)
    energy_full_step: int = -250
    energy_none_step: int = -100
    fill_gain16: int = 20  # ... and along that ramp, the noise fill up to 20/16 (chosen there, 2026-12-05)

    def lr_at(self, step: int) -> float:
        if step < self.decay_from:
            return self.lr
        done = min(1.0, (step - self.decay_from) / max(1, self.steps - self.decay_from))
        return self.lr_end + (self.lr - self.lr_end) * 0.5 * (1 + math.cos(math.pi * done))


def _analyse(path: str) -> tuple[np.ndarray, np.ndarray]:
    from speechcodec.audio import read_audio
    from speechcodec.metrics import to_pesq_rate
    from speechcodec.transform.payload import analyse
    from speechcodec.transform.quantiser import TransformSettings

    audio, rate = read_audio(path)
    settings = TransformSettings()
    a = analyse(settings, to_pesq_rate(audio, rate))
    return a.normalised.astype(np.float32), (a.levels * settings.energy_step).astype(np.int16)


def analyse(files: list[Path], cache: Path, workers: int = 1) -> dict:
    """Every file's normalised MDCT frames and band levels (quarter-octaves), kept in ``cache``."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return dict(data)
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_analyse, [str(f) for f in files], chunksize=8))
    data = {"normalised": np.concatenate([r[0] for r in results]),
            "levels": np.concatenate([r[1] for r in results]),
            "lengths": np.array([len(r[0]) for r in results])}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(cache)
    return data


def example(data: dict, cfg: EnhancerTraining, rng: np.random.Generator):
    """One batch: (network input ``[B, 657, F]``, target units ``[B, 320, F]``), float32."""
    from speechcodec.perceptual.codec import PerceptualCodec
    from speechcodec.perceptual.frames import DecodedChunk
    from speechcodec.transform.quantiser import MAX_SYMBOL, TransformSettings, dequantise, expand_levels, gain

    starts = np.concatenate([[0], np.cumsum(data["lengths"])[:-1]])
    ok = np.flatnonzero(data["lengths"] > cfg.crop_frames)
    step = int(rng.integers(cfg.step_low, cfg.step_high + 1))
    settings = TransformSettings()
    inputs, targets = [], []
    for i in rng.choice(ok, cfg.batch):
        at = starts[i] + rng.integers(0, data["lengths"][i] - cfg.crop_frames)
        norm = data["normalised"][at:at + cfg.crop_frames].astype(np.float64)
        levels = data["levels"][at:at + cfg.crop_frames].astype(np.int64)
        level_qo = expand_levels(settings, levels // settings.energy_step, len(norm))
        symbols = np.clip(np.rint(norm * 2.0 ** (-step / 64)), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
        coefficients = dequantise(settings, symbols, level_qo, step)
        step_gain = gain(settings, level_qo, step)
        chunk = DecodedChunk(settings, step, symbols, level_qo, coefficients, coefficients / step_gain, levels)
        inputs.append(PerceptualCodec.network_input(chunk).T)
        targets.append((norm * 2.0 ** (-step / 64)).T.astype(np.float32))
    return np.stack(inputs), np.stack(targets)


def _resumable(settings: dict) -> dict:
    # a run may go on for longer, or on another device
    return {k: v for k, v in settings.items() if k not in ("steps", "device")}


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r}: torch sees no CUDA device here (use cpu or auto)")
    return torch.device(name)


def train_enhancer(files: list[Path], out: Path, name: str, cfg: EnhancerTraining, work: Path,
                   workers: int = 1, log=print, log_every: int = 200, record=None,
                   bitrates_bps: tuple[int, ...] = (6000, 12000, 24000), info: dict | None = None) -> Path:
    """Train (or resume) and write the model file ``out``; returns it. An interrupted run
    (Ctrl-C) saves its checkpoint first; the same call resumes from it. ``record(step, mse,
    mse_as_decoded)`` is called every ``log_every`` steps; ``bitrates_bps`` are the rates the model
    is listed at (``pc-6k``...)."""
    import torch

    from speechcodec.model.config import ModelConfig
    from speechcodec.modelfile import save_model
    from speechcodec.perceptual.network import COEFFICIENTS, Enhancer
    from speechcodec.training.checkpoint import save_checkpoint

    if not files:
        raise TrainingError("no training speech: give --data a folder of .flac/.wav/.ogg files")
    data = analyse(files, work / "analysis.npz", workers)
    if not np.any(data["lengths"] > cfg.crop_frames):
        raise TrainingError(f"no training utterance is longer than the crop ({cfg.crop_frames} frames of "
                            f"20 ms): give longer speech or a shorter crop")
    model_cfg = ModelConfig(arch="perceptual", code_channels=COEFFICIENTS, width=cfg.width,
                            res_blocks=cfg.res_blocks, energy_full_step=cfg.energy_full_step,
                            energy_none_step=cfg.energy_none_step, fill_gain16=cfg.fill_gain16)
    device = _device(cfg.device)
    net = Enhancer(model_cfg)
    path = work / "checkpoint.pt"
    step, seconds = 0, 0.0
    source = _source(net, cfg.init_from) if cfg.init_from else None
    if source and not path.exists():
        net.load_state_dict(source.build().state_dict())
        log(f"starting from {cfg.init_from}")
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    if path.exists():
        state = torch.load(path, weights_only=True, map_location=device)
        if _resumable(state["settings"]) != _resumable(asdict(cfg)):
            raise TrainingError(f"{path} was written with other settings: delete {work} to start afresh")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, seconds = state["step"], state["seconds"]
        log(f"resuming at step {step}")

    done = {"step": step}  # what the loop has finished: a checkpoint stands for exactly that

    def save():
        save_checkpoint(path, {"model": net.state_dict(), "opt": opt.state_dict(), "step": done["step"],
                               "seconds": seconds + time.time() - t0, "settings": asdict(cfg)})

    rng = np.random.default_rng([cfg.seed, step])
    t0 = time.time()
    try:
        _loop(net, opt, data, cfg, rng, done, log, log_every, save, record)
    except KeyboardInterrupt:
        save()
        raise
    save()
    seconds += time.time() - t0
    # the rates it is listed at (pc-6k...): not 3 kbps even when trained there, where sc-3k and it
    # each win one metric (PESQ-WB, ViSQOL) on the held-out speakers and on the test speech
    rates = sorted(int(b) for b in bitrates_bps)
    info = {"bitrate_bps": rates[len(rates) // 2], "bitrates_bps": rates,
            "description": "perceptual family: the textbook transform coder's stream, a frame-causal enhancer "
                           "at its decoder; one model for every rate",
            **(info or {}), "train": {**asdict(cfg), "files": len(files), "seconds": round(seconds)}}
    if source:  # the rounds before this one, first first (the model card shows them all)
        last = {**source.info.get("train", {}), "fingerprint": source.fingerprint}
        info["earlier"] = [*source.info.get("earlier", []), last]
    net.eval()
    return save_model(out, net.cpu(), None, name, info)


def _source(net, model: str):
    """The model file a further round starts from (an installed name or a file), which must be a
    perceptual model of ``net``'s shape."""
    from speechcodec.modelfile import load_model_file
    from speechcodec.registry import model_path

    source = load_model_file(model_path(model))
    shape = ("arch", "width", "res_blocks")
    if any(getattr(source.config, k) != getattr(net.cfg, k) for k in shape):
        raise TrainingError(f"--init-from {model} is not a perceptual model of this shape "
                            f"({', '.join(f'{k} {getattr(net.cfg, k)}' for k in shape)})")
    return source


def _loop(net, opt, data, cfg: EnhancerTraining, rng, done: dict, log, log_every: int, save,
          record=None) -> None:
    import torch

    from speechcodec.perceptual.network import COEFFICIENTS

    saved = time.time()
    step = done["step"]
    device = next(net.parameters()).device
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        x, target = (torch.from_numpy(a).to(device) for a in example(data, cfg, rng))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            c = COEFFICIENTS
            y = net(x[:, :c], x[:, c:2 * c], x[:, 2 * c:-1], x[:, -1:])
        loss = ((y.float() - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step = done["step"] = step + 1
        if step % log_every == 0:
            as_decoded = ((x[:, :COEFFICIENTS] - target) ** 2).mean().item()
            log(f"step {step}: MSE {loss.item():.4f} step units^2 (as decoded: {as_decoded:.4f})")
            if record:
                record(step, loss.item(), as_decoded)
        if time.time() - saved > 180:
            save()
            saved = time.time()


def speech_files(folder: Path, hold_out: bool) -> list[Path]:
    from speechcodec.data.split import held_out_speakers

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if hold_out:
        held = set(held_out_speakers(p.parent.name for p in files))
        files = [p for p in files if p.parent.name not in held]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of speech, one sub-folder per speaker")
    parser.add_argument("--out", type=Path, required=True, help="model file to write")
    parser.add_argument("--name", default="pc", help="the model's name (default: pc)")
    parser.add_argument("--steps", type=int, default=EnhancerTraining.steps)
    parser.add_argument("--decay-from", type=int, default=EnhancerTraining.decay_from)
    parser.add_argument("--lr", type=float, default=EnhancerTraining.lr,
                        help="the learning rate until --decay-from")
    parser.add_argument("--step-high", type=int, default=EnhancerTraining.step_high,
                        help="the coarsest quantiser step trained on, 64ths of an octave "
                             f"(default {EnhancerTraining.step_high}; about +40 takes in 3 kbps)")
    parser.add_argument("--init-from", metavar="MODEL",
                        help="start from this model (an installed name or a file; same shape): a further round")
    parser.add_argument("--hold-out", action="store_true", help="leave every tenth speaker out")
    parser.add_argument("--workers", type=int, default=1, help="processes for the analysis")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or auto (CUDA when there is one; default cpu)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        if not args.data.is_dir():
            raise TrainingError(f"--data {args.data} is not a folder")
        cfg = EnhancerTraining(steps=args.steps, decay_from=min(args.decay_from, args.steps), lr=args.lr,
                               step_high=args.step_high, init_from=args.init_from or "", device=args.device)
        files = speech_files(args.data, args.hold_out)
        out = train_enhancer(files, args.out, args.name, cfg, args.out.with_suffix(".work"), args.workers)
    except SpeechCodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def settings_from_config(model_cfg, train_cfg) -> EnhancerTraining:
    """The enhancer's training settings from a pipeline config's ``model`` and ``train`` sections
    (``speechcodec train`` with ``arch: perceptual``): width, residual blocks and the decoder's
    energy ramp from ``model``; steps, learning rate (held for ``lr_decay_from`` of the steps),
    batch, crop, seed and ``init_from`` from ``train``; bfloat16 unless ``amp: off``."""
    from speechcodec.transform.mdct import HOP

    steps = int(train_cfg.steps)
    return EnhancerTraining(
        width=model_cfg.width, res_blocks=model_cfg.res_blocks, steps=steps,
        decay_from=int(round(train_cfg.lr_decay_from * steps)), lr=train_cfg.lr,
        lr_end=min(EnhancerTraining.lr_end, train_cfg.lr), batch=train_cfg.batch_size,
        crop_frames=max(4, int(round(train_cfg.crop_s * model_cfg.sample_rate_hz / HOP))),
        init_from=train_cfg.init_from or "", bf16=train_cfg.amp != "off", seed=train_cfg.seed,
        device=train_cfg.device,
        energy_full_step=model_cfg.energy_full_step, energy_none_step=model_cfg.energy_none_step,
        fill_gain16=model_cfg.fill_gain16)


def shared_work(cfg: EnhancerTraining, files: list, work_dir: str | None, out: Path) -> Path:
    """Where the one training of these settings on these files lives. Beside a pipeline's per-bitrate
    work folders (``WORK_DIR/../perceptual-KEY``) every bitrate's ``speechcodec train`` finds the
    same run, so the perceptual family trains once for every rate; without ``--work-dir``,
    ``OUT.work``. ``steps`` is not in the key: a longer run resumes the shorter one."""
    import hashlib
    import json

    if not work_dir:
        return out.with_suffix(".work")
    what = {k: v for k, v in asdict(cfg).items() if k not in ("steps", "device")}
    what["files"] = sorted(str(f) for f in files)
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]
    return Path(work_dir).parent / f"perceptual-{key}"


def real_kbps(model: Path, files: list, bitrate_bps: int) -> float:
    """The rate the model's files really have at ``bitrate_bps`` on ``files``: bytes written over seconds."""
    from speechcodec.audio import read_audio
    from speechcodec.registry import load

    codec = load(model, bitrate_bps=bitrate_bps)
    written, seconds = 0, 0.0
    for f in files:
        audio, rate = read_audio(f)
        written += len(codec.encode(audio, rate))
        seconds += len(audio) / rate
    return written * 8 / max(seconds, 1e-9) / 1000


def train_in_pipeline(cfg: EnhancerTraining, files: list, out: Path, name: str, bitrate_bps: int,
                      bitrates_bps: tuple[int, ...], work_dir: str | None = None,
                      metrics_dir: str | None = None, val_files: list | None = None,
                      info: dict | None = None, quiet: bool = False) -> Path:
    """``speechcodec train`` of a perceptual config for one of the pipeline's bitrates: the one
    training of these settings (resumed, or done by an earlier bitrate's call, under a lock), its
    model copied to ``out``. ``metrics_dir`` gets ``metrics.csv`` (step, training MSE) and
    ``val_metrics.csv`` (the real rate of the validation files at ``bitrate_bps``)."""
    import fcntl
    import shutil

    out = Path(out)
    work = shared_work(cfg, files, work_dir, out)
    work.mkdir(parents=True, exist_ok=True)
    from speechcodec.training.logs import TRAIN_LOG, VAL_LOG, append_csv

    model = work / f"model-{cfg.steps}steps.safetensors"
    curve = work / TRAIN_LOG
    header = ["step", "mse", "mse_as_decoded"]
    log = (lambda *a: None) if quiet else (lambda line: print(line, file=sys.stderr))
    with open(work / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains; the others wait, then copy
        if not model.exists():
            def record(step, mse, as_decoded):
                append_csv(curve, header, [[step, f"{mse:.6f}", f"{as_decoded:.6f}"]])

            log_every = max(1, min(200, cfg.steps // 20))
            train_enhancer(files, model, name, cfg, work, log=log, log_every=log_every, record=record,
                           bitrates_bps=bitrates_bps, info=info)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copyfile(model, tmp)
    tmp.replace(out)
    if metrics_dir:
        metrics = Path(metrics_dir)
        metrics.mkdir(parents=True, exist_ok=True)
        (metrics / TRAIN_LOG).unlink(missing_ok=True)
        (metrics / VAL_LOG).unlink(missing_ok=True)
        if curve.exists():
            shutil.copyfile(curve, metrics / TRAIN_LOG)
        else:
            append_csv(metrics / TRAIN_LOG, header, [])
        kbps = real_kbps(out, list(val_files or []), bitrate_bps) if val_files else ""
        append_csv(metrics / VAL_LOG, ["step", "bitrate_bps", "kbps_real"], [[cfg.steps, bitrate_bps, kbps]])
    return out
