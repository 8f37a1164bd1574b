"""Write the model card (Markdown) of a model file from its metadata and measured benchmark rows.

    .venv/bin/python benchmarks/quality.py --model sc-3k --csv quality.csv
    .venv/bin/python benchmarks/speed.py --model sc-3k --csv speed.csv
    .venv/bin/python scripts/model_card.py src/speechcodec/pretrained/sc-3k.safetensors \
        --quality quality.csv --speed speed.csv [--config config/ship.yaml] [--note TEXT]

The card goes beside the model (same stem, ``.md``). Every number in it is read from the model
file or from the two CSVs; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from speechcodec.codecs import codec_record
from speechcodec.metrics import METRICS, PAPER_METRIC, SHOWN, VERSUS_OPUS, Metric, score_text
from speechcodec.model.family import family_of
from speechcodec.modelfile import load_model_file, nominal_bitrate_bps
from speechcodec.training import TrainConfig

ATTRIBUTION = """## Data attribution

- LibriSpeech ASR corpus (train-clean-100, test-other), (c) 2014 Vassil Panayotov, CC BY 4.0,
  https://www.openslr.org/12 - V. Panayotov, G. Chen, D. Povey, S. Khudanpur, "LibriSpeech: an
  ASR corpus based on public domain audio books", ICASSP 2015. Audio from LibriVox (public domain).
- LibriTTS, CC BY 4.0, https://www.openslr.org/60 - H. Zen et al., "LibriTTS: A Corpus Derived
  from LibriSpeech for Text-to-Speech", Interspeech 2019 (ground-truth clips of the DiffVoice
  demo page).

The exact files and their upstream sources are listed in `shared/data/train/SOURCES.tsv`
(582 files, 116.5 min, 230 speakers, 16 kHz).
"""


def nominal_rate_row(info: dict, tolerance: float, tc: dict) -> str:
    """The model's one nominal rate, the value `speechcodec models` shows (nominal_bitrate_bps)."""
    bps = nominal_bitrate_bps(info) or 0
    if tc.get("decoder_only") and info.get("history"):
        return (f"| nominal bitrate | {bps / 1000:g} kbps: the rate of the run it "
                "continues (its last run trained the decoder alone: every code and byte is that run's) |")
    return (f"| nominal bitrate | {bps / 1000:g} kbps: its last run steered the validation files' real rate "
            f"toward it, and only checkpoints within {tolerance:.0%} of it could be selected |")


def postfilter_row(info: dict) -> str:
    """The decoder postfilter the model file carries (its streams name the strengths)."""
    pf = info.get("postfilter") or {}
    strengths = pf.get("strengths")
    if not strengths:
        return "| postfilter | none in the file: its streams decode without one |"
    chosen = f", chosen on {pf['chosen_on']}" if pf.get("chosen_on") else ""
    better = pf.get("validation_files_better")
    files = f"{better[0]} of {better[1]} validation files better" if better else ""
    for metric, key in (("ViSQOL", "validation_visqol"), ("PESQ-WB", "validation_pesq_wb")):
        if pf.get(key):  # [without, with] on the validation files
            files = f"{metric} {pf[key][0]:.2f} -> {pf[key][1]:.2f}" + (", " if files else "") + files
    files = f" ({files})" if files else ""
    if not strengths.get("comb") and not strengths.get("formant"):
        return f"| postfilter | none{chosen}{files}: its streams decode without one |"
    return (f"| postfilter | comb {strengths.get('comb', 0):g}, formant {strengths.get('formant', 0):g}"
            f"{chosen}{files}; no bits: written into each stream, `--postfilter off` decodes without it |")


def _score(row: pd.Series, column: str, metric: Metric, sign: bool = False) -> str:
    """A score from a benchmark CSV; older CSVs lack ViSQOL, shown as "-"."""
    value = row.get(column)
    return score_text(None if value is None or pd.isna(value) else float(value), metric, sign)


