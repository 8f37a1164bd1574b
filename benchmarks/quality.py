"""Quality of each model against Opus at the same real bitrate, on speech never used in training.

For every model: real kbps (bytes written), PESQ-WB, PESQ-NB, ViSQOL v3 (speech mode), STOI, and
how many files a ``--baseline`` run of the same model scored better on both PESQ-WB and ViSQOL
(the paired count; e.g. ``--baseline-postfilter off`` measures the postfilter); then libopus at that
measured bitrate (its nominal rate corrected until its real rate is within 2 %, 3 runs at
most; at its lowest rate when the model is below it) and the PESQ-WB difference. Audio: the 51
utterances of ../shared/data/speech (VCTK, ARCTIC, LJSpeech, LibriTTS speakers; none in training).

    .venv/bin/python benchmarks/quality.py [--model NAME_OR_PATH ...] [--out DIR] [--report DIR] [--csv FILE]

``--report DIR`` also runs Opus on a grid of bitrates and writes the Table 1 files and the
rate-quality plot there (the README's plot is made this way).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import soundfile as sf

import speechcodec
from speechcodec.baselines.opus import MIN_BITRATE_BPS
from speechcodec.evaluate import evaluate, evaluate_opus_matched
from speechcodec.report import build_report

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech" / "audio"


def speech_manifest(folder: Path) -> Path:
    files = sorted(SPEECH.glob("*.wav"))
    if not files:
        sys.exit(f"no test speech at {SPEECH}: this benchmark needs the shared developer speech set")
    rows = [(f.stem.split("_")[0] + "_" + f.stem.split("_")[1], f.stem, "", sf.info(str(f)).duration,
             str(f), str(f)) for f in files]
    path = folder / "test.csv"
    pd.DataFrame(rows, columns=["speaker", "utterance", "transcript", "duration_s", "path", "source"]
                 ).to_csv(path, index=False)
    return path


def paired_count(new: Path, old: Path) -> str:
    """'PESQ n/N, ViSQOL m/N': files the ``new`` eval scored higher than the ``old`` one."""
    a, b = (pd.read_csv(d / "scores.csv").set_index("utterance") for d in (new, old))
    return (f"PESQ {(a['pesq_wb'] > b['pesq_wb']).sum()}/{len(a)}, "
            f"ViSQOL {(a['visqol'] > b['visqol']).sum()}/{len(a)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", help="models (default: all installed)")
    parser.add_argument("--out", help="keep the eval folders here (default: a temp folder)")
    parser.add_argument("--report", help="write table1.* and rate_quality.* here, with an Opus grid")
    parser.add_argument("--csv", help="also write the table as CSV (read by scripts/model_card.py)")
    parser.add_argument("--opus-grid", nargs="*", type=int, default=[6000, 8000, 12000, 16000, 24000, 32000])
    parser.add_argument("--baseline-postfilter", choices=["off"],
                        help="also score each model with its postfilter off, and count files better with it")
    args = parser.parse_args()
    names = args.model or [m["name"] for m in speechcodec.list_models()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        manifest = speech_manifest(root)
        rows = []
        for name in names:
            tag = Path(name).stem
            n = evaluate(name, manifest, root / f"neural-{tag}", progress=False,
                         target_bitrate_bps=speechcodec.load(name).bitrate_bps)
            o = evaluate_opus_matched(n, manifest, root / f"opus-{tag}", progress=False)
            paired = ""
            if args.baseline_postfilter:
                b = evaluate(name, manifest, root / f"neural-{tag}-postfilter-off", progress=False,
                             postfilter="off")
                print(f"{n['codec']} with its postfilter off: PESQ-WB {b['pesq_wb']:.3f}, "
                      f"ViSQOL {b['visqol']:.3f}", file=sys.stderr)
                paired = paired_count(root / f"neural-{tag}", root / f"neural-{tag}-postfilter-off")
            rows.append((n["codec"], n["kbps"], n["pesq_wb"], n["pesq_nb"], n["visqol"], n["stoi"], o["kbps"],
                         o["pesq_wb"], o["visqol"], n["pesq_wb"] - o["pesq_wb"], n["visqol"] - o["visqol"],
                         paired, "Opus floor" if o["target_bitrate_bps"] == MIN_BITRATE_BPS else ""))
        if args.report:
            tags = [Path(n).stem for n in names]
            dirs = [root / f"neural-{t}" for t in tags] + [root / f"opus-{t}" for t in tags]
            for bps in args.opus_grid:
                evaluate(f"opus:{bps}", manifest, root / f"opus-grid-{bps}", progress=False)
                dirs.append(root / f"opus-grid-{bps}")
            build_report(dirs, args.report)
    print(f"{len(list(SPEECH.glob('*.wav')))} utterances of {SPEECH}; speakers never used in training")
    print(f"{'model':<22} {'kbps':>6} {'PESQ-WB':>8} {'PESQ-NB':>8} {'ViSQOL':>7} {'STOI':>6} "
          f"{'Opus kbps':>10} {'Opus WB':>8} {'Opus ViSQOL':>11} {'delta WB':>9} {'delta ViSQOL':>12} "
          f"{'better':>8}")
    if args.csv:
        pd.DataFrame(rows, columns=["model", "kbps", "pesq_wb", "pesq_nb", "visqol", "stoi", "opus_kbps",
                                    "opus_pesq_wb", "opus_visqol", "delta_pesq_wb", "delta_visqol",
                                    "files_better", "note"]).to_csv(args.csv, index=False)
    for r in rows:
        print(f"{r[0]:<22} {r[1]:>6.2f} {r[2]:>8.3f} {r[3]:>8.3f} {r[4]:>7.3f} {r[5]:>6.3f} {r[6]:>10.2f} "
              f"{r[7]:>8.3f} {r[8]:>11.3f} {r[9]:>+9.3f} {r[10]:>+12.3f} {r[11]:>8} {r[12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
