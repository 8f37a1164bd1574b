"""Choose each model's postfilter strengths on validation speech, and store them in its file.

Validation speech is ``--val-files`` files spread over ``shared/data/train`` (the shipped models'
training speakers; the test speech of ``shared/data/speech`` is never read here). Every file is
really coded once; the decoded audio then goes through each pair of strengths on the grid and
is scored with PESQ-WB. The pair with the best mean wins; the table shows, for each pair, the
mean and how many files it made better than no postfilter.

    .venv/bin/python scripts/choose_postfilter.py [--model NAME_OR_PATH ...] [--write]

``--write`` stores the winner in the model file's info (``postfilter``): weights, tables and
fingerprint are unchanged, so streams it wrote before still decode, as they did (their format
carries no strengths); streams it writes after carry the new ones.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "audio"
COMBS = (0.0, 0.1, 0.2, 0.3, 0.4)
FORMANTS = (0.0, 0.1, 0.15, 0.2, 0.25)


def validation_files(count: int, folder: Path = TRAIN) -> list[Path]:
    """``count`` files evenly spread over the training speech, away from the runs' own picks."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".flac", ".wav"))
    if not files:
        sys.exit(f"no validation speech at {folder}: this script needs the training speech (--speech DIR)")
    step = max(1, len(files) // count)
    return files[step // 2::step][:count]


def _score(job: tuple[str, str]) -> list[float]:
    import torch

    import speechcodec
    from speechcodec.audio import read_audio
    from speechcodec.metrics import PESQ_RATE_HZ, pesq_wb, to_pesq_rate
    from speechcodec.postfilter import PostfilterSettings, postfilter

    torch.set_num_threads(1)
    model, path = job
    codec = speechcodec.load(model)
    audio, rate = read_audio(path)
    ref = to_pesq_rate(audio, rate)
    decoded, _ = codec.decode(codec.encode(ref, PESQ_RATE_HZ), postfilter="off")
    return [pesq_wb(ref, postfilter(decoded, PESQ_RATE_HZ, PostfilterSettings(c, f)))
            for c, f in itertools.product(COMBS, FORMANTS)]


def main() -> int:
    import speechcodec
    from speechcodec.modelfile import update_info
    from speechcodec.registry import model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", help="models (default: all installed)")
    parser.add_argument("--val-files", type=int, default=24, metavar="N")
    parser.add_argument("--speech", type=Path, default=TRAIN,
                        help="the training speech the files are picked from (default: shared/data/train)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="store the winners in the model files")
    args = parser.parse_args()
    names = args.model or [m["name"] for m in speechcodec.list_models()]
    files = validation_files(args.val_files, args.speech)
    grid = list(itertools.product(COMBS, FORMANTS))
    with ProcessPoolExecutor(args.workers) as pool:
        for name in names:
            scores = np.array(list(pool.map(_score, [(name, str(f)) for f in files])))  # [files, grid]
            ok = ~np.isnan(scores).any(axis=1)
            scores = scores[ok]
            means = scores.mean(axis=0)
            better = (scores > scores[:, :1]).sum(axis=0)
            best = int(np.argmax(means))
            print(f"{name}: PESQ-WB on {len(scores)} validation files of {args.speech}; "
                  f"rows comb, columns formant; (files better than off)")
            print("        " + "".join(f"{f:>14g}" for f in FORMANTS))
            for i, c in enumerate(COMBS):
                cells = [f"{means[i * len(FORMANTS) + j]:8.3f} ({better[i * len(FORMANTS) + j]:2d})"
                         for j in range(len(FORMANTS))]
                print(f"  {c:<6g}" + "".join(f"{cell:>14}" for cell in cells))
            comb, formant = grid[best]
            print(f"  chosen: comb {comb:g}, formant {formant:g}: {means[0]:.3f} -> {means[best]:.3f}, "
                  f"{better[best]} of {len(scores)} files better\n")
            if args.write:
                update_info(model_path(name), {"postfilter": {
                    "strengths": {"comb": comb, "formant": formant},
                    "chosen_on": f"PESQ-WB on {len(scores)} files of "
                                 f"{'shared/data/train' if args.speech == TRAIN else args.speech} "
                                 "(scripts/choose_postfilter.py)",
                    "validation_pesq_wb": [round(float(means[0]), 4), round(float(means[best]), 4)],
                    "validation_files_better": [int(better[best]), len(scores)],
                }})
    return 0


if __name__ == "__main__":
    sys.exit(main())