def loss_terms(tc: dict) -> str:
    """The training loss of a run, from its train_config."""
    terms = f"5-resolution STFT + {tc.get('mse_weight')} x normalised MSE + lambda x kbps"
    if tc.get("adversarial_weight") or tc.get("feature_matching_weight"):
        terms += (f" + {tc.get('adversarial_weight')} x hinge loss against a multi-resolution STFT "
                  f"discriminator + {tc.get('feature_matching_weight')} x feature matching (from step "
                  f"{tc.get('adversarial_from_step', 0):,})")
    if tc.get("decoder_only"):
        terms += ", the decoder alone (encoder and tables kept: the same codes and bytes)"
    return terms


def family(cfg) -> str:
    return family_of(cfg).describe(cfg)


def entropy_model(cfg) -> str:
    if cfg.prior_contexts == 1:
        return f"per-channel mixture of {cfg.prior_components} logistics"
    return (f"mixture of {cfg.prior_components} logistics per channel and per context ({cfg.prior_contexts} "
            f"contexts from the previous code frame: the same channel's last magnitude and how many "
            f"channels were non-zero)")


def history_rows(history: list[dict], info: dict) -> list[str]:
    """Table rows for the runs a continued model was trained in, and their totals."""
    runs = [f"{i}. `{h['name']}` (`{h['fingerprint']}`): {h.get('steps') or 0:,} steps x batch "
            f"{h.get('batch_size')} on {h.get('device')}, {(h.get('train_seconds') or 0) / 3600:.2f} h, "
            f"{h.get('train_files')} files" for i, h in enumerate(history, 1)]
    steps = sum(h.get("steps") or 0 for h in history) + (info.get("steps") or 0)
    hours = (sum(h.get("train_seconds") or 0 for h in history) + (info.get("train_seconds") or 0)) / 3600
    return [f"| earlier runs it continues | {'<br>'.join(runs)} |",
            f"| all runs together | {steps:,} steps, {hours:.2f} h |"]


def training_runs(info: dict, config: str, base_config: str) -> list[dict]:
    """Every run behind a model, oldest first: config file, bitrate, steps and batch of each (a
    history row without a config file gets ``base_config`` if first, else ``config``)."""
    from speechcodec.config import moved_config

    def where(path):  # a config that only records history has moved to config/history/
        return str(moved_config(Path(path))) if path else path

    history = info.get("history", [])
    runs = [{"config_file": where(h.get("config_file") or (base_config if i == 0 else config)),
             "bitrate_bps": h.get("bitrate_bps") or info.get("bitrate_bps"), "steps": h.get("steps") or 0,
             "batch_size": h.get("batch_size")} for i, h in enumerate(history)]
    return runs + [{"config_file": where(info.get("config_file") or config),
                    "bitrate_bps": info.get("bitrate_bps"),
                    "steps": info.get("steps") or 0,
                    "batch_size": info.get("train_config", {}).get("batch_size")}]


def train_args(name: str, runs: list[dict], i: int, data: str, out_dir: str = "") -> list[str]:
    """The ``speechcodec train`` arguments of run ``i``, continuing run ``i - 1``'s output."""
    def out(k: int) -> str:
        return f"{out_dir}{name}.safetensors" if k == 0 else f"{out_dir}{name}-{k}.safetensors"

    run = runs[i]
    args = ["--config", run["config_file"], "--bitrate", str(run["bitrate_bps"]), "--data", data,
            "--val-files", "16", "--name", name]
    args += ["--init-from", out(i - 1)] if i else []
    args += ["--steps", str(run["steps"])]
    args += ["--batch-size", str(run["batch_size"])] if run["batch_size"] else []
    return args + ["--out", out(i)]


def retrain_commands(name: str, runs: list[dict]) -> list[str]:
    lines = []
    for i in range(len(runs)):
        args = train_args(name, runs, i, "../shared/data/train/audio")
        if len(runs) > 1:
            lines.append("# the first run" if i == 0 else f"# continued ({i} of {len(runs) - 1})")
        split = args.index("--val-files")
        lines += ["speechcodec train " + " ".join(args[:split]) + " \\", "  " + " ".join(args[split:])]
    return lines


