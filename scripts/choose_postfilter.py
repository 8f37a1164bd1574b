"""Choose each model's postfilter strengths on validation speech, and store them in its file.

Validation speech is ``--val-files`` files spread over ``shared/data/train`` (the shipped models'
training speakers; the test speech of ``shared/data/speech`` is never read here). Every file is
really coded once; the decoded audio then goes through each pair of strengths on the grid and
is scored with PESQ-WB. For each formant strength, the comb strength with the best mean is then
scored with ViSQOL too (a second opinion: a filter that pleases PESQ alone is not a gain), and
the best PESQ-WB among those whose mean ViSQOL is not below no postfilter's wins (none of them:
no postfilter). The tables show, for each pair, the mean and how many files it made better than
no postfilter.

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


def _decoded(model: str, path: str):
    import torch

    import speechcodec
    from speechcodec.audio import read_audio
    from speechcodec.metrics import PESQ_RATE_HZ, to_pesq_rate

    torch.set_num_threads(1)
    codec = speechcodec.load(model)
    audio, rate = read_audio(path)
    ref = to_pesq_rate(audio, rate)
    decoded, _ = codec.decode(codec.encode(ref, PESQ_RATE_HZ), postfilter="off")
    return ref, decoded


def validation_files(count: int, folder: Path = TRAIN) -> list[Path]:
    """``count`` files evenly spread over the training speech, away from the runs' own picks."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".flac", ".wav"))
    if not files:
        sys.exit(f"no validation speech at {folder}: this script needs the training speech (--speech DIR)")
    step = max(1, len(files) // count)
    return files[step // 2::step][:count]


def _score(job: tuple[str, str, str, list[tuple[float, float]]]) -> list[float]:
    """One file: decode it once, then score each pair of strengths with ``metric``."""
    from speechcodec import metrics
    from speechcodec.postfilter import PostfilterSettings, postfilter

    metric, model, path, pairs = job
    ref, decoded = _decoded(model, path)
    score = getattr(metrics, metric)
    return [score(ref, postfilter(decoded, metrics.PESQ_RATE_HZ, PostfilterSettings(c, f))) for c, f in pairs]


def _table(title: str, grid: list, means: np.ndarray, better: np.ndarray) -> None:
    print(title)
    print("        " + "".join(f"{f:>14g}" for f in FORMANTS))
    for c in COMBS:
        cells = [f"{means[grid.index((c, f))]:8.3f} ({better[grid.index((c, f))]:2d})"
                 if (c, f) in grid else "" for f in FORMANTS]
        print(f"  {c:<6g}" + "".join(f"{cell:>14}" for cell in cells))


def finalists_of(means: np.ndarray, grid: list[tuple[float, float]]) -> list[int]:
    """Grid indices ViSQOL then scores: no postfilter first, then for each formant strength the
    comb strength with the best mean PESQ-WB (the formant emphasis is what can cost ViSQOL, so
    weaker ones stay in the running). The best pair overall is always among them."""
    best = [max((i for i, (_, f) in enumerate(grid) if f == formant and i != 0), key=lambda i: means[i])
            for formant in FORMANTS]
    return [0] + best


def choose(pesq: np.ndarray, visqol: np.ndarray, finalists: list[int]) -> int:
    """The index (into ``finalists``, whose first entry is no postfilter) of the pair with the best
    mean PESQ-WB among those whose mean ViSQOL is not below no postfilter's."""
    fair = [i for i in range(len(finalists)) if visqol[:, i].mean() >= visqol[:, 0].mean()]
    return max(fair, key=lambda i: pesq[:, finalists[i]].mean())


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
    where = 'shared/data/train' if args.speech == TRAIN else str(args.speech)
    with ProcessPoolExecutor(args.workers) as pool:
        for name in names:
            jobs = [("pesq_wb", name, str(f), grid) for f in files]
            pesq = np.array(list(pool.map(_score, jobs)))  # [files, grid]
            # A file either metric cannot score (too short, silent) counts for neither.
            finalists = finalists_of(np.nanmean(pesq, axis=0), grid)
            jobs = [("visqol", name, str(f), [grid[i] for i in finalists]) for f in files]
            visqol = np.array(list(pool.map(_score, jobs)))  # [files, finalists]
            ok = ~(np.isnan(pesq).any(axis=1) | np.isnan(visqol).any(axis=1))
            if not ok.any():
                sys.exit(f"{name}: no validation file could be scored by both PESQ-WB and ViSQOL "
                         f"(too short or silent?): give more files (--val-files) or other speech (--speech)")
            pesq, visqol = pesq[ok], visqol[ok]
            means, better = pesq.mean(axis=0), (pesq > pesq[:, :1]).sum(axis=0)
            _table(f"{name}: PESQ-WB on {len(pesq)} validation files of {where}; rows comb, columns "
                   "formant; (files better than off)", grid, means, better)
            v_means, v_better = visqol.mean(axis=0), (visqol > visqol[:, :1]).sum(axis=0)
            _table("  ViSQOL of the best PESQ-WB pair at each formant strength", [grid[i] for i in finalists],
                   v_means, v_better)
            pick = choose(pesq, visqol, finalists)
            best = finalists[pick]
            comb, formant = grid[best]
            print(f"  chosen: comb {comb:g}, formant {formant:g}: PESQ-WB {means[0]:.3f} -> {means[best]:.3f} "
                  f"({better[best]} of {len(pesq)} files better), ViSQOL {v_means[0]:.3f} -> "
                  f"{v_means[pick]:.3f} ({v_better[pick]} better)\n")
            if args.write:
                update_info(model_path(name), {"postfilter": {
                    "strengths": {"comb": comb, "formant": formant},
                    "chosen_on": f"best PESQ-WB with ViSQOL not below no postfilter's, on {len(pesq)} "
                                 f"files of {where} (scripts/choose_postfilter.py)",
                    "validation_pesq_wb": [round(float(means[0]), 4), round(float(means[best]), 4)],
                    "validation_visqol": [round(float(v_means[0]), 4), round(float(v_means[pick]), 4)],
                    "validation_files_better": [int(better[best]), len(pesq)],
                }})
    return 0


if __name__ == "__main__":
    sys.exit(main())
