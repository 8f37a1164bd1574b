"""Live coding over a lossy link: the perceptual model's stream against Opus, both concealing.

Every file of ../shared/data/speech (resampled to 16 kHz) goes through a stream encoder, a link
that loses each 20 ms packet at random with probability --losses (the same losses for both
codecs: one seed per file), and the decoder, which conceals what was lost: ours
(``speechcodec.perceptual.stream``) and libopus's own packet-loss concealment (a decode given no
packet; no in-band FEC), at the nominal rate whose real rate over the files is the one asked
(libopus falls short of its nominal rate). Prints, per rate and loss, PESQ-WB and ViSQOL of
each and how many files ours scores higher on; the real kbps of each from the bytes of its
packets (the codec's own: the framing a transport adds, ours or Ogg's and RTP's, is not counted
for either; ``speechcodec info`` gives ours).

    .venv/bin/python benchmarks/loss.py [--rates 6000 12000 24000] [--losses 0 0.05 0.1 0.2]
                                        [--workers 2] [--csv FILE] [--plot FILE]
    .venv/bin/python benchmarks/loss.py --from-csv FILE --plot FILE   # again, without measuring
    .venv/bin/python benchmarks/loss.py --others-from OLD.csv ...     # a new model beside the same Opus
    .venv/bin/python benchmarks/loss.py --intra-interval 8 --losses 0 ...  # the packets a file holds
"""

from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech" / "audio"


def _clip(path: str) -> np.ndarray:
    import soxr

    from speechcodec.audio import read_audio

    audio, rate = read_audio(path)
    return soxr.resample(audio, rate, 16000).astype(np.float32) if rate != 16000 else audio


def opus_rate_for(files: list[str], kbps: float, attempts: int = 4) -> int:
    """The nominal bps at which libopus's packets over ``files`` come to ``kbps`` (it falls short
    of its nominal rate on speech), by secant steps; the nearest tried."""
    from speechcodec.baselines.opus import OpusCodec

    clips = [_clip(f) for f in files]

    def real(bps: int) -> float:
        opus = OpusCodec(bps)
        data = [opus.encode(x, 16000) for x in clips]
        return (sum(opus.payload_bytes(d) for d in data) * 8
                / (sum(opus.packet_count(d) for d in data) * 0.02) / 1000)

    tried = {}
    bps = int(round(kbps * 1000))
    while len(tried) < attempts and bps not in tried:
        tried[bps] = real(bps)
        if abs(tried[bps] / kbps - 1) < 0.01:
            break
        bps = int(round(bps * kbps / tried[bps]))
    return min(tried, key=lambda b: abs(tried[b] - kbps))


def _job(job) -> dict:
    path, bps, loss, seed, which, intra = job
    import torch

    import speechcodec
    from speechcodec.baselines.opus import OpusCodec
    from speechcodec.metrics import pesq_wb, visqol
    from speechcodec.perceptual.stream import loopback, loss_pattern

    torch.set_num_threads(1)
    x = _clip(path)
    if which.startswith("opus:"):  # at the nominal rate whose real rate is ours
        opus = OpusCodec(int(which[5:]))
        data = opus.encode(x, 16000)
        lost = loss_pattern(opus.packet_count(data), loss, seed)
        y, _ = opus.decode(data, lost)
        kbps = opus.payload_bytes(data) * 8 / (opus.packet_count(data) * 0.02) / 1000
    elif which.startswith("textbook:"):  # the same packets through the textbook decoder (no network)
        from speechcodec.transform.mdct import HOP, imdct

        codec = speechcodec.load(which[9:], threads=1)
        stream = codec.encode_packets(x, bps, intra_interval=intra)
        c = codec.frames_of(stream).coefficients
        y = np.clip(imdct(c, HOP * (len(stream) - 1), HOP), -1, 1).astype(np.float32)[: len(x)]
        kbps = sum(map(len, stream)) * 8 / (len(stream) * 0.02) / 1000
    else:
        codec = speechcodec.load(which, threads=1)
        y, stats = loopback(codec.at(codec.bitrate_bps, intra_interval=intra), x, bps, loss, seed)
        kbps = stats["bitrate_bps"] / 1000
    return {"file": Path(path).name, "codec": which, "bitrate_bps": bps, "loss": loss, "kbps": kbps,
            "pesq_wb": pesq_wb(x, y), "visqol": visqol(x, y), "intra_interval": intra}