def card(model_path: Path, quality: pd.Series, speed: pd.Series, config: str, note: str,
         base_config: str = "config/ship.yaml") -> str:
    mf = load_model_file(model_path)
    info, cfg = mf.info, mf.config
    tc = info.get("train_config", {})
    tolerance = tc.get("rate_tolerance", TrainConfig.rate_tolerance)  # runs before the setting: its default
    params = sum(t.numel() for t in mf.state_dict.values())
    hours = info.get("train_seconds", info.get("train_seconds_last_run", 0)) / 3600
    history = info.get("history", [])
    start = (f", continued from `{history[-1]['name']}` (`{history[-1]['fingerprint']}`)" if history
             else f", continued from `{tc['init_from']}`" if tc.get("init_from") else "")
    on_gpu = str(info.get("device", "")).startswith("cuda")
    amp = "bfloat16 autocast" if tc.get("amp") == "on" or (tc.get("amp") == "auto" and on_gpu) else "float32"
    opus = (", ".join(f"{m.label} {_score(quality, f'opus_{m.name}', m)}" for m in VERSUS_OPUS)
            + f" at {quality.opus_kbps:.2f} kbps"
            + (" (its lowest rate)" if isinstance(quality.note, str) and quality.note else ""))
    decay = (f"after {tc['lr_decay_from']:.0%} of the steps" if tc.get("lr_decay_from")
             else "from the first step")
    clip = (f"gradient norm clipped at {tc['grad_clip_norm']}" if tc.get("grad_clip_norm")
            else "no gradient clipping")
    more_bits = quality.kbps / quality.opus_kbps - 1
    machine = f" of {speed.machine}" if isinstance(speed.get("machine"), str) else ""  # older CSVs lack it
    # The paper's metric decides; every other metric compared with Opus must agree for a win.
    others_below = [m.label for m in VERSUS_OPUS if m.name != PAPER_METRIC
                    and not pd.isna(quality.get(f"delta_{m.name}")) and quality.get(f"delta_{m.name}") < 0]
    paper = next(m for m in METRICS if m.name == PAPER_METRIC)
    verdict = ("below Opus" if quality[f"delta_{PAPER_METRIC}"] < 0
               else "beats Opus in PESQ, but with more bits than Opus spent" if more_bits > 0.02
               else f"beats Opus on {paper.label} but not on {', '.join(others_below)}: not a clear win"
               if others_below else "matches or beats Opus")
    verdict += f"; {abs(more_bits):.1%} {'more' if more_bits > 0 else 'fewer'} bits than Opus"
    lines = [
        f"# Model card: {mf.name}",
        "",
        "| | |",
        "|---|---|",
        f"| name | `{mf.name}` (fingerprint `{mf.fingerprint}`) |",
        f"| family | {family(cfg)} |",
        f"| parameters | {params / 1e6:.2f} M ({model_path.stat().st_size / 1e6:.1f} MB file) |",
        f"| entropy model | {entropy_model(cfg)}, frozen to 16-bit integer "
        f"tables over -{cfg.max_symbol}..{cfg.max_symbol} |",
        nominal_rate_row(info, tolerance, tc),
        postfilter_row(info),
        f"| training | `{config}`: {info.get('steps', 0):,} steps{start}, batch {tc.get('batch_size')} x "
        f"{tc.get('crop_s')} s, Adam {tc.get('lr')} decaying linearly "
        f"{decay}, {clip}, {loss_terms(tc)}; seed {tc.get('seed')}; selected "
        f"checkpoint: step {info.get('selected_step'):,} (best on-target validation) |",
        f"| device and time | {info.get('device')}, {amp}, {hours:.2f} h, "
        f"{info.get('train_audio_s_per_s')} s of audio per second |",
        f"| training data | {info.get('train_files')} files, {info.get('train_audio_s', 0) / 60:.1f} min "
        f"(`shared/data/train`, see below) |",
    ]
    if history:
        lines += history_rows(history, info)
    lines += [""]
    if note:
        lines += [note, ""]
    lines += [
        "Measured on the 51 utterances of `shared/data/speech` (VCTK, ARCTIC, LJSpeech, LibriTTS",
        "speakers; none in training), every file really range-coded and decoded",
        f"(`benchmarks/quality.py`, `benchmarks/speed.py`; speed on one thread{machine}, "
        "range coding included):",
        "",
        "| real kbps | " + " | ".join(m.label for m in SHOWN) + " | Opus 1.3.1 at about that rate "
        "| encode / decode x real time |",
        "|---|" + "---|" * len(SHOWN) + "---|---|",
        f"| {quality.kbps:.2f} | " + " | ".join(_score(quality, m.name, m) for m in SHOWN)
        + f" | {opus} | {speed.encode_x_realtime:.0f} / {speed.decode_x_realtime:.0f} |",
        "",
        "**Against Opus**: " + ", ".join(f"{_score(quality, f'delta_{m.name}', m, sign=True)} {m.label}"
                                         for m in VERSUS_OPUS) + f" ({verdict}).",
        "",
        f"Retrain from the data: `scripts/retrain.py {mf.name}` runs these in order (resumable: rerun it, "
        "or the same command, after an interruption):",
        "",
        "```bash",
        *retrain_commands(mf.name, training_runs(info, config, base_config)),
        "```",
        "",
        f"Continue training it (on a GPU, for example) with `--init-from {mf.name}` (or the file's path) "
        "and more steps.",
        "",
        ATTRIBUTION,
    ]
    return "\n".join(lines)


