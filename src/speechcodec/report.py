"""The report: a table like the paper's Table 1 (CSV and Markdown) and a rate-quality plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from speechcodec.errors import SpeechCodecError, optional_import
from speechcodec.layout import SHIPPED_PREFIX
from speechcodec.metrics import BESIDE_BASELINES, SHOWN, VERSUS_CODEC2, VERSUS_OPUS, score_text

TABLE_COLUMNS = (["model", "target_kbps", "neural_kbps"] + [f"neural_{m.name}" for m in SHOWN]
                 + ["opus_kbps"] + [f"opus_{m.name}" for m in BESIDE_BASELINES]
                 + [f"delta_{m.name}" for m in VERSUS_OPUS] + ["note", "codec2", "codec2_kbps"]
                 + [f"codec2_{m.name}" for m in BESIDE_BASELINES]
                 + [f"delta_{m.name}_codec2" for m in VERSUS_CODEC2]
                 + ["transform_kbps"] + [f"transform_{m.name}" for m in BESIDE_BASELINES]
                 + [f"delta_{m.name}_transform" for m in VERSUS_OPUS]
                 + ["trained"])  # "here" (by the run reported) or "shipped" (installed with the package)


TRANSFORM_TITLE = ("Beside the textbook baseline: what a transform coder without a network (MDCT, band "
                   "energies, one quantiser step) does at the model's real rate:")
SHIPPED_NOTE = ("(shipped): a model installed with the package, trained on real read speech "
                "(LibriSpeech, LibriTTS); the others were trained by this run.")


def _load(dirs: list[str | os.PathLike]) -> tuple[list[dict], pd.DataFrame]:
    summaries, scores = [], []
    for d in dirs:
        d = Path(d)
        try:
            summary = json.loads((d / "summary.json").read_text())
            score = pd.read_csv(d / "scores.csv")
        except (OSError, ValueError):  # missing, or cut short by an interrupted eval
            missing = [n for n in ("summary.json", "scores.csv") if not (d / n).is_file()]
            what = f"has no {' or '.join(missing)}" if missing else "has unreadable results"
            raise SpeechCodecError(f"{d} is not a finished eval folder: it {what}; "
                                   f"run `speechcodec eval --out {d}` (again)") from None
        # A shipped model (eval folder shipped-NAME) was trained on real speech and installed with
        # the package; the others were trained by the run being reported.
        summary["trained"] = "shipped" if d.name.startswith(SHIPPED_PREFIX) else "here"
        summaries.append(summary)
        scores.append(score)
    return summaries, pd.concat(scores, ignore_index=True)


def codec2_match(neural_kbps: float, summaries: list[dict]) -> dict:
    """The Codec 2 run a model below Opus's floor is compared with: the lowest mode at or above
    its real rate, else the highest mode there is (Codec 2's ceiling, 3.2 kbps); ``{}`` when the
    model is not below Opus's floor or no Codec 2 mode was scored."""
    from speechcodec.baselines.opus import MIN_BITRATE_BPS

    runs = sorted((s for s in summaries if s["kind"] == "codec2"), key=lambda s: s["target_bitrate_bps"])
    if not runs or neural_kbps * 1000 >= MIN_BITRATE_BPS:
        return {}
    above = [s for s in runs if s["target_bitrate_bps"] >= neural_kbps * 1000]
    return above[0] if above else runs[-1]


def build_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per neural model, beside Opus run at that model's measured bitrate and, below
    Opus's floor, beside Codec 2 (:func:`codec2_match`)."""
    matched = {s["matched_to"]: s for s in summaries if s["kind"] == "opus" and s.get("matched_to")}
    textbook = {s["matched_to"]: s for s in summaries if s["kind"] == "transform" and s.get("matched_to")}
    rows = []
    neural = (s for s in summaries if s["kind"] == "neural")
    for s in sorted(neural, key=lambda s: (s.get("trained") == "shipped", s["kbps"])):
        o = matched.get(s["codec"], {})
        c = codec2_match(s["kbps"], summaries)
        t = textbook.get(s["codec"], {})
        target = s.get("target_bitrate_bps")
        row = {"model": s["codec"], "trained": s.get("trained", "here"),
               "target_kbps": target / 1000 if target else math.nan, "neural_kbps": s["kbps"],
               "opus_kbps": o.get("kbps", math.nan),
               "note": o.get("note", "") or ("" if o else "no matched Opus run"),
               "codec2": c.get("codec", ""), "codec2_kbps": c.get("kbps", math.nan),
               "transform_kbps": t.get("kbps", math.nan)}
        for m in SHOWN:  # a summary from before a metric existed lacks it: NaN, shown as "-"
            row[f"neural_{m.name}"] = s.get(m.name, math.nan)
        for m in BESIDE_BASELINES:
            row[f"opus_{m.name}"], row[f"codec2_{m.name}"] = o.get(m.name, math.nan), c.get(m.name, math.nan)
            row[f"transform_{m.name}"] = t.get(m.name, math.nan)
        for m in VERSUS_OPUS:
            row[f"delta_{m.name}"] = s.get(m.name, math.nan) - o.get(m.name, math.nan)
            row[f"delta_{m.name}_transform"] = s.get(m.name, math.nan) - t.get(m.name, math.nan)
        for m in VERSUS_CODEC2:
            row[f"delta_{m.name}_codec2"] = s.get(m.name, math.nan) - c.get(m.name, math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def model_label(row: dict) -> str:
    return f"{row['model']} (shipped)" if row.get("trained") == "shipped" else str(row["model"])


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def to_markdown(table: pd.DataFrame) -> str:
    head = (["model", "real kbps"] + [m.label for m in SHOWN] + ["Opus kbps"]
            + [f"Opus {m.label}" for m in BESIDE_BASELINES] + [f"delta {m.label}" for m in VERSUS_OPUS]
            + ["note"])
    lines = [_row(head), "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        lines.append(_row([model_label(r), f"{r['neural_kbps']:.2f}"]
                          + [score_text(r[f"neural_{m.name}"], m) for m in SHOWN] + [f"{r['opus_kbps']:.2f}"]
                          + [score_text(r[f"opus_{m.name}"], m) for m in BESIDE_BASELINES]
                          + [score_text(r[f"delta_{m.name}"], m, sign=True) for m in VERSUS_OPUS]
                          + [str(r["note"])]))
    if (table["trained"] == "shipped").any():
        lines += ["", SHIPPED_NOTE]
    below = [r for r in table.to_dict("records") if isinstance(r["codec2"], str) and r["codec2"]]
    if below:
        head = (["model", "real kbps"] + [m.label for m in BESIDE_BASELINES] + ["Codec 2", "Codec 2 kbps"]
                + [f"Codec 2 {m.label}" for m in BESIDE_BASELINES]
                + [f"delta {m.label}" for m in VERSUS_CODEC2])
        lines += ["", "Below Opus's floor, beside Codec 2 (narrowband: it codes 8 kHz audio) at the lowest "
                  "mode at or above the model's rate:", "", _row(head), "|" + "---|" * len(head)]
        for r in below:
            lines.append(_row([model_label(r), f"{r['neural_kbps']:.2f}"]
                              + [score_text(r[f"neural_{m.name}"], m) for m in BESIDE_BASELINES]
                              + [r["codec2"], f"{r['codec2_kbps']:.2f}"]
                              + [score_text(r[f"codec2_{m.name}"], m) for m in BESIDE_BASELINES]
                              + [score_text(r[f"delta_{m.name}_codec2"], m, sign=True) for m in VERSUS_CODEC2]))
    beside = [r for r in table.to_dict("records") if not math.isnan(r["transform_kbps"])]
    if beside:
        head = (["model", "real kbps"] + [m.label for m in BESIDE_BASELINES] + ["textbook kbps"]
                + [f"textbook {m.label}" for m in BESIDE_BASELINES] + [f"delta {m.label}" for m in VERSUS_OPUS])
        lines += ["", TRANSFORM_TITLE, "", _row(head), "|" + "---|" * len(head)]
        for r in beside:
            lines.append(_row([model_label(r), f"{r['neural_kbps']:.2f}"]
                              + [score_text(r[f"neural_{m.name}"], m) for m in BESIDE_BASELINES]
                              + [f"{r['transform_kbps']:.2f}"]
                              + [score_text(r[f"transform_{m.name}"], m) for m in BESIDE_BASELINES]
                              + [score_text(r[f"delta_{m.name}_transform"], m, sign=True)
                                 for m in VERSUS_OPUS]))
    return "\n".join(lines) + "\n"


def plot_rate_quality(summaries: list[dict], scores: pd.DataFrame, out_stem: Path) -> list[Path]:
    """PESQ-WB against real kbps: both codecs' means, with every utterance as a faint dot."""
    matplotlib = optional_import("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    def series(s: dict) -> str:  # the paper's network is its own row, not a point on our curve
        if s.get("arch") == "paper":
            return "paper"
        return "shipped" if s["kind"] == "neural" and s.get("trained") == "shipped" else s["kind"]

    here = "speechcodec, trained here" if any(series(s) == "shipped" for s in summaries) else "speechcodec"
    styles = {"neural": ("tab:blue", "o", here),
              "shipped": ("tab:purple", "v", "speechcodec, shipped (trained on real speech)"),
              "opus": ("tab:orange", "s", "Opus (libopus)"),
              "codec2": ("tab:red", "^", "Codec 2 (libcodec2, 8 kHz)"),
              "transform": ("tab:gray", "x", "textbook transform coder (no network)"),
              "paper": ("tab:green", "D", "the 2018 paper's network")}
    for kind, (color, marker, label) in styles.items():
        group = sorted((s for s in summaries if series(s) == kind), key=lambda s: s["kbps"])
        if not group:
            continue
        for s in group:
            per = scores[scores["codec"] == s["codec"]]
            ax.scatter(per["kbps"], per["pesq_wb"], s=6, color=color, alpha=0.15, linewidths=0)
        ax.errorbar([s["kbps"] for s in group], [s["pesq_wb"] for s in group],
                    yerr=[s["pesq_wb_std"] for s in group], color=color, marker=marker, capsize=3,
                    label=label,
                    linestyle={"opus": "-", "codec2": "-", "transform": "-.", "paper": ":"}.get(kind, "--"))
        if kind not in ("opus", "codec2", "transform"):
            for i, s in enumerate(group):  # alternate above/below so close points stay legible
                ax.annotate(s["codec"], (s["kbps"], s["pesq_wb"]), textcoords="offset points",
                            xytext=(4, 8 if i % 2 else -12), fontsize=7, color=color)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("real bitrate (kbps, log scale; bytes written x 8 / duration)")
    ax.set_ylabel("PESQ-WB (mean, bars: +-1 s.d.)")
    ax.set_title("Rate-quality on test speakers never seen in training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = out_stem.with_suffix(f".{ext}")
        fig.savefig(path)
        paths.append(path)
    plt.close(fig)
    return paths


def build_report(eval_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write ``table1.csv``, ``table1.md``, ``metrics.json``, ``rate_quality.{png,svg}``,
    ``curve.csv`` (every codec's mean point, for DVC plots)."""
    summaries, scores = _load(eval_dirs)  # before the output folder exists: a bad input leaves none
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(summaries)
    table.to_csv(out / "table1.csv", index=False)
    (out / "table1.md").write_text(to_markdown(table))
    curve = pd.DataFrame([{"codec": s["codec"], "kind": s["kind"], "kbps": s["kbps"],
                           **{m.name: s.get(m.name, math.nan) for m in SHOWN}}
                          for s in summaries]).sort_values(["kind", "kbps"])
    curve.to_csv(out / "curve.csv", index=False)
    def number(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 3)

    metrics = {r.model: {"trained": r.trained, "kbps": round(r.neural_kbps, 3),
                         "pesq_wb": round(r.neural_pesq_wb, 3),
                         "opus_pesq_wb": number(r.opus_pesq_wb), "delta_pesq_wb": number(r.delta_pesq_wb),
                         **({"codec2": r.codec2, "codec2_pesq_wb": number(r.codec2_pesq_wb),
                             "delta_pesq_wb_codec2": number(r.delta_pesq_wb_codec2)} if r.codec2 else {}),
                         **({"transform_kbps": number(r.transform_kbps),
                             "transform_pesq_wb": number(r.transform_pesq_wb),
                             "delta_pesq_wb_transform": number(r.delta_pesq_wb_transform)}
                            if not math.isnan(r.transform_kbps) else {})}
               for r in table.itertuples()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_rate_quality(summaries, scores, out / "rate_quality")
    return table