def _read_rows(path: str) -> list[dict]:
    """The rows of a --csv run, numbers as numbers."""
    with open(path, newline="") as f:
        return [r | {k: float(r[k]) for k in ("loss", "kbps", "pesq_wb", "visqol")}
                | {"bitrate_bps": int(r["bitrate_bps"])} for r in csv.DictReader(f)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("speech", nargs="?", type=Path, default=SPEECH, help="folder of speech")
    parser.add_argument("--model", default="pc", help="a perceptual-family model (default: pc)")
    parser.add_argument("--rates", nargs="+", type=int, default=[12000], help="bps (default: 12000)")
    parser.add_argument("--losses", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--intra-interval", type=int, default=1, metavar="PACKETS",
                        help="our encoder's intra packet every PACKETS (default: 1, every packet, as a stream "
                             "encoder's; a file's encoder sends one every 8)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--csv", help="also write every file's scores as CSV")
    parser.add_argument("--plot", help="also draw PESQ-WB and ViSQOL against loss (PNG)")
    parser.add_argument("--from-csv", metavar="FILE", help="no measuring: the table and plot of a --csv run")
    parser.add_argument("--others-from", metavar="FILE", nargs="+",
                        help="Opus's and the textbook decoder's scores from --csv runs of the same files, "
                             "rates and losses (neither depends on the model's network): only the model is "
                             "measured")
    args = parser.parse_args()
    if args.from_csv:  # a table and plot again from an earlier run's scores
        rows = _read_rows(args.from_csv)
        args.rates = sorted({r["bitrate_bps"] for r in rows})
        args.losses = sorted({r["loss"] for r in rows})
        files = sorted({r["file"] for r in rows})
    else:
        files = sorted(str(p) for p in args.speech.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
        if not files:
            sys.exit(f"no speech under {args.speech}")
        others = []
        if args.others_from:
            # Opus's, and the textbook decoder's of packets made as these are (older CSVs: every packet intra)
            others = [r for path in args.others_from for r in _read_rows(path)
                      if r["codec"] == "opus" or (r["codec"] == "textbook"
                                                  and int(r.get("intra_interval") or 1) == args.intra_interval)]
            wanted = {(Path(f).name, bps, loss) for f in files for bps in args.rates for loss in args.losses}
            if not wanted <= {(r["file"], r["bitrate_bps"], r["loss"]) for r in others if r["codec"] == "opus"}:
                sys.exit(f"{' '.join(args.others_from)}: Opus was not run on these files, rates and losses")
            others = [r for r in others if (r["file"], r["bitrate_bps"], r["loss"]) in wanted]
        opus_bps = {} if others else {bps: opus_rate_for(files, bps / 1000) for bps in args.rates}
        jobs = [(f, bps, loss, seed, which, args.intra_interval) for bps in args.rates for loss in args.losses
                for which in (args.model, *([f"opus:{opus_bps[bps]}"] if opus_bps else []))
                for seed, f in enumerate(files)]
        jobs += [(f, bps, 0.0, seed, f"textbook:{args.model}", args.intra_interval)
                 for bps in args.rates for seed, f in enumerate(files)
                 if not any(r["codec"] == "textbook" for r in others)]
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(_job, jobs, chunksize=4))
        for r in rows:  # the nominal rate Opus was asked for stays in the CSV
            if r["codec"].startswith("opus:"):
                r["codec"], r["opus_nominal_bps"] = "opus", int(r["codec"][5:])
            r["codec"] = r["codec"].split(":")[0]
        rows += others
    if args.csv and not args.from_csv:  # first: the scores outlive anything below
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
            writer.writeheader()
            writer.writerows(rows)
    where = "" if args.from_csv else f" of {args.speech}"
    print(f"{len(files)} files{where}; each packet lost with the probability given (the same "
          f"packets for both codecs); files better: how many {args.model} scores higher on\n")
    print(f"| kbps asked | loss | {args.model} kbps | {args.model} PESQ-WB | {args.model} ViSQOL | Opus kbps "
          "| Opus PESQ-WB | Opus ViSQOL | files better (PESQ-WB, ViSQOL) |")
    print("|---|---|---|---|---|---|---|---|---|")
    table = []
    for bps in args.rates:
        for loss in args.losses:
            here = [r for r in rows if r["bitrate_bps"] == bps and r["loss"] == loss]
            ours = [r for r in here if r["codec"] == args.model]
            opus = [r for r in here if r["codec"] == "opus"]
            line = {"bps": bps, "loss": loss}
            for name, rs in (("ours", ours), ("opus", opus)):
                line |= {f"{name}_{k}": float(np.mean([r[k] for r in rs]))
                         for k in ("kbps", "pesq_wb", "visqol")}
            better = [sum(a[k] > b[k] for a, b in zip(ours, opus, strict=True)) for k in ("pesq_wb", "visqol")]
            table.append(line)
            print(f"| {bps / 1000:g} | {loss:.0%} | {line['ours_kbps']:.2f} | {line['ours_pesq_wb']:.2f} | "
                  f"{line['ours_visqol']:.2f} | {line['opus_kbps']:.2f} | {line['opus_pesq_wb']:.2f} | "
                  f"{line['opus_visqol']:.2f} | {better[0]}, {better[1]} of {len(ours)} |")
    textbook = [r for r in rows if r["codec"] == "textbook"]
    if textbook:
        print(f"\nno loss: {args.model} against the textbook decoder on the same packets (no network); "
              f"files better: how many {args.model} scores higher on\n")
        print(f"| kbps | {args.model} PESQ-WB | {args.model} ViSQOL | textbook PESQ-WB | textbook ViSQOL "
              "| files better |")
        print("|---|---|---|---|---|---|")
        for bps in args.rates:
            ours = {r["file"]: r for r in rows if r["codec"] == args.model and r["bitrate_bps"] == bps
                    and r["loss"] == 0.0}
            theirs = {r["file"]: r for r in textbook if r["bitrate_bps"] == bps}
            pairs = [(ours[f], theirs[f]) for f in sorted(ours) if f in theirs]
            if not pairs:
                continue
            mean = {k: [float(np.mean([p[i][k] for p in pairs])) for i in (0, 1)]
                    for k in ("pesq_wb", "visqol")}
            better = [sum(a[k] > b[k] for a, b in pairs) for k in ("pesq_wb", "visqol")]
            print(f"| {bps / 1000:g} | {mean['pesq_wb'][0]:.2f} | {mean['visqol'][0]:.2f} | "
                  f"{mean['pesq_wb'][1]:.2f} | {mean['visqol'][1]:.2f} | "
                  f"{better[0]}, {better[1]} of {len(pairs)} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, metric, label in ((axes[0], "pesq_wb", "PESQ-WB"), (axes[1], "visqol", "ViSQOL")):
            for i, bps in enumerate(args.rates):  # one colour a rate: pc solid, Opus dashed
                lines = [t for t in table if t["bps"] == bps]
                loss = [100 * t["loss"] for t in lines]
                ax.plot(loss, [t[f"ours_{metric}"] for t in lines], "o-", color=f"C{i}",
                        label=f"{args.model} {bps / 1000:g} kbps")
                ax.plot(loss, [t[f"opus_{metric}"] for t in lines], "s--", color=f"C{i}", alpha=0.7,
                        label=f"Opus {bps / 1000:g} kbps")
            ax.set_xlabel("packets lost (%)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Live coding over a lossy link ({len(files)} files, 20 ms packets, "
                     "each codec concealing)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