def rows_of(table: pd.DataFrame, path: Path) -> list[tuple[str, int | None, pd.Series]]:
    """A model file's rows of a benchmark table: ``(name, nominal bps, row)``; one per rate for a
    model that codes every rate (``pc-6k``, ``pc-12k``, ...)."""
    model = load_model_file(path)
    if codec_record(model.config.arch).every_rate:
        named = [(f"{model.name}-{bps / 1000:g}k", int(bps)) for bps in model.info.get("bitrates_bps", [])]
    else:
        named = [(model.name, nominal_bitrate_bps(model.info))]
    return [(name, bps, table.loc[name]) for name, bps in named if name in table.index]


def _perceptual_round(train: dict) -> str:
    """One training round of a perceptual model, as its card says it."""
    start = f"from `{train['init_from']}`, " if train.get("init_from") else ""
    held = (f"held to step {train.get('decay_from', 0):,}, then cosine" if train.get("decay_from")
            else "cosine from the first step")
    return (f"{start}{train.get('steps', 0):,} steps, batch {train.get('batch')} x {train.get('crop_frames')} "
            f"frames, quantiser steps {train.get('step_low')} to {train.get('step_high')} (64ths of an "
            "octave), "
            f"Adam {train.get('lr')} {held} to {train.get('lr_end')}; MSE in the normalised domain (in "
            f"quantiser steps); {'bfloat16 autocast' if train.get('bf16') else 'float32'} on one CPU thread, "
            f"{train.get('seconds', 0) / 3600:.2f} h")


def _perceptual_command(name: str, train: dict, i: int, count: int) -> list[str]:
    """The ``speechcodec.perceptual.train`` command of round ``i`` (from 0) of ``count``."""
    out = f"{name}.round{i + 1}.safetensors" if i < count - 1 else f"{name}.safetensors"
    flags = f"--steps {train.get('steps')} --decay-from {train.get('decay_from')}"
    if i:
        flags += (f" --lr {train.get('lr')} --step-high {train.get('step_high')} "
                  f"--init-from {name}.round{i}.safetensors")
    return ["python -m speechcodec.perceptual.train --data ../shared/data/train/audio --hold-out \\",
            f"  --name {name} {flags} --out {out}"]


