"""Encode and decode speed of each model on ONE CPU thread, range coding included.

Prints one row per model: real kbps and how many times faster than real time encoding and
decoding run (goal: >= 100x each) in process on one thread (what ``speechcodec.load`` and the
CLI use by default); the same with every core (torch's own default, which the one-thread
default was chosen against); and the whole process as a user runs it: ``speechcodec encode``
and ``decode`` of a 60 s file, start-up and model loading included. Then the textbook transform
coder (``speechcodec.baselines.TransformCodec``, numpy; goal: >= 200x each way on one thread) at
``--transform-rates``, its rate control included. Then live coding (``--stream-model``, at
``--stream-rates``): the time to encode one 20 ms frame into its packet and to decode the packet,
frame by frame in process on one thread (goal: encode plus decode under 2 ms), as median, 99th
percentile and worst over every frame. Audio: ../shared/data/speech when present, else synthetic.

    .venv/bin/python benchmarks/speed.py [--model NAME_OR_PATH ...] [--repeats 3] [--csv FILE]
    .venv/bin/python benchmarks/speed.py --model --transform-rates --stream-rates 6000 12000 24000
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import speechcodec
from speechcodec.audio import read_audio

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech" / "audio"


def test_audio(folder: Path = SPEECH) -> tuple[list[tuple[np.ndarray, int]], str]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if files:
        return [read_audio(f) for f in files], f"{len(files)} files of {folder}"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import synth_speech

    return [(synth_speech(10.0, seed=i), 16000) for i in range(6)], "60 s of synthetic speech"


def machine() -> str:
    """The CPU the speeds are measured on: its model name and the vector instructions torch uses."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def measure(codec, clips, repeats: int) -> dict:
    duration_s = sum(len(a) / sr for a, sr in clips)
    codec.encode(*clips[0])  # warm-up: first calls allocate
    enc_times, dec_times, total_bytes = [], [], 0
    for _ in range(repeats):
        streams, t0 = [], time.perf_counter()
        for audio, sr in clips:
            streams.append(codec.encode(audio, sr))
        enc_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for data in streams:
            codec.decode(data)
        dec_times.append(time.perf_counter() - t0)
        total_bytes = sum(len(s) for s in streams)
    return {
        "model": codec.name,
        "kbps": total_bytes * 8 / duration_s / 1000,
        "encode_x_realtime": duration_s / min(enc_times),
        "decode_x_realtime": duration_s / min(dec_times),
    }


def measure_cli(name: str, clips, seconds: float = 60.0) -> dict:
    """``speechcodec encode`` / ``decode`` of a ``seconds`` long file as separate processes,
    defaults as a user runs them: wall time, start-up and model loading included."""
    audio = np.concatenate([a for a, rate in clips if rate == 16000] or [clips[0][0]])
    audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))[: int(seconds * 16000)]
    cli = [str(Path(sys.executable).parent / "speechcodec")]
    with tempfile.TemporaryDirectory() as tmp:
        wav, stream, back = Path(tmp) / "in.wav", Path(tmp) / "in.spcd", Path(tmp) / "back.wav"
        sf.write(wav, audio, 16000, subtype="PCM_16")
        times = {}
        runs = (("encode", ["encode", wav, stream, "--model", name]),
                ("decode", ["decode", stream, back, "--model", name]))
        for what, args in runs:
            t0 = time.perf_counter()
            subprocess.run([*cli, *map(str, args), "-q"], check=True)
            times[what] = time.perf_counter() - t0
    return {f"cli_{what}_x_realtime": seconds / t for what, t in times.items()}


