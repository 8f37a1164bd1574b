#!/usr/bin/env python
"""Premises of streaming the perceptual family (issue 35), measured on held-out training speakers.

The held-out speakers are ``scripts/premise_perceptual.py``'s (``speechcodec.data.held_out_speakers``);
scores are on the first file of each, cut to 8 s.

    energies   bits a frame of the band energies: predicted from the frame before (the file
               stream's), leaky, or within the frame only (a packet's, so that a decoder
               recovers at the next good packet); the within-frame profile and Laplace scales
               fitted on the training speakers
    conceal    PESQ-WB and ViSQOL of each concealment at --loss (default 10 %), and the stream
               at no loss beside the file coder at the same rate; ``pitch[sign|mix]<BINS>R@DB`` (a
               premise, not in the library): a voiced lost frame continued by its last pitch
               period (sign: the repeated spectrum's magnitudes with the continuation's signs)
    inter      bits a frame of a packet's band energies, intra only or predicted from the frame
               before as well with an intra packet every N, for several predictors
    vbr        rate controls: CBR against VBR of several spreads and gains (mean and worst second
               against the rate asked, the largest packet, PESQ-WB, ViSQOL, files better)
    tables     issue 42: what the coefficients would cost if their Laplace scales did not follow
               the band levels (so that an inter packet could be decoded after a loss): bits a
               frame of the live packets' own symbols under scales from the levels (as coded),
               from levels one step off, from the profile plus one offset a frame, from the
               profile alone

    .venv/bin/python scripts/premise_stream.py energies
    .venv/bin/python scripts/premise_stream.py conceal --kbps 12 --loss 0.1 --workers 2
    .venv/bin/python scripts/premise_stream.py conceal --options repeat@3,repeat@1.5,repeat@6,repeat@0
    .venv/bin/python scripts/premise_stream.py conceal --lossy-only --options "repeat@6,pitch@6,pitchsign<80@6"
    .venv/bin/python scripts/premise_stream.py inter
    .venv/bin/python scripts/premise_stream.py vbr --rates 6,12,24 --options cbr,vbr@16/0.5,vbr@8/0.5
    .venv/bin/python scripts/premise_stream.py tables --rates 6,12

The numbers: docs/history.md ("issue 35, streaming").
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from premise_perceptual import MAX_S, SHARED, split_speakers  # noqa: E402


def _levels(path: Path) -> np.ndarray:
    import soundfile as sf

    from speechcodec.transform import bands
    from speechcodec.transform.mdct import odft

    x, rate = sf.read(path, dtype="float32")
    return bands.band_levels(odft(x[: int(MAX_S * rate)]), bands.LAYOUTS["bark16"], 1)


def _quantise(levels, a8, base, mean, c8=5, d8=2):
    """Closed-loop quantisation with a leaky time prediction (``a8 / 8`` of the last level's
    distance from ``base``, then ``mean`` per band when ``a8`` is 0) and the cross-band one."""
    from speechcodec.transform import bands

    s = 4
    floor = bands.floor_level(s)
    target = np.clip(levels / s, floor, bands.CEILING_QUARTER_OCTAVES // s)
    prev = [base] * levels.shape[1]
    res = np.zeros(levels.shape, np.int64)
    for t in range(len(levels)):
        below = below2 = 0
        row = []
        for b in range(levels.shape[1]):
            anchor = mean[b] if a8 == 0 else base + ((a8 * (prev[b] - base) + 4) >> 3)
            pred = anchor + ((c8 * below + d8 * below2 + 4) >> 3)
            v = bands.closed_loop_level(target[t, b], pred, floor)
            res[t, b] = v - pred
            row.append(v)
            below, below2 = v - anchor, below
        prev = row
    return res


def energies(args) -> None:
    from speechcodec.perceptual import packets
    from speechcodec.transform import bands
    from speechcodec.transform.laplace import TABLES

    train, held = split_speakers(args.speech)
    fit = np.concatenate([_levels(sorted(s.glob("*.flac"))[0]) for s in train[:: max(1, len(train) // 40)]])
    test = [_levels(sorted(s.glob("*.flac"))[0]) for s in held]
    frames = sum(len(t) for t in test)
    floor = bands.floor_level(4)
    mean = np.round(np.median(np.clip(fit / 4, floor, bands.CEILING_QUARTER_OCTAVES // 4), axis=0)).astype(int)
    print(f"fitted on {len(fit)} frames of {len(train[:: max(1, len(train) // 40)])} training speakers; "
          f"held-out: {len(held)} speakers, {frames} frames\n")
    print(f"profile {mean.tolist()}  (shipped: {packets.LEVEL_PROFILE.tolist()})\n")
    print("| prediction | bits a frame | kbps | recovers after a loss |")
    print("|---|---|---|---|")
    for name, a8, base, per_band in (("previous frame (the file stream), one scale a stream", 8, floor, False),
                                     ("leaky, 3/4 of the previous frame", 6, -8, False),
                                     ("leaky, 1/2 of the previous frame", 4, -8, False),
                                     ("within the frame, one scale", 0, 0, False),
                                     ("within the frame, fixed scale per band (packets)", 0, 0, True)):
        bits = 0.0
        c8, d8 = (6, 2) if a8 == 0 else (5, 2)
        scales = None
        if per_band:
            r = _quantise(fit, 0, 0, mean, c8, d8)
            scales = np.array([bands.residual_scale(r[:, b]) for b in range(r.shape[1])])
        for lv in test:
            r = _quantise(lv, a8, base, mean, c8, d8)
            index = np.broadcast_to(scales, r.shape) if per_band else np.full(r.shape, bands.residual_scale(r))
            bits += TABLES.bits(r, index)
        recovers = "at the next packet" if a8 == 0 else ("never (no leak)" if a8 == 8 else "the error decays")
        print(f"| {name} | {bits / frames:.1f} | {bits / frames * 0.05:.2f} | {recovers} |")
        if per_band:
            print(f"\nper-band scales {scales.tolist()}  (shipped: {packets.RESIDUAL_SCALES.tolist()})")


def _packet_residuals(levels: np.ndarray, interval: int) -> tuple[np.ndarray, np.ndarray]:
    """The residuals of a file's frames as packets code them (intra every ``interval``), and
    which frames are intra."""
    from speechcodec.perceptual import packets

    res, intra, previous = [], [], None
    for t, row in enumerate(levels):
        first = t % interval == 0
        q, r = packets.quantise_levels(row, None if first else previous)
        res.append(r)
        intra.append(first)
        previous = q
    return np.array(res), np.array(intra)


def inter(args) -> None:
    """Bits a frame of a packet's band energies: intra only, or inter (predicted from the frame
    before as well) with an intra packet every N, for several predictors; each predictor's
    per-band Laplace scales fitted on training speakers."""
    from speechcodec.perceptual import packets
    from speechcodec.transform import bands
    from speechcodec.transform.laplace import TABLES

    train, held = split_speakers(args.speech)
    fit = [_levels(sorted(s.glob("*.flac"))[0]) for s in train[:: max(1, len(train) // 40)]]
    test = [_levels(sorted(s.glob("*.flac"))[0]) for s in held]
    frames = sum(len(t) for t in test)
    print(f"fitted on {sum(map(len, fit))} frames of {len(fit)} training speakers; held-out: {len(held)} "
          f"speakers, {frames} frames\n")
    print("| inter prediction (eighths: previous frame / band below / the next below) | intra every "
          "| bits a frame | kbps | scales |")
    print("|---|---|---|---|---|")
    shipped = (packets.INTER_PREVIOUS8, packets.INTER_BELOW8, packets.INTER_BELOW2_8)
    for option in args.options.split(","):
        packets.INTER_PREVIOUS8, packets.INTER_BELOW8, packets.INTER_BELOW2_8 = map(int, option.split("/"))
        pooled = np.concatenate([_packet_residuals(lv, 10 ** 9)[0][1:] for lv in fit])
        scales = np.array([bands.residual_scale(pooled[:, b]) for b in range(pooled.shape[1])])
        for interval in (1, 4, 8, 16):
            bits = 0.0
            for lv in test:
                r, intra = _packet_residuals(lv, interval)
                bits += TABLES.bits(r[intra], np.broadcast_to(packets.RESIDUAL_SCALES, r[intra].shape))
                bits += TABLES.bits(r[~intra], np.broadcast_to(scales, r[~intra].shape))
            name = "none (intra only)" if interval == 1 else option
            print(f"| {name} | {interval} | {bits / frames:.1f} | {bits / frames * 0.05:.2f} | "
                  f"{scales.tolist() if interval > 1 else ''} |")
    packets.INTER_PREVIOUS8, packets.INTER_BELOW8, packets.INTER_BELOW2_8 = shipped


def _score(job):
    path, kbps, loss, seed, conceal = job
    import soundfile as sf
    import torch

    import speechcodec
    from speechcodec.metrics import pesq_wb, visqol
    from speechcodec.perceptual.stream import loopback

    torch.set_num_threads(1)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * 16000)]
    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    if conceal == "file":
        y, _ = codec.decode(codec.encode(x, 16000))
    elif conceal == "opus":
        from speechcodec.baselines.opus import OpusCodec
        from speechcodec.perceptual.stream import loss_pattern

        opus = OpusCodec(kbps * 1000)
        data = opus.encode(x, 16000)
        y, _ = opus.decode(data, loss_pattern(opus.packet_count(data), loss, seed))
    elif conceal.startswith("pitch"):  # pitch[sign|mix]<BINS>R@DB: see _pitch_loopback
        spec, _, decay = conceal.partition("@")
        mode = spec[len("pitch"):].split("<")[0].split(">")[0]
        bins, _, r = spec[len("pitch") + len(mode):].lstrip("<").partition(">")
        y = _pitch_loopback(codec, x, kbps * 1000, loss, seed, float(decay or 6.0), int(bins or 320),
                            float(r or 0.5), mode)
    else:  # "repeat" or "repeat@1.5": a concealment, and its fade in dB a frame
        name, _, decay = conceal.partition("@")
        y, _ = loopback(codec, x, kbps * 1000, loss, seed, name, float(decay or 3.0))
    return conceal, pesq_wb(x, y), visqol(x, y)


def _pitch_loopback(codec, x, bps: int, loss: float, seed: int, decay_db: float, bins: int, r_min: float,
                    mode: str = ""):
    """``loopback`` with a pitch concealment (a premise; not in the library): where the 40 ms
    played before a lost frame are voiced (normalised correlation at least ``r_min`` at the
    decoder's comb's pitch lag), the lost frame's first ``bins`` coefficients are the MDCT of
    that speech continued by its last pitch period (``decay_db`` quieter than what was played),
    the rest the last good spectrum again, faded as ``repeat`` fades it. ``mode`` "sign": the
    repeated spectrum's magnitudes with the continuation's signs; "mix": half of each."""
    from speechcodec.perceptual import comb
    from speechcodec.perceptual.stream import CONCEAL_SILENT_AFTER, loss_pattern
    from speechcodec.transform.mdct import HOP, odft_blocks

    played = np.zeros(comb.WINDOW + comb.MAX_LAG)

    def conceal(last, run):
        if last is None or run > CONCEAL_SILENT_AFTER:
            return np.zeros(HOP)
        out = last * 10 ** (-decay_db * run / 20)
        lag, r = comb.pitch(played)
        if r >= r_min:
            continued = np.tile(played[-lag:], -(-2 * HOP // lag))[:2 * HOP] * 10 ** (-decay_db / 20)
            pitch = odft_blocks(continued[None])[0].real[:bins]
            if mode == "sign":
                pitch = np.abs(out[:bins]) * np.sign(pitch)
            elif mode == "mix":
                pitch = 0.5 * (pitch + out[:bins])
            out[:bins] = pitch
        return out

    enc = codec.stream_encoder(bps)
    dec = codec.stream_decoder(bitrate_bps=bps)
    dec._concealer = conceal
    sent = enc.push(x) + enc.flush()
    heard = []
    for packet, gone in zip(sent, loss_pattern(len(sent), loss, seed), strict=True):
        heard.append(dec.pull(None if gone else packet))
        played = np.concatenate([played[HOP:], heard[-1]])
    return np.concatenate(heard)[HOP: HOP + len(x)]


def conceal(args) -> None:
    _, held = split_speakers(args.speech)
    files = [sorted(s.glob("*.flac"))[0] for s in held]
    options = args.options.split(",")
    jobs = [(str(f), args.kbps, args.loss, i, c) for c in options for i, f in enumerate(files)]
    lossless = () if args.lossy_only else ("file", "repeat")
    jobs += [(str(f), args.kbps, 0.0, i, c) for c in lossless for i, f in enumerate(files)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_score, jobs))
    n = len(files)
    rows = [(f"{c}, {args.loss:.0%} loss", results[k * n:(k + 1) * n]) for k, c in enumerate(options)]
    if lossless:
        rows += [("file coder, no loss", results[len(options) * n:(len(options) + 1) * n]),
                 ("stream, no loss", results[(len(options) + 1) * n:])]
    ref = rows[0][1]
    print(f"\n{n} held-out files, {MAX_S:g} s, {args.kbps} kbps; files better than '{rows[0][0]}' "
          "(PESQ-WB, ViSQOL)\n")
    print("| decoder | PESQ-WB | ViSQOL | files better |")
    print("|---|---|---|---|")
    for name, rs in rows:
        p, v = np.array([r[1] for r in rs]), np.array([r[2] for r in rs])
        better = (int((p > [r[1] for r in ref]).sum()), int((v > [r[2] for r in ref]).sum()))
        print(f"| {name} | {p.mean():.3f} | {v.mean():.3f} | {better[0]}, {better[1]} |")


def _vbr_job(job):
    path, kbps, variant = job
    import soundfile as sf
    import torch

    import speechcodec
    from speechcodec.metrics import pesq_wb, visqol
    from speechcodec.perceptual.stream import WINDOW_PACKETS, RateControl

    torch.set_num_threads(1)
    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float32")
    x = x[: int(MAX_S * 16000)]
    enc = codec.stream_encoder(kbps * 1000, cbr=variant == "cbr")
    if variant.startswith("vbr"):  # vbr@SPREAD/GAIN[/FLOOR[/WINDOW]]: see RateControl
        spread, gain, *more = variant[4:].split("/")
        enc.rate = RateControl(kbps * 1000, False, int(spread))
        enc.rate.gain = float(gain)
        if more:
            enc.rate.floor_ratio = float(more[0])
        if len(more) > 1:
            enc.rate.window_ratio = float(more[1])
    stream = enc.push(x) + enc.flush()
    sizes = np.array([len(p) for p in stream])
    y = codec.decode_packets(stream)[: len(x)]
    mean = kbps * 1000 * 0.02 / 8
    window = np.convolve(sizes, np.ones(WINDOW_PACKETS), "valid").max() / (WINDOW_PACKETS * mean)
    return sizes.mean() / mean, window, sizes.max(), pesq_wb(x, y), visqol(x, y)


def _save_rows(path, kbps, variants, files, got) -> None:
    """Per-file scores beside the table (``--csv``), appended: kbps, variant, file and the five."""
    import csv

    new = not Path(path).exists()
    with open(path, "a", newline="") as f:
        out = csv.writer(f)
        if new:
            out.writerow(["kbps", "variant", "file", "mean_ratio", "worst_second_ratio", "largest_bytes",
                          "pesq_wb", "visqol"])
        for k, name in enumerate(variants):
            for i, file in enumerate(files):
                out.writerow([kbps, name, Path(file).name, *[round(float(v), 4) for v in got[k, i]]])


def vbr(args) -> None:
    """Rate controls on held-out speakers: CBR (each packet within its 20 ms of bytes) against
    VBR with a spread (how far a packet's step may leave the CBR step) and a gain (how fast the
    step follows the bytes)."""
    _, held = split_speakers(args.speech)
    files = [str(sorted(s.glob("*.flac"))[0]) for s in held][: args.files]
    variants = args.options.split(",")
    for kbps in [int(k) for k in args.rates.split(",")]:
        jobs = [(f, kbps, v) for v in variants for f in files]
        with ProcessPoolExecutor(args.workers) as pool:
            got = np.array(list(pool.map(_vbr_job, jobs))).reshape(len(variants), len(files), 5)
        if args.csv:
            _save_rows(args.csv, kbps, variants, files, got)
        print(f"\n{len(files)} held-out files, {MAX_S:g} s, {kbps} kbps; files better than {variants[0]} "
              "(PESQ-WB, ViSQOL)\n")
        print("| rate control | mean / asked (worst file) | worst second / asked | largest packet | PESQ-WB | "
              "ViSQOL | files better |")
        print("|---|---|---|---|---|---|---|")
        for k, name in enumerate(variants):
            r = got[k]
            better = ((r[:, 3] > got[0][:, 3]).sum(), (r[:, 4] > got[0][:, 4]).sum())
            worst = r[np.argmax(np.abs(r[:, 0] - 1)), 0]
            print(f"| {name} | {r[:, 0].mean():.3f} ({worst:.3f}) | {r[:, 1].max():.3f} | "
                  f"{r[:, 2].max():.0f} | "
                  f"{r[:, 3].mean():.3f} | {r[:, 4].mean():.3f} | {better[0]}, {better[1]} |", flush=True)


def _table_bits(job):
    path, kbps = job
    import soundfile as sf

    import speechcodec
    from speechcodec.perceptual import packets
    from speechcodec.transform.laplace import TABLES

    codec = speechcodec.load("pc", threads=1, bitrate_bps=kbps * 1000)
    x, _ = sf.read(path, dtype="float32")
    totals = np.zeros(6)
    for packet in codec.encode_packets(x[: int(MAX_S * 16000)]):
        r = packets.read(packet)

        def bits(levels, r=r):
            return TABLES.bits(r.symbols, packets.coefficient_index(levels, r.step))

        offset = int(np.round(np.mean(r.levels - packets.LEVEL_PROFILE)))
        totals += [1, 8 * len(packet), bits(r.levels), (bits(r.levels + 1) + bits(r.levels - 1)) / 2,
                   bits(packets.LEVEL_PROFILE + offset), bits(packets.LEVEL_PROFILE)]
    return totals


def tables(args) -> None:
    """Bits a frame of the coefficients of live packets (every one intra) under Laplace scales
    that do not all follow the decoded band levels; the symbols as the packets carry them."""
    _, held = split_speakers(args.speech)
    files = [str(sorted(s.glob("*.flac"))[0]) for s in held]
    print(f"{len(files)} held-out files, {MAX_S:g} s; coefficient bits a frame if range coding were "
          "ideal\n")
    print("| kbps | packet | scales from the levels (as coded) | from levels one step off (either way) | "
          "from the profile plus one offset a frame (the offset not counted) | from the profile alone |")
    print("|---|---|---|---|---|---|")
    for kbps in [int(k) for k in args.rates.split(",")]:
        with ProcessPoolExecutor(args.workers) as pool:
            t = sum(pool.map(_table_bits, [(f, kbps) for f in files]))
        n = t[0]
        print(f"| {kbps} | {t[1] / n:.1f} | {t[2] / n:.1f} | {t[3] / n:.1f} (+{(t[3] - t[2]) / n:.1f}) | "
              f"{t[4] / n:.1f} (+{(t[4] - t[2]) / n:.1f}) | {t[5] / n:.1f} (+{(t[5] - t[2]) / n:.1f}) |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("energies", "inter", "conceal", "vbr", "tables"))
    parser.add_argument("--speech", type=Path, default=SHARED)
    parser.add_argument("--kbps", type=int, default=12)
    parser.add_argument("--rates", default="6,12,24", help="kbps, for vbr and tables")
    parser.add_argument("--files", type=int, default=None, help="vbr: the first N held-out files only")
    parser.add_argument("--csv", type=Path, help="vbr: append every file's scores to this CSV")
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lossy-only", action="store_true", help="no rows without loss")
    parser.add_argument("--options", default="shape,noise,repeat,silence,opus",
                        help="conceal: concealments to compare (NAME or NAME@DB: its fade a frame), and opus; "
                             "inter: predictors P/B/B2 (eighths); vbr: cbr and vbr@SPREAD/GAIN")
    args = parser.parse_args()
    if not args.speech.is_dir():
        sys.exit(f"no training speech at {args.speech}: pass --speech")
    {"energies": energies, "inter": inter, "conceal": conceal, "vbr": vbr, "tables": tables}[args.command](args)


if __name__ == "__main__":
    main()