def perceptual_card(model_path: Path, quality: pd.DataFrame, speed: pd.DataFrame, note: str) -> str:
    """The card of a perceptual-family model: one row per rate it is listed at."""
    mf = load_model_file(model_path)
    train = mf.info.get("train", {})
    rounds = [*mf.info.get("earlier", []), train]  # the training rounds that made it, first first
    params = sum(t.numel() for t in mf.state_dict.values())
    rows = rows_of(quality, model_path)
    fast = next((speed.loc[name] for name, _, _ in rows if name in speed.index), None)
    lines = [
        f"# Model card: {mf.name}",
        "",
        "| | |",
        "|---|---|",
        f"| name | `{mf.name}` (fingerprint `{mf.fingerprint}`), listed as "
        + ", ".join(f"`{name}`" for name, _, _ in rows) + " |",
        f"| family | {family(mf.config)} |",
        f"| parameters | {params / 1e6:.2f} M ({model_path.stat().st_size / 1e6:.1f} MB file) |",
        "| entropy model | the textbook coder's Laplace tables, computed from integers (none learned): "
        "each coefficient's scale from its band's decoded energy and the step |",
        "| rates | any from 2 to 64 kbps (`speechcodec encode --model pc --bitrate 9k`), counted over its "
        "packets as Opus counts its own; each 20 ms packet's quantiser step is set by a causal, constrained "
        "VBR rate control (`--cbr`: constant); the enhancer was trained on the steps of "
        f"{3 if train.get('step_high', -22) >= 30 else 6} to 24 kbps |",
        "| algorithmic delay | 40 ms: a 20 ms frame and the other half of the MDCT's 40 ms window; the "
        "network looks at no later frame |",
        "| streaming | one packet format for calls and files: `speechcodec stream-encode` / `stream-decode` / "
        "`loopback`, or `stream_encoder()` in Python, a packet per 20 ms frame (no packet over 3 times the "
        "mean, no second over 5 % above the rate), the same 40 ms of delay, lost packets concealed; "
        "`speechcodec decode` of a file gives what a call plays (README, \"Live coding\") |",
        "| training | " + "; ".join(f"round {i}: {_perceptual_round(r)}" if len(rounds) > 1
                                     else _perceptual_round(r) for i, r in enumerate(rounds, 1)) + " |",
        f"| training data | {train.get('files')} files of `shared/data/train` (every tenth speaker held out "
        "for validation: `speechcodec.data.held_out_speakers`) |",
    ]
    recipes = [f"round {i}: {r['recipe']}" if len(rounds) > 1 else r["recipe"]
               for i, r in enumerate(rounds, 1) if r.get("recipe")]
    if recipes:  # how these weights were made, where it is not the commands below
        lines.append(f"| lineage | {'; '.join(recipes)} |")
    lines.append("")
    if note:
        lines += [note, ""]
    lines += [
        "Measured on the 51 utterances of `shared/data/speech` (VCTK, ARCTIC, LJSpeech, LibriTTS",
        "speakers; none in training), every file really coded and decoded (`benchmarks/quality.py`,",
        "`benchmarks/speed.py`; speed on one thread):",
        "",
        "| listed as | real kbps | " + " | ".join(m.label for m in SHOWN) + " | Opus kbps | "
        + " | ".join(f"Opus {m.label}" for m in VERSUS_OPUS) + " | files better than Opus | "
        + " | ".join(f"textbook {m.label}" for m in VERSUS_OPUS) + " | files better than the textbook |",
        "|---|---|" + "---|" * len(SHOWN) + "---|" + "---|" * len(VERSUS_OPUS) + "---|"
        + "---|" * len(VERSUS_OPUS) + "---|",
    ]
    for name, _, row in rows:
        lines.append(f"| `{name}` | {row.kbps:.2f} | " + " | ".join(_score(row, m.name, m) for m in SHOWN)
                     + f" | {row.opus_kbps:.2f} | "
                     + " | ".join(_score(row, f"opus_{m.name}", m) for m in VERSUS_OPUS)
                     + f" | {row.get('files_better_than_opus', '')} | "
                     + " | ".join(_score(row, f"transform_{m.name}", m) for m in VERSUS_OPUS)
                     + f" | {row.get('files_better_than_transform', '')} |")
    if fast is not None:
        lines += ["", f"Speed: encode {fast.encode_x_realtime:.0f}x, decode {fast.decode_x_realtime:.0f}x "
                  "real time "
                  "on one thread."]
    lines += [
        "",
        "Retrain from the data (resumable: rerun the same command after an interruption"
        + ("; each round starts from the one before" if len(rounds) > 1 else "") + "):",
        "",
        "```bash",
        *(line for i, r in enumerate(rounds) for line in _perceptual_command(mf.name, r, i, len(rounds))),
        "```",
        "",
        ATTRIBUTION,
    ]
    return "\n".join(lines)


