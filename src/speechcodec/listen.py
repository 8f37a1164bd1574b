"""The listening page: original, neural, Opus, the textbook transform coder (and Codec 2 below
Opus's floor) side by side, with spectrograms and the numbers.

A static, self-contained folder (``index.html`` + ``assets/``): no network, no scripts, no
external fonts. Built from the evaluation outputs, so it always shows the latest run.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from speechcodec.config import shipped_models
from speechcodec.data.manifest import read_manifest
from speechcodec.errors import optional_import
from speechcodec.layout import SHIPPED_PREFIX, neural_run, opus_matched_run, shipped_run, transform_matched_run
from speechcodec.metrics import VERSUS_OPUS, score_text
from speechcodec.report import SHIPPED_NOTE, model_label

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem;
       color: #111; background: #fff; line-height: 1.4; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #999; padding: .3rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.utterance { border-top: 2px solid #333; margin-top: 2rem; padding-top: 1rem; }
.clips { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; padding: .5rem; border: 1px solid #bbb; width: 16rem; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
audio { width: 100%; }
img.spec { width: 100%; height: auto; display: block; margin-top: .3rem; }
a:focus, audio:focus { outline: 3px solid #000; outline-offset: 2px; }
"""


def _text(value) -> str:
    """A CSV cell as text; pandas reads an empty cell as NaN."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


# The page's table: the metrics compared with every baseline (speechcodec.metrics.VERSUS_OPUS).
TABLE_HEAD = (["model", "real kbps"] + [m.label for m in VERSUS_OPUS] + ["Opus kbps"]
              + [f"Opus {m.label}" for m in VERSUS_OPUS] + [f"difference ({m.label})" for m in VERSUS_OPUS]
              + ["note", "Codec 2 (below Opus's floor)"] + [f"Codec 2 {m.label}" for m in VERSUS_OPUS]
              + ["textbook kbps"] + [f"textbook {m.label}" for m in VERSUS_OPUS])


def _table_row(r: dict) -> str:
    cells = ([model_label(r), f"{r['neural_kbps']:.2f}"]
             + [score_text(r[f"neural_{m.name}"], m) for m in VERSUS_OPUS]
             + [f"{r['opus_kbps']:.2f}"] + [score_text(r[f"opus_{m.name}"], m) for m in VERSUS_OPUS]
             + [score_text(r[f"delta_{m.name}"], m, sign=True) for m in VERSUS_OPUS]
             + [_text(r["note"]), _text(r["codec2"])]
             + [score_text(r[f"codec2_{m.name}"], m) if _text(r["codec2"]) else "" for m in VERSUS_OPUS]
             + [_kbps(r.get("transform_kbps"))]
             + [score_text(r.get(f"transform_{m.name}"), m) for m in VERSUS_OPUS])
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def _kbps(value) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def pick_utterances(test: pd.DataFrame, count: int) -> list[dict]:
    """``count`` utterances, deterministic, spread across speakers (round robin, sorted order)."""
    by_speaker = {spk: g.sort_values("utterance").to_dict("records")
                  for spk, g in sorted(test.groupby("speaker"), key=lambda kv: str(kv[0]))}
    picked, rank = [], 0
    while len(picked) < count and any(len(v) > rank for v in by_speaker.values()):
        for rows in by_speaker.values():
            if len(rows) > rank and len(picked) < count:
                picked.append(rows[rank])
        rank += 1
    return picked


def spectrogram_png(audio: np.ndarray, rate: int, path: Path, title: str) -> None:
    matplotlib = optional_import("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 1.6), dpi=100)
    dither = np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32) * 1e-6
    ax.specgram(audio + dither, NFFT=512, Fs=rate, noverlap=384, cmap="magma", vmin=-140)
    ax.set_ylim(0, rate / 2)
    ax.set_yticks([0, 4000, 8000])
    ax.set_yticklabels(["0", "4k", "8k"], fontsize=6)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(title, fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path)
    plt.close(fig)


def _clip(out: Path, utt: str, key: str, src: Path, label: str, detail: str) -> str:
    audio, rate = sf.read(src, dtype="float32")
    folder = out / "assets" / utt
    folder.mkdir(parents=True, exist_ok=True)
    sound = folder / f"{key}.flac"
    sf.write(sound, audio, rate, subtype="PCM_16")
    image = folder / f"{key}.png"
    spectrogram_png(audio, rate, image, label)
    rel_sound, rel_image = sound.relative_to(out).as_posix(), image.relative_to(out).as_posix()
    text = html.escape(f"{label}{' - ' + detail if detail else ''}")
    return (f'<figure><figcaption id="{utt}-{key}">{text}</figcaption>'
            f'<audio controls preload="metadata" aria-labelledby="{utt}-{key}" src="{rel_sound}">'
            f'<a href="{rel_sound}">{html.escape(label)} (FLAC)</a></audio>'
            f'<img class="spec" src="{rel_image}" alt="Spectrogram of {html.escape(label)}, '
            f'0 to 8 kHz over time"></figure>')


def build_listening_page(config: dict, results: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/index.html`` and its assets from a pipeline run under ``results``."""
    results, out = Path(results), Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "assets").mkdir(parents=True)
    test = read_manifest(results / "split" / "test.csv")
    table = pd.read_csv(results / "report" / "table1.csv")
    shutil.copy(results / "report" / "rate_quality.png", out / "assets" / "rate_quality.png")
    bitrates = [int(b) for b in config["bitrates_bps"]]
    codec2_of = {str(r.model): r.codec2 for r in table.itertuples() if isinstance(r.codec2, str) and r.codec2}

    def run(kind: str, folder: str) -> tuple:
        summary = json.loads((results / "eval" / folder / "summary.json").read_text())
        scores = pd.read_csv(results / "eval" / folder / "scores.csv").set_index("utterance")
        return folder, kind, summary, scores, results / "eval" / folder / "decoded"

    runs = []
    coded = [neural_run(bps) for bps in bitrates] + [shipped_run(m) for m in shipped_models(config)]
    for neural_folder in coded:
        neural = run("neural", neural_folder)
        runs += [neural, run("opus", opus_matched_run(neural_folder))]
        if (results / "eval" / transform_matched_run(neural_folder) / "summary.json").exists():
            runs.append(run("transform", transform_matched_run(neural_folder)))
        codec2 = codec2_of.get(str(neural[2]["codec"]))  # below Opus's floor: Codec 2 beside them
        if codec2 and codec2 not in [r[0] for r in runs]:
            runs.append(run("codec2", codec2))

    rows = [_table_row(r) for r in table.to_dict("records")]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>speechcodec listening page: {html.escape(config['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>speechcodec listening page: {html.escape(config['name'])}</h1>",
        "<p>Test speakers were never used in training. Each clip was really encoded to a file and "
        "decoded; kbps are measured from the bytes written, PESQ-WB against the original.</p>",
        *([f"<p>{html.escape(SHIPPED_NOTE)}</p>"] if shipped_models(config) else []),
        '<h2 id="table">Results (the paper\'s Table 1, measured)</h2>',
        '<table id="table1"><caption>Mean over the test set</caption><thead><tr>',
        *(f'<th scope="col">{html.escape(h)}</th>' for h in TABLE_HEAD), "</tr></thead><tbody>", *rows,
        "</tbody></table>",
        '<img src="assets/rate_quality.png" alt="Rate-quality plot: PESQ-WB against real kbps for '
        'speechcodec, Opus and the textbook transform coder" style="max-width:100%">',
        '<h2 id="clips">Clips</h2>',
    ]
    for item in pick_utterances(test, int(config["listen"]["count"])):
        utt = str(item["utterance"])
        figures = [_clip(out, utt, "original", Path(item["path"]), "Original", "16 kHz reference")]
        for folder, kind, summary, scores, decoded in runs:
            if utt not in scores.index:
                continue
            s = scores.loc[utt]
            shipped = " (shipped)" if folder.startswith(SHIPPED_PREFIX) else ""
            label = {"neural": f"speechcodec {summary['codec']}{shipped}",
                     "opus": f"Opus, matched to {summary['matched_to']}",
                     "transform": f"Textbook transform coder (no network), matched to {summary['matched_to']}",
                     "codec2": f"Codec 2 {summary['target_bitrate_bps']} (8 kHz)"}[kind]
            detail = ", ".join([f"{s['kbps']:.2f} kbps"] + [f"{m.label} {score_text(s.get(m.name), m)}"
                                                             for m in VERSUS_OPUS])
            figures.append(_clip(out, utt, folder, decoded / f"{utt}.flac", label, detail))
        parts.append(f'<section class="utterance" aria-labelledby="h-{utt}"><h3 id="h-{utt}">'
                     f"{html.escape(utt)} (speaker {html.escape(str(item['speaker']))})</h3>"
                     f'<div class="clips">{"".join(figures)}</div></section>')
    parts.append("</body></html>")
    (out / "index.html").write_text("\n".join(parts) + "\n")
    return out / "index.html"
