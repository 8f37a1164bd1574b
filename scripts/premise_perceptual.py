#!/usr/bin/env python
"""Premises of the perceptual model family (issue 34), measured on held-out training speakers.

Every tenth speaker of ``shared/data/train`` (sorted, from the fifth: the speakers
``scripts/tune_transform.py`` judges on) is held out: nothing here trains on them. Scores are on
the first file of each (cut to 8 s); bit counts on all of their files.

    prepare     analyse the training speech once (MDCT, band levels) into --work
    fill        the textbook coder with its band energies kept (noise into the zeros of every
                band to make up the energy the quantiser lost) against its plain noise fill
    entropy     way (ii): a small network as the textbook coder's entropy model; bits it saves
                against the Laplace tables at the textbook coder's own steps for 6, 12, 24 kbps
    enhance     a frame-causal network at the textbook coder's decoder (no bits, no delay);
                PESQ-WB and ViSQOL against the textbook decoder (--fixed-kbps: one rate only)
    transform   way (i): a network as the transform of the normalised spectrum, frame-causal,
                with a prior conditioned on the band levels; PESQ-WB and ViSQOL at its rate
                (--gained 6,12,24: one gained variable-rate model)
    tables      way (ii) in integers: offset tables to the Laplace index by context (previous
                frame, band-level change), fitted on training frames; bits on the held-out
    ramp        a perceptual model file (--model) with its output's band energies drawn to the
                textbook decoder's at fine steps, for several ramps of the step
    fillgain    the same with the all-zero bands' noise fill raised along that ramp (--fill-gains)

    .venv/bin/python scripts/premise_perceptual.py prepare
    .venv/bin/python scripts/premise_perceptual.py entropy --minutes 30 --workers 1
    .venv/bin/python scripts/premise_perceptual.py enhance --minutes 35 --bf16 --workers 1
    .venv/bin/python scripts/premise_perceptual.py transform --minutes 40 --kbps 12 --bf16 --workers 1
    .venv/bin/python scripts/premise_perceptual.py enhance --look-ahead 1 --steps 19636 --minutes 100 --bf16
    .venv/bin/python scripts/premise_perceptual.py tables
    .venv/bin/python scripts/premise_perceptual.py ramp --model pc.safetensors --workers 1
    .venv/bin/python scripts/premise_perceptual.py fillgain --model pc.safetensors --rates 12000,24000

Training runs checkpoint to --work every three minutes and resume from there; a second call
with the same settings trains on for --minutes more. The numbers: docs/history.md
("issue 34, the perceptual family's premises").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "audio"
MAX_S = 8.0


def split_speakers(folder: Path) -> tuple[list[Path], list[Path]]:
    """(training speakers, held-out speakers): ``speechcodec.data.held_out_speakers``."""
    from speechcodec.data.split import held_out_speakers

    speakers = sorted(p for p in folder.iterdir() if p.is_dir())
    held = set(held_out_speakers(p.name for p in speakers))
    return [s for s in speakers if s.name not in held], [s for s in speakers if s.name in held]


def _analyse(path: str):
    from speechcodec.audio import read_audio
    from speechcodec.baselines.transform import TransformCodec
    from speechcodec.metrics import to_pesq_rate

    audio, rate = read_audio(path)
    audio = to_pesq_rate(audio, rate)
    codec = TransformCodec(12000)
    a = codec.analyse(audio)
    levels_qo = (a.levels * codec.settings.energy_step).astype(np.int16)
    return a.normalised.astype(np.float32), levels_qo, a.energy_bits, len(audio)


def prepare(args) -> None:
    train, held = split_speakers(args.speech)
    out = args.work
    out.mkdir(parents=True, exist_ok=True)
    for name, speakers in (("train", train), ("held", held)):
        files = [str(f) for s in speakers for f in sorted(s.glob("*.flac"))]
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(_analyse, files, chunksize=8))
        lengths = np.array([len(r[0]) for r in results])
        np.savez(out / f"{name}.npz", normalised=np.concatenate([r[0] for r in results]),
                 levels=np.concatenate([r[1] for r in results]), lengths=lengths,
                 energy_bits=np.array([r[2] for r in results]), samples=np.array([r[3] for r in results]),
                 speakers=np.array([Path(f).parent.name for f in files]))
        print(f"{name}: {len(speakers)} speakers, {len(files)} files, {lengths.sum()} frames "
              f"({lengths.sum() * 0.02 / 60:.1f} min)")


def load(work: Path, name: str) -> dict:
    data = dict(np.load(work / f"{name}.npz"))
    data["starts"] = np.concatenate([[0], np.cumsum(data["lengths"])[:-1]])
    return data


def held_files(args) -> list[Path]:
    _, held = split_speakers(args.speech)
    return [sorted(s.glob("*.flac"))[0] for s in held]


def _steps_for(path: str, rates: list[int]) -> list[int]:
    from speechcodec.audio import read_audio
    from speechcodec.baselines.transform import TransformCodec
    from speechcodec.metrics import to_pesq_rate

    audio, rate = read_audio(path)
    audio = to_pesq_rate(audio, rate)
    out = []
    for bps in rates:
        codec = TransformCodec(bps)
        a = codec.analyse(audio)
        out.append(codec.find_step(a, bps * len(audio) / 16000))
    return out


# -- fill: the textbook coder with its band energies kept --------------------------------------
def energy_fill(coefficients, symbols, level_qo, edges, gain=1.0, seed=0):
    """Noise into the zero bins of every band whose decoded energy is below its coded level,
    making up ``gain`` of the missing energy (all-zero bands included)."""
    edges = np.asarray(edges)
    widths = np.diff(edges)
    target = np.exp2(level_qo[:, edges[:-1]] / 2.0) * widths  # band energy: RMS^2 x bins
    have = np.add.reduceat(coefficients ** 2, edges[:-1], axis=1)
    zeros = np.add.reduceat(symbols == 0, edges[:-1], axis=1)
    missing = np.maximum(target - have, 0.0) * gain
    per_zero = np.where(zeros > 0, missing / np.maximum(zeros, 1), 0.0)
    noise = np.random.default_rng(seed).uniform(-np.sqrt(3), np.sqrt(3), coefficients.shape)
    amp = np.repeat(np.sqrt(per_zero), widths, axis=1)
    return coefficients + np.where(symbols == 0, amp * noise, 0.0)


def _fill_job(job):
    from speechcodec.audio import read_audio
    from speechcodec.baselines.transform import TransformCodec, decode, decode_symbols
    from speechcodec.metrics import pesq_wb, to_pesq_rate, visqol
    from speechcodec.transform import bands
    from speechcodec.transform.mdct import HOP, imdct
    from speechcodec.transform.quantiser import gain

    path, bps, gains = job
    audio, rate = read_audio(path)
    ref = to_pesq_rate(audio, rate)[: int(MAX_S * 16000)]
    data = TransformCodec(bps).encode(ref, 16000)
    plain, _ = decode(data)
    settings, symbols, level_qo, step, samples = decode_symbols(data)
    coefficients = symbols * gain(settings, level_qo, step)
    row = [len(data) * 8 / (len(ref) / 16000) / 1000, pesq_wb(ref, plain), visqol(ref, plain)]
    for g in gains:
        filled = energy_fill(coefficients, symbols, level_qo, bands.LAYOUTS[settings.layout], g)
        deg = np.clip(imdct(filled, samples, HOP), -1, 1).astype(np.float32)
        row += [pesq_wb(ref, deg), visqol(ref, deg)]
    return row


def fill(args) -> None:
    files = held_files(args)
    gains = [float(g) for g in args.gains.split(",")]
    print(f"{len(files)} held-out files, first {MAX_S:g} s; plain = the textbook coder's noise fill "
          "(all-zero bands at half their RMS); energy g = zeros filled to g of the band's missing energy\n")
    print("| kbps | variant | PESQ-WB | ViSQOL | files better than plain (PESQ-WB, ViSQOL) |")
    print("|---|---|---|---|---|")
    for bps in [int(r) for r in args.rates.split(",")]:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = np.array(list(pool.map(_fill_job, [(str(f), bps, gains) for f in files])))
        kbps = rows[:, 0].mean()
        print(f"| {kbps:.2f} | plain | {rows[:, 1].mean():.3f} | {rows[:, 2].mean():.3f} | |")
        for i, g in enumerate(gains):
            p, v = rows[:, 3 + 2 * i], rows[:, 4 + 2 * i]
            print(f"| {kbps:.2f} | energy {g:g} | {p.mean():.3f} | {v.mean():.3f} | "
                  f"{(p > rows[:, 1]).sum()}, {(v > rows[:, 2]).sum()} of {len(files)} |", flush=True)


# -- shared torch bits ---------------------------------------------------------------------
def crops(data: dict, batch: int, frames: int, rng) -> tuple[np.ndarray, np.ndarray]:
    ok = np.flatnonzero(data["lengths"] > frames)
    pick = rng.choice(ok, batch)
    offs = [data["starts"][i] + rng.integers(0, data["lengths"][i] - frames) for i in pick]
    norm = np.stack([data["normalised"][o:o + frames] for o in offs])
    lev = np.stack([data["levels"][o:o + frames] for o in offs])
    return norm, lev


def laplace_bits(torch, symbols, log2_scale):
    """-log2 P(symbol) under a discretised zero-mean Laplace of scale 2**log2_scale."""
    b = torch.exp2(log2_scale)
    a = symbols.abs()
    upper = torch.exp(-(a + 0.5) / b)
    lower = torch.exp(-(a - 0.5).clamp_min(0) / b)
    # P(0) = 1 - exp(-0.5/b); P(k) = 0.5 (exp(-(k-.5)/b) - exp(-(k+.5)/b))
    p = torch.where(a < 0.5, 1 - upper, 0.5 * (lower - upper))
    return -torch.log2(p.clamp_min(1e-12))


class Checkpoint:
    """A run's state in one file: resumed from when it exists, saved every three minutes and
    at the end (atomically). ``extra`` holds what else a run steers (its lambdas)."""

    def __init__(self, path: Path, model, opt, **extra):
        import torch

        self.path, self.model, self.opt, self.step, self.extra = path, model, opt, 0, extra
        if path.exists():
            state = torch.load(path)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            self.step = state["step"]
            self.extra.update(state.get("extra", {}))
        self.saved = time.time()

    def advance(self, loss, clip: float = 0.0) -> None:
        """One optimiser step on ``loss``, and a save when one is due."""
        import torch

        self.opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()
        self.step += 1
        if time.time() - self.saved > 180:
            self.save()

    def save(self) -> None:
        import torch

        tmp = self.path.with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "extra": self.extra}, tmp)
        os.replace(tmp, self.path)
        self.saved = time.time()


# -- entropy: way (ii) ---------------------------------------------------------------------
def entropy_model(torch, width=48, layers=3):
    nn = torch.nn

    class Prior(nn.Module):
        """Per-bin log2 Laplace scale of frame t's symbols from frames t-1, t-2 (symbols), the
        levels of t and t-1, and the symbols of the bands below (features fed after the
        frequency convolutions, so a bin never sees its own band of frame t)."""

        def __init__(self):
            super().__init__()
            self.inp = nn.Conv1d(8, width, 5, padding=2)
            self.body = nn.ModuleList(nn.Conv1d(width, width, 5, padding=2) for _ in range(layers))
            self.head = nn.Sequential(nn.Conv1d(width + 3, width, 1), nn.GELU(), nn.Conv1d(width, 1, 1))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

        def forward(self, past, below):
            h = self.inp(past)
            for conv in self.body:
                h = h + torch.nn.functional.gelu(conv(h))
            return self.head(torch.cat([h, below], 1))[:, 0]

    return Prior()


def entropy_features(torch, symbols, j0, levels_bin, step, edges):
    """symbols, j0, levels_bin: [N, F, 320] (frame-major). Returns (past [N*(F-2), 8, 320],
    below [N*(F-2), 3, 320], target symbols, j0) for frames 2.. of each crop."""
    def slog(x):
        return torch.sign(x) * torch.log2(1 + x.abs())

    s = symbols
    s1, s2, s0 = s[:, 1:-1], s[:, :-2], s[:, 2:]
    j = j0[:, 2:] / 8.0
    lev, lev1 = levels_bin[:, 2:] / 16.0, levels_bin[:, 1:-1] / 16.0
    pos = torch.linspace(0, 1, s.shape[-1]).expand_as(s0)
    stepf = torch.full_like(s0, step / 64.0)
    past = torch.stack([j, slog(s1), slog(s2), torch.log2(1 + s1.abs()), lev, lev - lev1, pos, stepf], 2)
    # the bands below, of frame t: mean log2(1 + |s|) of band b-1 and b-2, and b's index
    e = torch.as_tensor(np.asarray(edges))
    widths = (e[1:] - e[:-1]).float()
    mag = torch.log2(1 + s0.abs())
    band_mean = torch.stack([mag[..., e[i]:e[i + 1]].mean(-1) for i in range(len(widths))], -1)
    b1 = torch.nn.functional.pad(band_mean, (1, 0))[..., :-1]
    b2 = torch.nn.functional.pad(band_mean, (2, 0))[..., :-2]
    of_bin = torch.as_tensor(np.repeat(np.arange(len(widths)), np.diff(edges)))
    below = torch.stack([b1[..., of_bin], b2[..., of_bin], of_bin.float().expand_as(s0) / len(widths)], 2)
    n = s0.shape[0] * s0.shape[1]
    return (past.reshape(n, 8, -1), below.reshape(n, 3, -1), s0.reshape(n, -1), j0[:, 2:].reshape(n, -1))


def _symbols_at(norm, levels_qo, step, bins_of):
    from speechcodec.baselines.transform import TransformCodec
    from speechcodec.transform.quantiser import MAX_SYMBOL, scale_index
    sym = np.clip(np.rint(norm * 2.0 ** (-step / 64)), -MAX_SYMBOL, MAX_SYMBOL)
    lev_bin = levels_qo[..., bins_of]
    j0 = scale_index(8 * lev_bin.astype(np.int64), step, TransformCodec.coefficient_offset)
    return sym, j0, lev_bin


def entropy(args) -> None:
    import torch

    from speechcodec.transform import bands
    from speechcodec.transform.laplace import TABLES
    torch.set_num_threads(args.threads)
    edges = bands.LAYOUTS["bark16"]
    bins_of = bands.band_of_bin(edges)
    train, held = load(args.work, "train"), load(args.work, "held")
    files = held_files(args)
    steps = [s for s in _steps_cached(args, files, [6000, 12000, 24000])]
    lo, hi = min(min(s) for s in steps) - 24, max(max(s) for s in steps) + 24
    model = entropy_model(torch)
    run = Checkpoint(args.work / "entropy.pt", model, torch.optim.Adam(model.parameters(), lr=2e-3))
    rng = np.random.default_rng(run.step)
    t0 = time.time()
    print(f"training steps {lo}..{hi} (64ths of an octave), resuming at {run.step}", flush=True)
    while time.time() - t0 < args.minutes * 60:
        norm, lev = crops(train, 12, 34, rng)
        q = int(rng.integers(lo, hi + 1))
        sym, j0, lev_bin = _symbols_at(norm, lev, q, bins_of)
        past, below, target, jj = entropy_features(torch, torch.as_tensor(sym, dtype=torch.float32),
                                                   torch.as_tensor(j0, dtype=torch.float32),
                                                   torch.as_tensor(lev_bin, dtype=torch.float32), q, edges)
        bits = laplace_bits(torch, target, jj / 8.0 + model(past, below)).mean()
        base = laplace_bits(torch, target, jj / 8.0).mean()
        run.advance(bits)
        if run.step % 50 == 0:
            print(f"step {run.step}: {bits.item():.4f} bits/coef (Laplace tables' scale: {base.item():.4f})",
                  flush=True)
    run.save()
    step_i = run.step
    # evaluate: every held-out file at the step the textbook coder picks for it (first file of
    # each speaker) and the median of those steps for the speaker's other files
    minutes = held["lengths"].sum() * 0.02 / 60
    print(f"\n{step_i} steps. Coefficient bits, held-out speakers ({minutes:.1f} min), ideal code lengths:\n")
    print("| rate | Laplace tables kbps | same scale, continuous | learned prior kbps | saved |")
    print("|---|---|---|---|---|")
    first = {f.parent.name: s for f, s in zip(files, steps, strict=True)}
    model.eval()
    for r, bps in enumerate([6000, 12000, 24000]):
        table_bits = cont_bits = learned_bits = 0.0
        seconds = 0.0
        for i, (start, length) in enumerate(zip(held["starts"], held["lengths"], strict=True)):
            q = first[str(held["speakers"][i])][r]
            norm = held["normalised"][start:start + length][None]
            lev = held["levels"][start:start + length][None]
            sym, j0, lev_bin = _symbols_at(norm, lev, q, bins_of)
            table_bits += TABLES.bits(sym.astype(np.int64)[0], j0[0])
            padded = [np.pad(x, ((0, 0), (2, 0), (0, 0))) for x in (sym, j0, lev_bin)]
            with torch.no_grad():
                past, below, target, jj = entropy_features(
                    torch, *(torch.as_tensor(x, dtype=torch.float32) for x in padded), q, edges)
                learned_bits += laplace_bits(torch, target, jj / 8.0 + model(past, below)).sum().item()
                cont_bits += laplace_bits(torch, target, jj / 8.0).sum().item()
            seconds += held["samples"][i] / 16000
        tk, ck, lk = (b / seconds / 1000 for b in (table_bits, cont_bits, learned_bits))
        saved = 100 * (1 - lk / ck)
        print(f"| {bps // 1000} kbps | {tk:.2f} | {ck:.2f} | {lk:.2f} | {saved:.1f} % |", flush=True)


def _setup(args):
    """What every training run starts from: torch on ``--threads`` threads, the band edges, the
    training speech's analysis, the held-out files and the textbook coder's steps for them."""
    import torch

    from speechcodec.transform import bands
    torch.set_num_threads(args.threads)
    files = held_files(args)
    return (torch, bands.LAYOUTS["bark16"], load(args.work, "train"), files,
            _steps_cached(args, files, [6000, 12000, 24000]))


def _steps_cached(args, files, rates):
    path = args.work / "held_steps.json"
    if path.exists():
        return json.loads(path.read_text())
    with ProcessPoolExecutor(args.workers) as pool:
        steps = list(pool.map(_steps_for, [str(f) for f in files], [rates] * len(files)))
    path.write_text(json.dumps(steps))
    return steps


# -- transform: way (i) ----------------------------------------------------------------------
def transform_model(torch, width, latent, bands_n=16, look_ahead=0, gains=None):
    nn = torch.nn
    F = torch.nn.functional

    class Causal(nn.Module):
        def __init__(self, cin, cout, k, ahead=0):
            super().__init__()
            self.conv = nn.Conv1d(cin, cout, k)
            self.pad = (k - 1 - ahead, ahead)

        def forward(self, x):
            return self.conv(F.pad(x, self.pad))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Causal(width, width, 3)
            self.b = nn.Conv1d(width, width, 1)

        def forward(self, x):
            return x + self.b(F.gelu(self.a(F.gelu(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(Causal(320 + bands_n, width, 3, look_ahead), Block(), Block(), Block(),
                                     nn.GELU(), nn.Conv1d(width, latent, 1))
            self.dec = nn.Sequential(Causal(latent + bands_n, width, 3, look_ahead), Block(), Block(), Block(),
                                     nn.GELU(), nn.Conv1d(width, 320, 1))
            self.prior = nn.Sequential(Causal(bands_n, 64, 2), nn.GELU(), nn.Conv1d(64, latent, 1))
            # the gained variable-rate model: rate r multiplies the latent by 2**gain[r] (per
            # channel) before rounding, and divides after
            g = torch.zeros(1, latent) if gains is None else torch.as_tensor(gains)[:, None].repeat(1, latent)
            self.log2_gain = nn.Parameter(g.float())

        def forward(self, x, lev, noise=True, r=0):
            g = self.log2_gain[r][None, :, None]
            y = self.enc(torch.cat([x, lev], 1)) * torch.exp2(g)
            y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5) if noise else torch.round(y)
            log2_scale = self.prior(lev) + g
            bits = laplace_bits(torch, y_hat, log2_scale)
            return self.dec(torch.cat([y_hat * torch.exp2(-g), lev], 1)), bits, y

    return Net()


def transform(args) -> None:
    torch, edges, train, files, steps = _setup(args)
    rates = [float(k) for k in args.gained.split(",")] if args.gained else [args.kbps]
    rate_index = [{6: 0, 12: 1, 24: 2}.get(round(k), 1) for k in rates]
    textbook_steps = [float(np.median([s[i] for s in steps])) for i in rate_index]
    ref_step = textbook_steps[len(rates) // 2]
    in_scale = 2.0 ** (-ref_step / 64)  # the textbook coder's step at the (middle) rate
    tag = (f"transform-{'gained-' + args.gained.replace(',', '-') if args.gained else f'{args.kbps:g}'}k"
           f"-w{args.width}-l{args.latent}-a{args.look_ahead}")
    gains = [(ref_step - q) / 64 for q in textbook_steps] if args.gained else None
    model = transform_model(torch, args.width, args.latent, look_ahead=args.look_ahead, gains=gains)
    energy_kbps = float(train["energy_bits"].sum() / (train["samples"].sum() / 16000) / 1000)
    target_bits = [(k - energy_kbps) * 1000 * 0.02 for k in rates]  # per frame
    run = Checkpoint(args.work / f"{tag}.pt", model, torch.optim.Adam(model.parameters(), lr=1e-3),
                     lam=[0.01] * len(rates))
    lam = run.extra["lam"]
    rng = np.random.default_rng(run.step + 1)
    print(f"{tag}: input scale {in_scale:.4f}, energies {energy_kbps:.2f} kbps, code targets "
          f"{[round(t) for t in target_bits]} bits a frame, resuming at {run.step}", flush=True)
    t0 = time.time()
    while time.time() - t0 < args.minutes * 60:
        norm, lev = crops(train, 16, 64, rng)
        r = int(rng.integers(len(rates)))
        x = torch.as_tensor(norm * in_scale, dtype=torch.float32).transpose(1, 2)
        lv = torch.as_tensor(lev / 16.0, dtype=torch.float32).transpose(1, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out, bits, _ = model(x, lv, r=r)
        dist = ((out.float() - x) ** 2).mean()
        rate = bits.float().sum(1).mean()  # bits a frame
        run.advance(dist + lam[r] * rate / 320, clip=1.0)
        lam[r] *= math.exp(0.02 * (rate.item() / target_bits[r] - 1))
        if run.step % 50 == 0:
            print(f"step {run.step}: rate {rates[r]:g}k D {dist.item():.4f} (step units^2), {rate.item():.0f} "
                  f"bits/frame, lambda {lam[r]:.4g}", flush=True)
    run.save()
    step_i = run.step
    for r, k in enumerate(rates):
        evaluate_transform(args, model, in_scale, files, step_i, f"{tag} at {k:g}k", edges, r)


def _score(job):
    from speechcodec.metrics import pesq_wb, visqol
    ref, deg = job
    return pesq_wb(ref, deg), visqol(ref, deg)


def evaluate_transform(args, model, in_scale, files, steps_done, tag, edges, r=0) -> None:
    import torch

    from speechcodec.audio import read_audio
    from speechcodec.baselines.transform import TransformCodec
    from speechcodec.metrics import to_pesq_rate
    from speechcodec.transform.mdct import HOP, imdct
    from speechcodec.transform.quantiser import expand_levels, gain

    model.eval()
    jobs = {"network": [], "network + energy fill": []}
    bits_total = seconds = 0.0
    for path in files:
        audio, rate = read_audio(path)
        ref = to_pesq_rate(audio, rate)[: int(MAX_S * 16000)]
        codec = TransformCodec(12000)
        a = codec.analyse(ref)
        lev_qo = a.levels * codec.settings.energy_step
        x = torch.as_tensor(a.normalised * in_scale, dtype=torch.float32).T[None]
        lv = torch.as_tensor(lev_qo / 16.0, dtype=torch.float32).T[None]
        with torch.no_grad():
            out, bits, _ = model(x, lv, noise=False, r=r)
        norm_hat = out[0].T.numpy() / in_scale
        level_bin = expand_levels(codec.settings, a.levels, len(norm_hat))
        coef = norm_hat * gain(codec.settings, level_bin, 0)
        bits_total += bits.sum().item() + a.energy_bits
        seconds += len(ref) / 16000
        jobs["network"].append((ref, np.clip(imdct(coef, len(ref), HOP), -1, 1).astype(np.float32)))
        filled = energy_fill(coef, np.zeros_like(coef), level_bin, edges, 1.0)
        jobs["network + energy fill"].append((ref, np.clip(imdct(filled, len(ref), HOP), -1, 1)
                                              .astype(np.float32)))
    kbps = bits_total / seconds / 1000
    print(f"\n{tag}, {steps_done} steps, {len(files)} held-out files:\n")
    print("| variant | kbps (ideal code + real energies) | PESQ-WB | ViSQOL |")
    print("|---|---|---|---|")
    results = {}
    for name, items in jobs.items():
        with ProcessPoolExecutor(args.workers) as pool:
            scores = np.array(list(pool.map(_score, items)))
        results[name] = scores
        print(f"| {name} | {kbps:.2f} | {scores[:, 0].mean():.3f} | {scores[:, 1].mean():.3f} |", flush=True)
    np.save(args.work / f"{tag.replace(' ', '-')}-scores.npy", np.stack(list(results.values())))


# -- enhance: a decoder-side network on the textbook coder's output -----------------------
def _textbook_decoded(norm, levels_qo, q, edges, rng, fill16=8):
    """The textbook decoder's normalised coefficients (its noise fill included) at step ``q``:
    (decoded [.., F, 320], symbols), from clean normalised ``norm`` and the band levels
    ``[.., F, 16]`` (quarter-octaves)."""
    from speechcodec.transform import bands
    from speechcodec.transform.quantiser import MAX_SYMBOL
    delta = 2.0 ** (q / 64)
    sym = np.clip(np.rint(norm / delta), -MAX_SYMBOL, MAX_SYMBOL)
    e = np.asarray(edges)
    nonzero = np.add.reduceat(sym != 0, e[:-1], axis=-1)
    lev = levels_qo.astype(np.float64)
    rms = np.exp2(lev / 4.0)
    ceiling = 0.5 * np.exp2(8 * lev / 64.0 + q / 64.0)
    empty = (nonzero == 0) & (lev > bands.FLOOR_QUARTER_OCTAVES)
    level = np.where(empty, np.minimum(rms, ceiling) * fill16 / 16, 0.0) / np.exp2(8 * lev / 64.0)
    noise = rng.uniform(-np.sqrt(3), np.sqrt(3), sym.shape)
    return sym * delta + np.repeat(level, np.diff(e), axis=-1) * noise, sym


def enhance_model(torch, width, look_ahead=0):
    """The shipped family's network (``speechcodec.perceptual.network.Enhancer``): frame t's
    correction from the decoded frames up to t, and ``look_ahead`` frames later at its first layer."""
    from speechcodec.model.config import ModelConfig
    from speechcodec.perceptual.network import Enhancer

    model = Enhancer(ModelConfig(arch="perceptual", code_channels=320, width=width, res_blocks=3))
    model.look_ahead = look_ahead
    return model


def _enh_inputs(torch, decoded, sym, lev, q):
    delta = 2.0 ** (q / 64)
    units = torch.as_tensor(decoded / delta, dtype=torch.float32).transpose(-1, -2)
    zero = torch.as_tensor(sym == 0, dtype=torch.float32).transpose(-1, -2)
    lv = torch.as_tensor(lev / 16.0, dtype=torch.float32).transpose(-1, -2)
    qq = torch.full((units.shape[0], 1, 1), q / 64.0)
    return units, zero, lv, qq


def enhance(args) -> None:
    torch, edges, train, files, steps = _setup(args)
    lo, hi = min(min(s) for s in steps) - 24, max(max(s) for s in steps) + 24
    tag = f"enhance-w{args.width}" + (f"-ahead{args.look_ahead}" if args.look_ahead else "")
    if args.fixed_kbps:  # one rate only: the textbook coder's steps for it on the held-out files
        i = {6: 0, 12: 1, 24: 2}[round(args.fixed_kbps)]
        lo, hi = min(s[i] for s in steps), max(s[i] for s in steps)
        tag += f"-{args.fixed_kbps:g}k"
    model = enhance_model(torch, args.width, args.look_ahead)
    run = Checkpoint(args.work / f"{tag}.pt", model, torch.optim.Adam(model.parameters(), lr=5e-4))
    rng = np.random.default_rng(run.step + 2)
    print(f"{tag}: steps {lo}..{hi}, resuming at {run.step}", flush=True)
    t0 = time.time()
    while time.time() - t0 < args.minutes * 60 and not (args.steps and run.step >= args.steps):
        if args.lr_end is not None:  # cosine from the optimiser's rate to --lr-end over --minutes
            done = (time.time() - t0) / (args.minutes * 60)
            for group in run.opt.param_groups:
                group["lr"] = args.lr_end + (args.lr - args.lr_end) * 0.5 * (1 + math.cos(math.pi * done))
        norm, lev = crops(train, 16, 64, rng)
        q = int(rng.integers(lo, hi + 1))
        decoded, sym = _textbook_decoded(norm, lev, q, edges, rng)
        units, zero, lv, qq = _enh_inputs(torch, decoded, sym, lev, q)
        target = torch.as_tensor(norm / 2.0 ** (q / 64), dtype=torch.float32).transpose(1, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(units, zero, lv, qq)
        loss = ((out.float() - target) ** 2).mean()
        base = ((units - target) ** 2).mean()
        run.advance(loss, clip=1.0)
        if run.step % 50 == 0:
            print(f"step {run.step}: MSE {loss.item():.4f} (decoded as is: {base.item():.4f}) step units^2",
                  flush=True)
    run.save()
    step_i = run.step
    evaluate_enhance(args, model, files, steps, step_i, tag, edges)


def evaluate_enhance(args, model, files, steps, steps_done, tag, edges) -> None:
    import torch

    from speechcodec.audio import read_audio
    from speechcodec.baselines.transform import TransformCodec
    from speechcodec.metrics import to_pesq_rate
    from speechcodec.transform.mdct import HOP, imdct
    from speechcodec.transform.quantiser import expand_levels, gain

    model.eval()
    print(f"\n{tag}, {steps_done} steps, {len(files)} held-out files, each at the textbook coder's step:\n")
    print("| kbps | variant | PESQ-WB | ViSQOL | files better than the textbook decoder (PESQ-WB, ViSQOL) |")
    print("|---|---|---|---|---|")
    for r, bps in enumerate([6000, 12000, 24000]):
        jobs = {"textbook": [], "textbook + enhancer": [], "enhancer, fill kept": []}
        for path, st in zip(files, steps, strict=True):
            audio, rate = read_audio(path)
            ref = to_pesq_rate(audio, rate)[: int(MAX_S * 16000)]
            codec = TransformCodec(bps)
            a = codec.analyse(ref)
            lev_bin = expand_levels(codec.settings, a.levels, len(a.normalised))
            lev = a.levels * codec.settings.energy_step
            q = st[r]
            decoded, sym = _textbook_decoded(a.normalised[None], lev[None], q, edges,
                                             np.random.default_rng(0))
            units, zero, lv, qq = _enh_inputs(torch, decoded, sym, lev[None], q)
            with torch.no_grad():
                out = model(units, zero, lv, qq)[0].T.numpy() * 2.0 ** (q / 64)
            e = np.asarray(edges)
            empty = np.repeat(np.add.reduceat(sym[0] != 0, e[:-1], axis=-1) == 0, np.diff(e), axis=-1)
            kept = np.where(empty, decoded[0], out)
            g = gain(codec.settings, lev_bin, 0)
            variants = (("textbook", decoded[0]), ("textbook + enhancer", out), ("enhancer, fill kept", kept))
            for name, n in variants:
                jobs[name].append((ref, np.clip(imdct(n * g, len(ref), HOP), -1, 1).astype(np.float32)))
        scores = {}
        for name, items in jobs.items():
            with ProcessPoolExecutor(args.workers) as pool:
                scores[name] = np.array(list(pool.map(_score, items)))
        base = scores["textbook"]
        for name, sc in scores.items():
            better = "" if name == "textbook" else \
                f"{(sc[:, 0] > base[:, 0]).sum()}, {(sc[:, 1] > base[:, 1]).sum()} of {len(files)}"
            print(f"| {bps // 1000} | {name} | {sc[:, 0].mean():.3f} | {sc[:, 1].mean():.3f} | {better} |",
                  flush=True)


# -- tables: way (ii) in integers --------------------------------------------------------------
M_EDGES = np.array([1, 2, 3, 5, 9, 17, 33, 65])  # |s(k-1)| + 2|s(k)| + |s(k+1)| of the previous frame
D_EDGES = np.array([-7, -3, 1, 5])  # the band's level change since the previous frame, quarter-octaves
J_RANGE = (-16, 48)  # base Laplace indices with a row of their own (clipped to it)


def _context_cells(norm, levels, norm_prev, levels_prev, step):
    """(symbols, base Laplace indices, context cell) of frames ``[N, 320]`` at ``step``, each
    with its previous frame."""
    from speechcodec.baselines.transform import TransformCodec
    from speechcodec.transform.quantiser import MAX_SYMBOL, expand_levels, index_base, scale_index

    settings = TransformCodec(12000).settings
    q = 2.0 ** (-step / 64)
    s = np.clip(np.rint(norm * q), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)
    a = np.abs(np.clip(np.rint(norm_prev * q), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64))
    level = expand_levels(settings, levels // 4, len(levels))
    level_prev = expand_levels(settings, levels_prev // 4, len(levels))
    j0 = scale_index(index_base(settings, level), step, TransformCodec.coefficient_offset)
    m = 2 * a + np.pad(a, ((0, 0), (1, 0)))[:, :-1] + np.pad(a, ((0, 0), (0, 1)))[:, 1:]
    row = (np.clip(j0, *J_RANGE) - J_RANGE[0]) * (len(M_EDGES) + 1) + np.searchsorted(M_EDGES, m, side="right")
    cell = row * (len(D_EDGES) + 1) + np.searchsorted(D_EDGES, level - level_prev, side="right")
    return s, j0, cell


def tables(args) -> None:
    """Integer context tables: an offset to each coefficient's Laplace index per context cell,
    fitted by exhaustive search on training frames; ideal bits on the held-out speakers."""
    from speechcodec.transform.laplace import ESCAPE_BITS, J_MAX, J_MIN, TABLES, _table_index

    TABLES.bits(np.zeros(1, np.int64), np.zeros(1, np.int64))  # builds the tables
    train, held = load(args.work, "train"), load(args.work, "held")
    steps = _steps_cached(args, held_files(args), [6000, 12000, 24000])
    cells = (J_RANGE[1] - J_RANGE[0] + 1) * (len(M_EDGES) + 1) * (len(D_EDGES) + 1)
    offsets = np.arange(-12, 13)

    def bits_each(s, j):
        core = TABLES.core[j - J_MIN]
        escapes = (np.abs(s) > core) * (1 + ESCAPE_BITS)
        return TABLES.flat_bits[TABLES.offset[j - J_MIN] + _table_index(s, core)] + escapes

    rng = np.random.default_rng(0)
    position = np.concatenate([np.arange(n) for n in train["lengths"]])
    pick = rng.choice(np.flatnonzero(position >= 1), 60000, replace=False)
    step_of = rng.integers(-374, -21, len(pick)) // 16
    cost = np.zeros((len(offsets), cells))
    for group in np.unique(step_of):
        sel = pick[step_of == group]
        s, j0, cell = _context_cells(train["normalised"][sel], train["levels"][sel].astype(np.int64),
                                     train["normalised"][sel - 1], train["levels"][sel - 1].astype(np.int64),
                                     int(group * 16 + 8))
        for i, d in enumerate(offsets):
            shifted = np.clip(j0 + d, J_MIN, J_MAX).ravel()
            cost[i] += np.bincount(cell.ravel(), bits_each(s.ravel(), shifted), cells)
    table = np.where(cost.sum(0) > 0, offsets[cost.argmin(0)], 0)
    first = {}
    for name in held["speakers"]:
        first.setdefault(str(name), len(first))
    seconds = held["samples"].sum() / 16000
    print(f"{cells} cells fitted on {len(pick)} training frames; ideal bits on the held-out speakers:\n")
    print("| rate | Laplace tables kbps | context tables kbps | saved |")
    print("|---|---|---|---|")
    for r, kbps in enumerate((6, 12, 24)):
        base = ctx = 0.0
        for i, (start, n) in enumerate(zip(held["starts"], held["lengths"], strict=True)):
            norm, lev = held["normalised"][start:start + n], held["levels"][start:start + n].astype(np.int64)
            step = steps[first[str(held["speakers"][i])]][r]
            s, j0, cell = _context_cells(norm, lev, np.concatenate([np.zeros((1, 320)), norm[:-1]]),
                                         np.concatenate([lev[:1], lev[:-1]]), step)
            base += TABLES.bits(s, j0)
            ctx += TABLES.bits(s, np.clip(j0 + table[cell], J_MIN, J_MAX))
        print(f"| {kbps} | {base / seconds / 1000:.2f} | {ctx / seconds / 1000:.2f} | "
              f"{100 * (1 - ctx / base):.1f} % |")


# -- ramp: the shipped decoder's band energies at fine steps -------------------------------------
RAMPS = {"network": None, "energy kept always": (1023, 1024), "ramp -300..-150": (-300, -150),
         "ramp -250..-100": (-250, -100), "ramp -220..-170": (-220, -170)}


def _decoder_variants(model: str, path: str, bps: int, changes: list[dict]) -> list:
    """One held-out file coded by the perceptual model ``model`` at ``bps``, decoded by the
    textbook decoder and by the model with each of ``changes`` made to its config: their
    (PESQ-WB, ViSQOL)."""
    import dataclasses

    import torch

    from speechcodec.audio import read_audio
    from speechcodec.metrics import to_pesq_rate
    from speechcodec.modelfile import load_model_file
    from speechcodec.perceptual.codec import PerceptualCodec
    from speechcodec.transform.mdct import HOP, imdct

    torch.set_num_threads(1)
    audio, rate = read_audio(path)
    ref = to_pesq_rate(audio, rate)[: int(MAX_S * 16000)]
    base = load_model_file(model)
    codec = PerceptualCodec(base, bitrate_bps=bps)
    pieces = [codec.frames_of(codec.encode(ref, 16000))]  # the packets' frames, a step each
    out = [_score((ref, np.clip(imdct(np.concatenate([p.coefficients for p in pieces]), len(ref), HOP), -1, 1)
                   .astype(np.float32)))]
    for change in changes:
        variant = dataclasses.replace(base, config=dataclasses.replace(base.config, **change))
        codec = PerceptualCodec(variant, bitrate_bps=bps)
        deg = np.clip(imdct(codec.enhance(pieces), len(ref), HOP), -1, 1).astype(np.float32)
        out.append(_score((ref, deg)))
    return out


def _ramp_job(job):
    model, path, bps = job
    keys = ("energy_full_step", "energy_none_step")
    return _decoder_variants(model, path, bps, [dict(zip(keys, ramp or (0, 0), strict=True))
                                                for ramp in RAMPS.values()])


def ramp(args) -> None:
    """The perceptual decoder with its output's band energies drawn to the textbook decoder's at
    fine steps, for a few ramps: PESQ-WB / ViSQOL and files better than the textbook decoder."""
    files = held_files(args)
    print(f"{args.model}, {len(files)} held-out files, first {MAX_S:g} s:\n")
    print("| kbps | textbook | " + " | ".join(RAMPS) + " |")
    print("|---|---|" + "---|" * len(RAMPS))
    for bps in [int(r) for r in args.rates.split(",")]:
        with ProcessPoolExecutor(args.workers) as pool:
            rows = np.array(list(pool.map(_ramp_job, [(str(args.model), str(f), bps) for f in files])))
        base = rows[:, 0]
        cells = [f"{rows[:, 0, 0].mean():.3f} / {rows[:, 0, 1].mean():.3f}"]
        for i in range(1, rows.shape[1]):
            r = rows[:, i]
            cells.append(f"{r[:, 0].mean():.3f} / {r[:, 1].mean():.3f} ({(r[:, 0] > base[:, 0]).sum()}, "
                         f"{(r[:, 1] > base[:, 1]).sum()})")
        print(f"| {bps // 1000} | " + " | ".join(cells) + " |", flush=True)


# -- fillgain: the shipped decoder's noise fill at fine steps ---------------------------------------
def _fillgain_job(job):
    model, path, bps, gains = job
    return _decoder_variants(model, path, bps, [{"fill_gain16": gain} for gain in gains])


def fillgain(args) -> None:
    """The perceptual decoder with the all-zero bands' noise fill raised along its energy ramp,
    for each --fill-gains (sixteenths; 16: the textbook decoder's fill): PESQ-WB / ViSQOL, files
    better than the textbook decoder and than 16."""
    files = held_files(args)
    gains = [int(g) for g in args.fill_gains.split(",")]
    print(f"{args.model}, {len(files)} held-out files, first {MAX_S:g} s:\n")
    print("| kbps | textbook | " + " | ".join(f"fill {g}/16" for g in gains) + " |")
    print("|---|---|" + "---|" * len(gains))
    for bps in [int(r) for r in args.rates.split(",")]:
        with ProcessPoolExecutor(args.workers) as pool:
            jobs = [(str(args.model), str(f), bps, gains) for f in files]
            rows = np.array(list(pool.map(_fillgain_job, jobs)))
        textbook, plain = rows[:, 0], rows[:, 1 + gains.index(16)] if 16 in gains else None
        cells = [f"{textbook[:, 0].mean():.3f} / {textbook[:, 1].mean():.3f}"]
        for i in range(len(gains)):
            r = rows[:, 1 + i]
            cell = (f"{r[:, 0].mean():.3f} / {r[:, 1].mean():.3f} ({(r[:, 0] > textbook[:, 0]).sum()}, "
                    f"{(r[:, 1] > textbook[:, 1]).sum()})")
            if plain is not None and gains[i] != 16:
                cell += f"; vs 16/16 ({(r[:, 0] > plain[:, 0]).sum()}, {(r[:, 1] > plain[:, 1]).sum()})"
            cells.append(cell)
        print(f"| {bps // 1000} | " + " | ".join(cells) + " |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["prepare", "fill", "entropy", "transform", "enhance", "tables",
                                         "ramp", "fillgain"])
    parser.add_argument("--model", type=Path, help="ramp, fillgain: a perceptual model file")
    parser.add_argument("--fill-gains", default="16,20,22,24", help="fillgain: sixteenths of the noise fill")
    parser.add_argument("--speech", type=Path, default=SHARED)
    parser.add_argument("--work", type=Path, default=Path("results/premise-perceptual"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rates", default="6000,12000,24000")
    parser.add_argument("--gains", default="0.5,1.0")
    parser.add_argument("--kbps", type=float, default=12)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--look-ahead", type=int, default=0)
    parser.add_argument("--fixed-kbps", type=float, help="enhance: train at this rate's steps only")
    parser.add_argument("--gained", metavar="K1,K2,..", help="transform: one gained model for these kbps")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--lr", type=float, default=5e-4,
                        help="enhance: learning rate at the start of --lr-end's decay")
    parser.add_argument("--steps", type=int, help="enhance: stop at this many steps (a control run's count)")
    parser.add_argument("--lr-end", type=float, help="enhance: decay the learning rate to this over --minutes")
    args = parser.parse_args()
    if not args.speech.is_dir():
        sys.exit(f"no training speech at {args.speech}: give --speech DIR")
    {"prepare": prepare, "fill": fill, "entropy": entropy, "transform": transform,
     "enhance": enhance, "tables": tables, "ramp": ramp, "fillgain": fillgain}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