def results_table(quality: pd.DataFrame, models: list[Path]) -> str:
    """The README's results table: one row per model file, from benchmarks/quality.py's CSV."""
    head = (["model", "nominal kbps", "real kbps (measured)"] + [m.label for m in SHOWN] + ["Opus kbps"]
            + [f"Opus {m.label}" for m in VERSUS_OPUS] + [f"delta {m.label}" for m in VERSUS_OPUS])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, bps, row in (r for path in models for r in rows_of(quality, path)):
        opus = f"{row.opus_kbps:.2f}" + (" (its floor)" if str(row.get("note", "")) == "Opus floor" else "")
        cells = ([name, f"{(bps or 0) / 1000:g}", f"{row.kbps:.2f}"]
                 + [_score(row, m.name, m) for m in SHOWN] + [opus]
                 + [_score(row, f"opus_{m.name}", m) for m in VERSUS_OPUS]
                 + [_score(row, f"delta_{m.name}", m, sign=True) for m in VERSUS_OPUS])
        lines.append("| " + " | ".join(cells) + " |")
    if "transform_kbps" in quality.columns:
        lines += ["", TEXTBOOK_INTRO, ""] + textbook_table(quality, models)
    return "\n".join(lines) + "\n"


TEXTBOOK_INTRO = ("Textbook baseline: what a transform coder without a network does at the same rate (MDCT, "
                  "band energies as side information, one quantiser step, noise shaped by the envelope; "
                  "`speechcodec eval --transform RATE`):")


def textbook_table(quality: pd.DataFrame, models: list[Path]) -> list[str]:
    """Each model beside the textbook transform coder at its real rate (benchmarks/quality.py)."""
    head = (["model", "real kbps"] + [m.label for m in VERSUS_OPUS] + ["textbook kbps"]
            + [f"textbook {m.label}" for m in VERSUS_OPUS] + [f"delta {m.label}" for m in VERSUS_OPUS]
            + ["files the model wins"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, _, row in (r for path in models for r in rows_of(quality, path)):
        cells = ([name, f"{row.kbps:.2f}"] + [_score(row, m.name, m) for m in VERSUS_OPUS]
                 + [f"{row.transform_kbps:.2f}"] + [_score(row, f"transform_{m.name}", m) for m in VERSUS_OPUS]
                 + [_score(row, f"delta_{m.name}_transform", m, sign=True) for m in VERSUS_OPUS]
                 + [str(row.get("files_better_than_transform", ""))])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="+",
                        help="the .safetensors model file (several with --results-table)")
    parser.add_argument("--quality", required=True, help="CSV from benchmarks/quality.py --csv")
    parser.add_argument("--speed", help="CSV from benchmarks/speed.py --csv (needed for a card)")
    parser.add_argument("--results-table", action="store_true",
                        help="print the README's results table of the models instead of writing a card")
    parser.add_argument("--config", default="config/ship.yaml", help="the config it was trained with")
    parser.add_argument("--note", default="", help="a paragraph to add under the table")
    parser.add_argument("--base-config", default="config/ship.yaml",
                        help="for a continued model: the config of the first run it continues")
    args = parser.parse_args()
    if args.results_table:
        print(results_table(pd.read_csv(args.quality).set_index("model"), args.model), end="")
        return 0
    if len(args.model) > 1 or not args.speed:
        parser.error("a card is written for one model, from --quality and --speed")
    args.model = args.model[0]
    mf = load_model_file(args.model)
    name = mf.name
    quality = pd.read_csv(args.quality).set_index("model")
    speed = pd.read_csv(args.speed).set_index("model")
    if codec_record(mf.config.arch).every_rate:
        if not rows_of(quality, args.model):
            sys.exit(f"{name}: no row in {args.quality}; run the benchmarks with --model {args.model}")
        out = args.model.with_suffix(".md")
        out.write_text(perceptual_card(args.model, quality, speed, args.note))
        print(f"{out}: written")
        return 0
    if name not in quality.index or name not in speed.index:
        sys.exit(f"{name}: no row in {args.quality} or {args.speed}; run the benchmarks with --model {name}")
    out = args.model.with_suffix(".md")
    out.write_text(card(args.model, quality.loc[name], speed.loc[name], args.config, args.note,
                              args.base_config))
    print(f"{out}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