def measure_frames(codec, clips) -> dict:
    """Per-frame times of a stream encoder and decoder over every clip (resampled to 16 kHz):
    (median, 99th percentile, worst) in ms of encoding, decoding, and both."""
    import soxr

    enc_ms, dec_ms = [], []
    for i, (audio, sr) in enumerate(clips):
        x = soxr.resample(audio, sr, 16000).astype(np.float32) if sr != 16000 else audio
        enc, dec = codec.stream_encoder(), codec.stream_decoder()
        for start in range(0, len(x) - len(x) % 320, 320):
            t0 = time.perf_counter()
            made = enc.push(x[start:start + 320])
            t1 = time.perf_counter()
            for packet in made:
                dec.pull(packet)
            t2 = time.perf_counter()
            if i or start >= 3200:  # the first clip's first 10 frames warm up
                enc_ms.append((t1 - t0) * 1000)
                dec_ms.append((t2 - t1) * 1000)
    both = np.add(enc_ms, dec_ms)

    def spread(v):
        return float(np.median(v)), float(np.percentile(v, 99)), float(np.max(v))

    return {"codec": codec.name, "frames": len(both), "encode_ms": spread(enc_ms), "decode_ms": spread(dec_ms),
            "both_ms": spread(both)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("speech", nargs="?", type=Path, default=SPEECH,
                        help="folder of speech (default: ../shared/data/speech/audio; none there: "
                             "60 s of synthetic speech)")
    parser.add_argument("--model", nargs="*", help="models (default: all installed; none given: none)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N passes (default: 3)")
    parser.add_argument("--csv", help="also write the table as CSV (read by scripts/model_card.py)")
    parser.add_argument("--transform-rates", nargs="*", type=int, default=[6000, 12000, 24000],
                        help="bps of the textbook transform coder to time ([] for none)")
    parser.add_argument("--stream-model", default="pc", help="the model to time live coding with (default: pc)")
    parser.add_argument("--stream-rates", nargs="*", type=int, default=[6000, 12000, 24000],
                        help="bps to time live coding at, frame by frame ([] for none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    clips, what = test_audio(args.speech)
    # --model with no names: none (the textbook coder alone)
    names = args.model if args.model is not None else [m["name"] for m in speechcodec.list_models()]
    cpu = machine()
    cores = os.cpu_count() or 1
    print(f"one thread of {cpu}, {what}, best of {args.repeats}; then all {cores} cores in process; "
          f"then the CLI on a 60 s file (one process each way, defaults)")
    print(f"{'model':<24} {'real kbps':>9} {'encode x RT':>12} {'decode x RT':>12} "
          f"{f'{cores} thr enc':>12} {f'{cores} thr dec':>12} {'CLI enc':>8} {'CLI dec':>8}")
    rows = []
    for name in names:
        row = measure(speechcodec.load(name), clips, args.repeats) | {"machine": cpu}
        every = measure(speechcodec.load(name, threads=cores), clips, args.repeats)
        row |= {"all_cores_encode_x_realtime": every["encode_x_realtime"],
                "all_cores_decode_x_realtime": every["decode_x_realtime"]} | measure_cli(name, clips)
        rows.append(row)
        print(f"{row['model']:<24} {row['kbps']:>9.2f} {row['encode_x_realtime']:>12.0f} "
              f"{row['decode_x_realtime']:>12.0f} {row['all_cores_encode_x_realtime']:>12.0f} "
              f"{row['all_cores_decode_x_realtime']:>12.0f} {row['cli_encode_x_realtime']:>8.0f} "
              f"{row['cli_decode_x_realtime']:>8.0f}")
    if args.transform_rates:
        from speechcodec.baselines import TransformCodec

        print(f"\ntextbook transform coder (numpy, one thread of {cpu}), rate control included")
        print(f"{'codec':<24} {'real kbps':>9} {'encode x RT':>12} {'decode x RT':>12}")
        for bps in args.transform_rates:
            row = measure(TransformCodec(bps), clips, args.repeats)
            print(f"{row['model']:<24} {row['kbps']:>9.2f} {row['encode_x_realtime']:>12.0f} "
                  f"{row['decode_x_realtime']:>12.0f}")
    if args.stream_rates:
        print(f"\nlive coding, one 20 ms frame at a time (one thread of {cpu}; ms per frame over every "
              "frame of the audio; goal: encode + decode < 2 ms)")
        print(f"{'codec':<14} {'frames':>7} {'encode med':>10} {'p99':>6} {'decode med':>10} {'p99':>6} "
              f"{'enc+dec med':>11} {'p99':>6} {'worst':>6}")
        for bps in args.stream_rates:
            row = measure_frames(speechcodec.load(args.stream_model, bitrate_bps=bps), clips)
            print(f"{row['codec']:<14} {row['frames']:>7} {row['encode_ms'][0]:>10.3f} "
                  f"{row['encode_ms'][1]:>6.3f} {row['decode_ms'][0]:>10.3f} {row['decode_ms'][1]:>6.3f} "
                  f"{row['both_ms'][0]:>11.3f} "
                  f"{row['both_ms'][1]:>6.3f} {row['both_ms'][2]:>6.3f}")
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
