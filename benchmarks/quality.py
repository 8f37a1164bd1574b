"""Quality of each model against Opus at the same real bitrate, on speech never used in training.

For every model: real kbps (bytes written), PESQ-WB, PESQ-NB, ViSQOL v3 (speech mode), STOI, and
how many files a ``--baseline`` run of the same model scored better on both PESQ-WB and ViSQOL
(the paired count; e.g. ``--baseline-postfilter off`` measures the postfilter); then libopus at that
measured bitrate (its nominal rate corrected until its real rate is within 2 %, 3 runs at
most; at its lowest rate when the model is below it) and the PESQ-WB difference. A model below
Opus's floor is also set beside Codec 2 (libcodec2, narrowband) at the lowest mode at or above
its rate, PESQ-WB and PESQ-NB both. Every model is also set beside the textbook transform coder
(``speechcodec.baselines.TransformCodec``: MDCT, band energies, one quantiser step, no network)
at its measured rate, with the count of files on which the model beats it. Audio: the 51
utterances of ../shared/data/speech (VCTK, ARCTIC, LJSpeech, LibriTTS speakers; none in
training), or any folder of speech files you give.

    .venv/bin/python benchmarks/quality.py [SPEECH_DIR] [--model NAME_OR_PATH ...] [--out DIR]
                                           [--report DIR] [--csv FILE]

``--report DIR`` also runs Opus and the textbook coder on a grid of bitrates (and Codec 2 in
every mode of ``--codec2-modes``) and writes the Table 1 files and the rate-quality plot there (the README's
plot is made this way).
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
from speechcodec.codecs import capabilities
from speechcodec.evaluate import evaluate, evaluate_opus_matched, evaluate_transform_matched, load_codec
from speechcodec.metrics import BESIDE_BASELINES, METRICS, SHOWN, VERSUS_CODEC2, VERSUS_OPUS
from speechcodec.report import build_report, codec2_match

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech" / "audio"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def speech_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def speech_manifest(speech: Path, folder: Path) -> Path:
    files = speech_files(speech)
    if not files:
        hint = ": give a folder of speech, or get the shared developer speech set" if speech == SPEECH else ""
        sys.exit(f"no speech files ({', '.join(AUDIO_SUFFIXES)}) under {speech}{hint}")
    # absolute paths: a manifest's relative paths are read relative to the manifest's own folder
    rows = [("_".join(f.stem.split("_")[:2]), f.stem, "", sf.info(str(f)).duration, str(f.resolve()), str(f))
            for f in files]
    path = folder / "test.csv"
    pd.DataFrame(rows, columns=["speaker", "utterance", "transcript", "duration_s", "path", "source"]
                 ).to_csv(path, index=False)
    return path


def rate_specs(name: str) -> list[str]:
    """What to score of a model: itself, or, for a model file that codes every rate, each rate its
    info lists (``pc.safetensors@6000``, ...)."""
    codec = speechcodec.load(name)
    rates = codec.info.get("bitrates_bps") if capabilities(codec).every_rate and "@" not in name else None
    if not rates or Path(name).suffix != ".safetensors":
        return [name]
    return [f"{name}@{bps}" for bps in rates]


def tag_of(spec: str) -> str:
    """A scored model's folder name: its file's stem, and its rate for ``MODEL@BPS``."""
    base, _, bps = spec.partition("@")
    return Path(base).stem + (f"-{bps}" if bps else "")


def paired_count(new: Path, old: Path) -> str:
    """'PESQ-WB n/N, ViSQOL m/N': files the ``new`` eval scored better than the ``old`` one, on each
    metric compared with Opus."""
    a, b = (pd.read_csv(d / "scores.csv").set_index("utterance") for d in (new, old))
    better = {m.label: ((a[m.name] > b[m.name]) if m.higher_is_better else (a[m.name] < b[m.name])).sum()
              for m in VERSUS_OPUS}
    return ", ".join(f"{label} {count}/{len(a)}" for label, count in better.items())


def quality_row(n: dict, o: dict, paired: str) -> dict:
    """A model's row of the CSV (read by scripts/model_card.py): its scores, Opus's at its rate."""
    return {"model": n["codec"], "kbps": n["kbps"], **{m.name: n[m.name] for m in SHOWN},
            "opus_kbps": o["kbps"], **{f"opus_{m.name}": o[m.name] for m in VERSUS_OPUS},
            **{f"delta_{m.name}": n[m.name] - o[m.name] for m in VERSUS_OPUS}, "files_better": paired,
            "note": "Opus floor" if o["target_bitrate_bps"] == MIN_BITRATE_BPS else ""}


def transform_columns(n: dict, t: dict, paired: str) -> dict:
    """The textbook coder's columns of a model's row: its scores at the model's rate, the
    differences, and on how many files the model beats it."""
    return {"transform_kbps": t["kbps"], **{f"transform_{m.name}": t[m.name] for m in BESIDE_BASELINES},
            **{f"delta_{m.name}_transform": n[m.name] - t[m.name] for m in VERSUS_OPUS},
            "files_better_than_transform": paired}


def codec2_row(n: dict, c: dict) -> dict:
    return {"model": n["codec"], "kbps": n["kbps"], **{m.name: n[m.name] for m in BESIDE_BASELINES},
            "codec2": c["codec"], "codec2_kbps": c["kbps"],
            **{f"codec2_{m.name}": c[m.name] for m in BESIDE_BASELINES},
            **{f"delta_{m.name}": n[m.name] - c[m.name] for m in VERSUS_CODEC2}}


def show(rows: list[dict]) -> None:
    """Print rows as a table: kbps with two decimals, scores with three, differences signed."""
    def fmt(column: str):
        if column.endswith("kbps"):
            return lambda v: f"{v:.2f}"
        if column.startswith("delta_"):
            return lambda v: f"{v:+.3f}"
        return (lambda v: f"{v:.3f}") if any(column.endswith(m.name) for m in METRICS) else str
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, formatters={c: fmt(c) for c in table.columns}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("speech", nargs="?", type=Path, default=SPEECH,
                        help="a folder of speech files (default: the shared test speech)")
    parser.add_argument("--model", nargs="*", help="models (default: all installed)")
    parser.add_argument("--out", help="keep the eval folders here (default: a temp folder)")
    parser.add_argument("--report", help="write table1.* and rate_quality.* here, with an Opus grid")
    parser.add_argument("--csv", help="also write the table as CSV (read by scripts/model_card.py)")
    parser.add_argument("--opus-grid", nargs="*", type=int, default=[6000, 8000, 12000, 16000, 24000, 32000])
    parser.add_argument("--codec2-modes", nargs="*", type=int, default=[1200, 1600, 2400, 3200],
                        help="Codec 2 modes for models below Opus's floor ([] for none)")
    parser.add_argument("--baseline-postfilter", choices=["off"],
                        help="also score each model with its postfilter off, and count files better with it")
    args = parser.parse_args()
    names = [spec for name in args.model or [m["name"] for m in speechcodec.list_models()]
             for spec in rate_specs(name)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        manifest = speech_manifest(args.speech, root)
        rows, codec2, below = [], [], []
        for name in names:
            tag = tag_of(name)
            n = evaluate(name, manifest, root / f"neural-{tag}", progress=False,
                         target_bitrate_bps=load_codec(name).bitrate_bps)
            o = evaluate_opus_matched(n, manifest, root / f"opus-{tag}", progress=False)
            paired = ""
            if args.baseline_postfilter:
                b = evaluate(name, manifest, root / f"neural-{tag}-postfilter-off", progress=False,
                             postfilter="off")
                print(f"{n['codec']} with its postfilter off: "
                      + ", ".join(f"{m.label} {b[m.name]:.3f}" for m in VERSUS_OPUS), file=sys.stderr)
                paired = paired_count(root / f"neural-{tag}", root / f"neural-{tag}-postfilter-off")
            t = evaluate_transform_matched(n, manifest, root / f"transform-{tag}", progress=False)
            beats = paired_count(root / f"neural-{tag}", root / f"transform-{tag}")
            rows.append(quality_row(n, o, paired) | transform_columns(n, t, beats)
                        | {"files_better_than_opus": paired_count(root / f"neural-{tag}",
                                                                  root / f"opus-{tag}")})
            if n["kbps"] * 1000 < MIN_BITRATE_BPS and args.codec2_modes and not codec2:
                codec2 = [evaluate(f"codec2:{m}", manifest, root / f"codec2-{m}", progress=False,
                                   target_bitrate_bps=m) for m in args.codec2_modes]
            if codec2_match(n["kbps"], codec2):
                below.append((n, codec2_match(n["kbps"], codec2)))
        if args.report:
            tags = [tag_of(n) for n in names]
            dirs = [root / f"{kind}-{t}" for kind in ("neural", "opus", "transform") for t in tags]
            for m in args.codec2_modes:
                if not (root / f"codec2-{m}" / "summary.json").exists():
                    evaluate(f"codec2:{m}", manifest, root / f"codec2-{m}", progress=False,
                             target_bitrate_bps=m)
                dirs.append(root / f"codec2-{m}")
            for bps in args.opus_grid:
                evaluate(f"opus:{bps}", manifest, root / f"opus-grid-{bps}", progress=False)
                evaluate(f"transform:{bps}", manifest, root / f"transform-grid-{bps}", progress=False)
                dirs += [root / f"opus-grid-{bps}", root / f"transform-grid-{bps}"]
            build_report(dirs, args.report)
    print(f"{len(speech_files(args.speech))} utterances of {args.speech}"
          + ("; speakers never used in training" if args.speech == SPEECH else ""))
    show([{k: v for k, v in r.items() if "transform" not in k} for r in rows])
    print("\nBeside the textbook transform coder (no network) at each model's real rate; files better: "
          "on how many files the model beats it:")
    show([{"model": r["model"], "kbps": r["kbps"], **{m.name: r[m.name] for m in BESIDE_BASELINES},
           **{k: v for k, v in r.items() if "transform" in k}} for r in rows])
    if args.csv:
        beside = {n["codec"]: c for n, c in below}
        table = pd.DataFrame(rows)
        table["codec2"] = [beside.get(m, {}).get("codec") for m in table["model"]]
        for column in ["kbps"] + [m.name for m in BESIDE_BASELINES]:
            table[f"codec2_{column}"] = [beside.get(m, {}).get(column) for m in table["model"]]
        table.to_csv(args.csv, index=False)
    if below:
        print("\nBelow Opus's floor, beside Codec 2 (8 kHz) at the lowest mode at or above the model's rate:")
        show([codec2_row(n, c) for n, c in below])
    return 0


if __name__ == "__main__":
    sys.exit(main())
