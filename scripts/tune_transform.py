#!/usr/bin/env python
"""Choose the textbook transform coder's settings on held-out training speech, never on test speech.

Validation speech: one file from every tenth speaker of ``shared/data/train`` (sorted by name;
no setting here is trained, so these speakers only judge), cut to its first ``--max-seconds``.
Each variant changes one setting of the current defaults (``TransformSettings``); every file is
coded at each rate for real (the bytes written give the rate), decoded, and scored by PESQ-WB
and ViSQOL. Printed: real kbps, the energies' kbps, both metrics' means, and how many files
each metric says got better than the defaults.

    .venv/bin/python scripts/tune_transform.py            # about 15 minutes on 2 cores
    .venv/bin/python scripts/tune_transform.py --vary alpha16=6,8,10 --rates 12000
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "audio"
VARY = {"layout": ["bark20"], "energy_step": [2, 4], "energy_frames": [2], "alpha16": [6, 10],
        "noise_fill16": [0, 12]}


def validation_files(folder: Path) -> list[Path]:
    from speechcodec.data.split import held_out_speakers

    held = held_out_speakers(p.name for p in folder.iterdir() if p.is_dir())
    return [sorted((folder / s).glob("*.flac"))[0] for s in held if any((folder / s).glob("*.flac"))]


def _job(args: tuple[str, int, dict, float]) -> tuple[float, float, float, float]:
    from speechcodec.audio import read_audio
    from speechcodec.baselines.transform import TransformCodec, TransformSettings, decode
    from speechcodec.metrics import pesq_wb, to_pesq_rate, visqol

    path, bps, settings, max_s = args
    audio, rate = read_audio(path)
    ref = to_pesq_rate(audio, rate)[: int(max_s * 16000)]
    codec = TransformCodec(bps, TransformSettings(**settings))
    data = codec.encode(ref, 16000)
    deg, _ = decode(data)
    seconds = len(ref) / 16000
    kbps, side_kbps = len(data) * 8 / seconds / 1000, codec.last_energy_bits / seconds / 1000
    return kbps, side_kbps, pesq_wb(ref, deg), visqol(ref, deg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", type=Path, default=TRAIN, help="training speech (speaker folders)")
    parser.add_argument("--rates", default="6000,12000,24000", help="target bps, comma-separated")
    parser.add_argument("--vary", action="append", metavar="NAME=V1,V2",
                        help="a setting and the values to try (default: every setting, two values each)")
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    from speechcodec.baselines.transform import TransformSettings

    if not args.speech.is_dir():
        sys.exit(f"no training speech at {args.speech}: give --speech DIR")
    files = validation_files(args.speech)
    vary = VARY
    if args.vary:
        vary = {}
        for item in args.vary:
            name, values = item.split("=", 1)
            vary[name] = [v if name == "layout" else int(v) for v in values.split(",")]
    base = dataclasses.asdict(TransformSettings())
    variants = [("defaults", base)] + [(f"{k}={v}", {**base, k: v}) for k, vs in vary.items() for v in vs]
    print(f"{len(files)} validation files (one per tenth speaker of {args.speech}), first "
          f"{args.max_seconds:g} s each; defaults {base}\n")
    print("| variant | target kbps | real kbps | energies kbps | PESQ-WB | ViSQOL "
          "| files better (PESQ-WB, ViSQOL) |")
    print("|---|---|---|---|---|---|---|")
    reference: dict[int, np.ndarray] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for bps in (int(r) for r in args.rates.split(",")):
            for name, settings in variants:
                jobs = [(str(f), bps, settings, args.max_seconds) for f in files]
                got = np.array(list(pool.map(_job, jobs)))
                if name == "defaults":
                    reference[bps] = got
                wins = (got[:, 2:] > reference[bps][:, 2:]).sum(axis=0)
                better = "" if name == "defaults" else f"{wins[0]}, {wins[1]} of {len(got)}"
                print(f"| {name} | {bps / 1000:g} | {got[:, 0].mean():.2f} | {got[:, 1].mean():.2f} | "
                      f"{got[:, 2].mean():.3f} | {got[:, 3].mean():.3f} | {better} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
