"""The ``speechcodec`` command: encode, decode, info, models (and the pipeline's verbs)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import signal
import sys
import warnings
from pathlib import Path

from speechcodec.codecs import capabilities
from speechcodec.errors import SpeechCodecError, missing_extra, require
from speechcodec.files import STDIO

EPILOG = """examples:
  speechcodec encode speech.wav speech.spcd              # default model (about 6 kbps)
  speechcodec encode speech.flac speech.spcd --bitrate 12k   # or 12000: bits per second
  speechcodec decode speech.spcd speech_decoded.wav      # back at the input's sample rate
  cat speech.wav | speechcodec encode - - | speechcodec decode - - | aplay   # pipes
  speechcodec info speech.spcd
  speechcodec models
  arecord -f S16_LE -r 16000 | speechcodec stream-encode | speechcodec stream-decode | aplay -f S16_LE -r 16000
  speechcodec loopback speech.wav heard.wav --loss 5%     # a live link that loses 5 % of packets
"""


MAX_BITRATE_KBPS = 512  # above any speech codec's rate: a smaller bare number was meant in kbps
_BITRATE = re.compile(r"(\d+(?:\.\d+)?)\s*(k|kbps|kb/s|kbit/s|bps|b/s)?", re.IGNORECASE)


def bitrate_bps(text: str, option: str = "--bitrate") -> int:
    """A bitrate as every command takes it: bits per second, or kilobits with a k (6000, 6k, 6kbps).
    A bare number no speech codec would run at (512 or less) is refused as a likely slip for kbps."""
    match = _BITRATE.fullmatch(str(text).strip())
    if not match:
        raise SpeechCodecError(f"{option} {text!r}: a bitrate in bits per second, or kbps with a k: 6000 or 6k")
    value, unit = float(match[1]), (match[2] or "").lower()
    value *= 1000 if unit.startswith("k") else 1
    if round(value) <= 0:
        raise SpeechCodecError(f"{option} must be positive, got {text}")
    if not unit and value <= MAX_BITRATE_KBPS:
        raise SpeechCodecError(f"{option} is in bits per second: got {text}; "
                               f"for {text} kbps write {option} {text}k")
    return int(round(value))


def _shown(path: str, dash: str = "stdout") -> str:
    return dash if path == STDIO else path


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU threads to code with (default: 1, the fastest per stream; 0: torch's "
                        "default, every core)")


def _threads(args: argparse.Namespace) -> int | None:
    """--threads N for coding: 1 by default (fastest per stream), 0 for torch's own (every core)."""
    if args.threads < 0:
        raise SpeechCodecError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    return args.threads or None


def _progress_wanted(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def cmd_encode(args: argparse.Namespace) -> int:
    import speechcodec
    from speechcodec.files import regular_input

    name = args.model or speechcodec.model_for_bitrate(bitrate_bps(args.bitrate or "6k"))
    codec = speechcodec.load(name, threads=_threads(args))
    if args.model and args.bitrate:
        if not capabilities(codec).every_rate:
            raise SpeechCodecError(f"model {codec.name!r} codes one rate ({codec.bitrate_bps} bps): drop "
                                   "--bitrate, or drop --model to pick the installed model nearest it")
        codec = codec.at(bitrate_bps(args.bitrate))
    if args.cbr:
        if not capabilities(codec).streams:
            raise SpeechCodecError(f"--cbr is the perceptual family's (model {codec.name!r} codes whole files)")
        codec = codec.at(codec.bitrate_bps, cbr=True)
    if args.intra_interval is not None:
        if not capabilities(codec).streams:
            raise SpeechCodecError(f"--intra-interval is the perceptual family's (model {codec.name!r} codes "
                                   "whole files)")
        codec = codec.at(codec.bitrate_bps, intra_interval=args.intra_interval)
    with regular_input(args.input) as src:
        stats = codec.encode_file(src, args.output, progress=_progress_wanted(args))
    if not args.quiet:
        what = "symbols" if stats.payload_bytes is None else "samples beyond full scale"
        clipped = f", {stats.clipped_symbols} {what} clipped" if stats.clipped_symbols else ""
        framing = "" if stats.payload_bytes is None else \
            f" of packets, {stats.num_bytes - stats.payload_bytes} bytes of framing"
        print(f"{_shown(args.output)}: {stats.duration_s:.2f} s with {codec.name} -> {stats.num_bytes} bytes, "
              f"{stats.payload_bitrate_bps / 1000:.2f} kbps{framing}{clipped}", file=sys.stderr)
    return 0


def _read_header(path: str):
    from speechcodec.bitstream.container import read_header

    p = Path(path)
    if p.is_dir():
        raise SpeechCodecError(f"input {p} is a directory, not a speechcodec stream: name one .spcd file")
    if not p.is_file():
        raise SpeechCodecError(f"input file {p} does not exist")
    with open(p, "rb") as f:
        return read_header(f)[0]


def cmd_decode(args: argparse.Namespace) -> int:
    from speechcodec.files import regular_input

    with regular_input(args.input) as src:
        if _magic(src) == b"SCPK":  # the perceptual family's packets (a file, or a saved stream)
            return _decode_packet_stream(args, src)
        header = _read_header(src)
        codec = _codec_named(args, header.model)
        codec.decode_file(src, args.output, sample_rate_hz=args.sample_rate,
                          progress=_progress_wanted(args), postfilter=_postfilter_spec(args.postfilter))
    if not args.quiet:
        rate = args.sample_rate or header.source_sample_rate_hz
        print(f"{_shown(args.output)}: {header.duration_s:.2f} s at {rate} Hz from {header.model}",
              file=sys.stderr)
    return 0


def _codec_named(args: argparse.Namespace, named: str):
    """The model a stream names (an installed model's name, never a path), unless --model (the
    local user's choice: a name or a model file)."""
    import speechcodec
    from speechcodec.registry import load_named

    if args.model:
        return speechcodec.load(args.model, threads=_threads(args))
    return load_named(named, threads=_threads(args))


def _magic(path: Path) -> bytes:
    """The first 4 bytes of a regular file (none of anything else)."""
    if not Path(path).is_file():
        return b""
    with open(path, "rb") as f:
        return f.read(4)


def _decode_packet_stream(args: argparse.Namespace, src: Path) -> int:
    """``speechcodec decode`` of packets (a perceptual ``.spcd`` file, or ``stream-encode > FILE``):
    every packet at once, the lost and damaged ones concealed as ``stream-decode`` conceals them,
    so the audio is what the far end of a call heard (without the decoder's 20 ms lag)."""
    from speechcodec.bitstream.pipe import read_header

    with open(src, "rb") as f:
        header = read_header(f)
    codec = _stream_codec(args, header.model, made=header)
    codec.decode_file(src, args.output, sample_rate_hz=args.sample_rate, progress=_progress_wanted(args))
    if not args.quiet:
        done = codec.last_decode
        rate = args.sample_rate or header.source_sample_rate_hz or 16000
        seconds = done["packets"] * 0.02
        print(f"{_shown(args.output)}: {seconds:.2f} s of {done['packets']} packets at {rate} Hz from "
              f"{header.model} (concealed: {done['lost']} lost, {done['damaged']} damaged, {done['skipped']} "
              "inter after those until an intra packet)", file=sys.stderr)
    return 0


def _postfilter_spec(text: str | None):
    """``--postfilter``: stream, model, off, or COMB,FORMANT strengths from 0 to 1."""
    if text is None or text in ("stream", "model", "off"):
        return text
    from speechcodec.postfilter import PostfilterSettings

    try:
        comb, formant = (float(v) for v in text.split(","))
        return PostfilterSettings(comb, formant)
    except ValueError as exc:
        detail = str(exc) if "strength" in str(exc) else f"got {text!r}"
        raise SpeechCodecError(f"--postfilter takes stream, model, off or COMB,FORMANT (two numbers "
                               f"from 0 to 1, e.g. 0.3,0.15): {detail}") from None


def cmd_info(args: argparse.Namespace) -> int:
    from speechcodec.bitstream.container import read_stream
    from speechcodec.files import regular_input
    from speechcodec.postfilter import PostfilterSettings

    with regular_input(args.input) as p:
        if not p.is_file():
            raise SpeechCodecError(f"input file {p} does not exist")
        size = p.stat().st_size
        with open(p, "rb") as f:
            if _magic(p) == b"SCPK":
                from speechcodec.perceptual.stream import packet_stream_facts

                facts = {"file": _shown(args.input, "stdin"), **packet_stream_facts(f, size)}
                return _print_facts(facts, args.json)
            header, chunks = read_stream(f)
            num_chunks = sum(1 for _ in chunks)  # reads every chunk: checks every CRC
    facts = {
        "file": _shown(args.input, "stdin"),
        "model": header.model,
        "fingerprint": header.fingerprint,
        "duration_s": round(header.duration_s, 3),
        "num_bytes": size,
        "bitrate_kbps": round(size * 8 / header.duration_s / 1000, 3),
        "num_chunks": num_chunks,
        "sample_rate_hz": header.sample_rate_hz,
        "source_sample_rate_hz": header.source_sample_rate_hz,
        "source_channels": header.source_channels,
        "code_frame_rate_hz": header.sample_rate_hz / header.samples_per_frame,
        "code_channels": header.code_channels,
        "postfilter": str(PostfilterSettings(header.postfilter_comb_pct / 100,
                                             header.postfilter_formant_pct / 100)),
        "integrity": "ok",
    }
    if header.bitrate_bps:  # a model that codes every rate: the rate it was asked for
        facts["bitrate_asked_kbps"] = header.bitrate_bps / 1000
    return _print_facts(facts, args.json)


def _print_facts(facts: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from speechcodec.registry import scan_models

    models, notes = scan_models()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("no models installed", file=sys.stderr)
        return 0
    print(f"{'name':<20} {'nominal kbps':>12} {'rate Hz':>8} {'arch':<10} description")
    groups: dict[str, list[dict]] = {}  # a model that codes every rate: one row, its listed names after
    for m in models:
        groups.setdefault(m["model"], []).append(m)
    for model, group in groups.items():
        first = group[0]
        kbps = ", ".join(f"{m['bitrate_bps'] / 1000:g}" if m["bitrate_bps"] else "-" for m in group)
        names = f" (as {', '.join(m['name'] for m in group)})" if len(group) > 1 else ""
        name = model if names else first["name"]
        print(f"{name:<20} {kbps:>12} {first['sample_rate_hz']:>8} {first['arch']:<10} "
              f"{first['description']}{names}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from speechcodec.training.checkpoint import resume_note, work_folder
    from speechcodec.training.launch import TrainRequest, plan, relaunch_with_torchrun

    args.if_stopped = lambda: resume_note(work_folder(args.out, args.work_dir))
    flags = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "device": args.device,
             "init_from": args.init_from, "decoder_only": args.decoder_only or None}
    request = TrainRequest(
        out=args.out, bitrate_bps=bitrate_bps(args.bitrate), config=args.config,
        model_config_json=args.model_config, name=args.name, description=args.description,
        train_manifest=args.train_manifest, val_manifest=args.val_manifest, data=args.data or [],
        val_files=args.val_files, changes={k: v for k, v in flags.items() if v is not None},
        nproc=args.nproc or 0, threads=args.threads or 0, work_dir=args.work_dir,
        metrics_dir=args.metrics_dir, restart_on_change=args.restart_on_change, quiet=args.quiet)
    training = plan(request)
    if training.needs_torchrun:
        return relaunch_with_torchrun(training.nproc, sys.argv[1:])
    path = training.run()
    if path:
        print(f"{path}: model {training.name!r} for {request.bitrate_bps} bps", file=sys.stderr)
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from speechcodec.data import download

    given = {k: v for k, v in (("timeout_s", args.timeout), ("retries", args.retries)) if v is not None}
    path = download(args.url, args.out, sha256=args.sha256, size_bytes=args.size_bytes,
                    progress=not args.quiet, **given)  # unset: the downloader's own defaults
    print(f"{path}: ready", file=sys.stderr)
    return 0


def cmd_data_demo(args: argparse.Namespace) -> int:
    from speechcodec.data.demo import build_demo_corpus

    path = build_demo_corpus(args.out)
    print(f"{path}: demo corpus in the VCTK 0.92 layout", file=sys.stderr)
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from speechcodec.config import load_config
    from speechcodec.data.prepare import fetch_corpus

    out = fetch_corpus(load_config(args.config), args.out, progress=not args.quiet)
    print(f"{out}: corpus ready", file=sys.stderr)
    return 0


def cmd_data_clean(args: argparse.Namespace) -> int:
    from speechcodec.data import extract_vctk, scan_folder, scan_vctk
    from speechcodec.data.clean import CleanConfig, clean_corpus

    src = Path(args.input)
    if not src.exists():
        raise SpeechCodecError(f"input {src} does not exist")
    if args.config:
        from speechcodec.config import load_config
        from speechcodec.data.prepare import clean_config, corpus_items

        items, kind = corpus_items(src)
        cfg = clean_config(load_config(args.config), kind)
    else:
        if args.source == "vctk":
            if src.is_file():
                src = extract_vctk(src, args.extract_dir or src.with_suffix(""), progress=not args.quiet)
            items = scan_vctk(src)
        else:
            items = scan_folder(src)
        cfg = CleanConfig(sample_rate_hz=args.sample_rate, min_duration_s=args.min_duration,
                          silence_dbfs=args.silence_dbfs,
                          require_transcript=args.source == "vctk" and not args.allow_no_transcript)
    kept, dropped = clean_corpus(items, args.out, cfg, workers=args.workers, progress=not args.quiet)
    print(f"{args.out}: kept {len(kept)} items of {kept['speaker'].nunique()} speakers, "
          f"dropped {len(dropped)} ({dropped['reason'].value_counts().to_dict()})", file=sys.stderr)
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from speechcodec.data import split_speakers

    seed, test_speakers, val_fraction, ratio = args.seed, args.test_speakers, args.val_fraction, (14, 80)
    if args.config:
        from speechcodec.config import load_config

        split = load_config(args.config)["data"]["split"]
        seed, test_speakers = int(split["seed"]), split["test_speakers"]
        val_fraction, ratio = float(split["val_fraction"]), tuple(split["ratio_test_train"])
    summary = split_speakers(args.manifest, args.out, ratio=ratio, seed=seed,
                             test_speakers=test_speakers or None, val_fraction=val_fraction)
    counts = ", ".join(f"{k}: {len(summary[k]['speakers'])} speakers / {summary[k]['items']} items"
                       for k in ("train", "val", "test"))
    print(f"{args.out}: {counts}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from speechcodec.evaluate import evaluate, evaluate_opus_matched, evaluate_transform_matched

    require("pesq", "pystoi", "visqol", *(["opuslib"] if args.opus or args.opus_match else []))
    for option in ("opus", "codec2", "transform", "target_bitrate"):
        if getattr(args, option) is not None:
            setattr(args, option, bitrate_bps(getattr(args, option), "--" + option.replace("_", "-")))
    spec, target = args.model, args.target_bitrate
    options = {"workers": args.workers or None, "keep_audio": args.keep_audio, "progress": not args.quiet}
    if args.opus_match:
        neural = json.loads(Path(args.opus_match).read_text())
        summary = evaluate_opus_matched(neural, args.test_manifest, args.out, **options)
    elif args.transform_match:
        neural = json.loads(Path(args.transform_match).read_text())
        summary = evaluate_transform_matched(neural, args.test_manifest, args.out, **options)
    else:
        if args.opus:
            spec, target = f"opus:{args.opus}", args.opus
        elif args.codec2:
            spec, target = f"codec2:{args.codec2}", args.codec2
        elif args.transform:
            spec, target = f"transform:{args.transform}", args.transform
        if not spec:
            raise SpeechCodecError("name a codec: --model NAME_OR_PATH, --opus BPS, --opus-match SUMMARY, "
                                   "--codec2 MODE, --transform BPS or --transform-match SUMMARY")
        summary = evaluate(spec, args.test_manifest, args.out, target_bitrate_bps=target, **options)
    from speechcodec.metrics import SHOWN

    scores = ", ".join(f"{m.label} {summary[m.name]:.3f}" for m in SHOWN)
    print(f"{summary['codec']}: {summary['kbps']:.2f} kbps, {scores} on {summary['items']} utterances",
          file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from speechcodec.report import build_report, to_markdown

    require("matplotlib")
    evals = list(args.evals)
    if args.config:
        from speechcodec.config import eval_dirs, load_config

        if len(evals) != 1:
            raise SpeechCodecError("with --config, give the one folder that holds the eval runs")
        evals = [str(p) for p in eval_dirs(load_config(args.config), evals[0])]
    table = build_report(evals, args.out)
    print(to_markdown(table))
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from speechcodec.config import load_config
    from speechcodec.listen import build_listening_page

    require("matplotlib")
    page = build_listening_page(load_config(args.config), args.results, args.out)
    print(f"{page}: open it in a browser", file=sys.stderr)
    return 0


def _stream_codec(args: argparse.Namespace, name: str, bitrate: int | None = None, made=None):
    """A perceptual model ready to stream, or a one-line error saying which model streams;
    ``made``: the header of a packet stream it must decode (the weights that made it; the model
    it names is looked up by name only, unless --model)."""
    import speechcodec

    codec = _codec_named(args, name) if made is not None else speechcodec.load(name, threads=_threads(args))
    if not capabilities(codec).streams:
        raise SpeechCodecError(f"model {codec.name!r} codes whole files (it looks ahead); streaming takes a "
                               "perceptual-family model: --model pc")
    if made is not None and codec.fingerprint != made.fingerprint:
        raise SpeechCodecError(f"the packets were made by other weights than model {made.model!r} here "
                               f"(fingerprint {made.fingerprint}, installed {codec.fingerprint})")
    if not bitrate:
        return codec
    return codec.at(bitrate, getattr(args, "cbr", False), getattr(args, "intra_interval", None))


def cmd_stream_encode(args: argparse.Namespace) -> int:
    from speechcodec.perceptual.stream import encode_pipe

    rate = bitrate_bps(args.bitrate)
    codec = _stream_codec(args, args.model, rate)
    out, src = sys.stdout.buffer, sys.stdin.buffer
    if src.isatty():
        raise SpeechCodecError("stream-encode reads raw 16-bit PCM at 16 kHz from stdin: pipe it in, e.g. "
                               "'arecord -f S16_LE -r 16000 | speechcodec stream-encode'")
    if out.isatty():
        raise SpeechCodecError("stream-encode writes binary packets: pipe it into 'speechcodec stream-decode' "
                               "or a file, not the terminal")
    enc, stats = encode_pipe(codec, src, out)
    if stats["odd_byte"]:
        print("speechcodec: warning: input ended mid-sample; its last byte was dropped", file=sys.stderr)
    if not args.quiet:
        seconds = enc.samples_in / 16000
        kbps = stats["payload_bytes"] * 8 / max(enc.packets * 0.02, 1e-9) / 1000
        print(f"stream-encode: {seconds:.2f} s -> {enc.packets} packets at {codec.name} "
              f"({'cbr' if enc.cbr else 'vbr'}): {kbps:.2f} kbps of packets, "
              f"{stats['framing_bytes']} bytes of framing", file=sys.stderr)
    return 0


def cmd_stream_decode(args: argparse.Namespace) -> int:
    from speechcodec.bitstream.pipe import read_header
    from speechcodec.perceptual.stream import decode_pipe

    src, out = sys.stdin.buffer, sys.stdout.buffer
    if out.isatty():
        raise SpeechCodecError("stream-decode writes raw 16-bit PCM: pipe it into 'aplay -f S16_LE -r 16000' "
                               "or a file, not the terminal")
    header = read_header(src)
    codec = _stream_codec(args, header.model, made=header)
    dec, sequencer = decode_pipe(codec, src, out, header.bitrate_bps)
    if not args.quiet:
        print(f"stream-decode: {dec.frames} frames ({dec.frames * 0.02:.2f} s) from {header.model}, "
              f"{sequencer.lost} lost, {dec.damaged} damaged, {sequencer.damaged_pages} damaged pages, "
              f"{sequencer.late} late", file=sys.stderr)
    return 0


def cmd_loopback(args: argparse.Namespace) -> int:
    import soundfile as sf
    import soxr

    from speechcodec.audio import read_audio
    from speechcodec.files import AtomicWriter, check_not_input, regular_input
    from speechcodec.perceptual.stream import loopback

    loss = _percent(args.loss)
    rate = bitrate_bps(args.bitrate)
    codec = _stream_codec(args, args.model, rate)
    check_not_input(args.input, args.output)
    with regular_input(args.input) as src:
        audio, sr = read_audio(src)  # float32 mono, every sample checked
    x = soxr.resample(audio, sr, 16000).astype("float32") if sr != 16000 else audio
    y, stats = loopback(codec, x, rate, loss, args.seed, cbr=args.cbr)
    if sr != 16000:
        y = soxr.resample(y, 16000, sr)
    with AtomicWriter(args.output) as tmp:
        sf.write(tmp, y, sr, subtype="PCM_16", format="WAV")
    if not args.quiet:
        print(f"{args.output}: {len(x) / 16000:.2f} s through {codec.name}: {stats['packets']} packets, "
              f"{stats['lost']} lost ({loss:.0%} asked), {stats['bitrate_bps'] / 1000:.2f} kbps, "
              f"largest packet {stats['max_packet_bytes']} bytes", file=sys.stderr)
    return 0


def _percent(text: str) -> float:
    """``--loss``: 5%, 5 % or 0.05."""
    t = str(text).strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise SpeechCodecError(f"--loss takes a share of packets lost: 5% or 0.05, got {text!r}") from None
    if not 0 <= value < 1:
        raise SpeechCodecError(f"--loss must lie from 0% up to (not including) 100%, got {text!r}")
    return value


def _add_cbr(p) -> None:
    p.add_argument("--cbr", action="store_true",
                   help="perceptual family: constant bitrate, every packet within its 20 ms of bytes (default: "
                        "variable, as Opus: no packet over 3 times the mean, no second over 5 %% above the "
                        "rate)")


def _add_intra_interval(p, default: int) -> None:
    """``default``: packets.STREAM_INTRA_INTERVAL or FILE_INTRA_INTERVAL (not imported here: the
    CLI starts without numpy; a test holds them equal)."""
    p.add_argument("--intra-interval", type=int, metavar="PACKETS",
                   help="perceptual family: an intra packet every PACKETS packets, the rest coding their "
                        "band energies from the packet before (about 0.5 kbps less, which buys a finer step); "
                        "after a lost or damaged packet the decoder conceals the rest up to the next intra "
                        f"packet. 1: every packet intra, for links that lose packets (default: {default})")


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="download, clean and split training corpora",
                          description="The pipeline's data stages, each usable on its own.")
    verbs = data.add_subparsers(dest="data_command", metavar="STEP", required=True)

    p = verbs.add_parser("download", help="resumable, checksum-verified download (e.g. VCTK 0.92)",
                         description="Download a file with HTTP range resume; an interrupted "
                                     "transfer continues on rerun; a bad checksum removes the download.")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True, help="file to write (e.g. resources/VCTK-Corpus-0.92.zip)")
    p.add_argument("--sha256", help="expected SHA-256 (hex)")
    p.add_argument("--size-bytes", type=int, help="expected size in bytes")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="give up on a silent server after S seconds per attempt (default: 20)")
    p.add_argument("--retries", type=int, help="resumed attempts after the first (default: 3)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_data_download, if_stopped="rerun the same command to resume the download")

    p = verbs.add_parser("fetch", help="get the corpus named in a config (demo, vctk or folder)",
                         description="Download/synthesise and safely extract the corpus the config "
                                     "names; an existing VCTK zip or folder (data.vctk.local_path) "
                                     "is used in place.")
    p.add_argument("--config", required=True, metavar="YAML")
    p.add_argument("--out", required=True, help="folder for the extracted corpus")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_data_fetch, if_stopped="rerun the same command to resume")

    p = verbs.add_parser("demo", help="synthesise the built-in demo corpus (eSpeak NG, VCTK layout)")
    p.add_argument("--out", required=True, help="zip to write")
    p.set_defaults(func=cmd_data_demo)

    p = verbs.add_parser("clean", help="keep usable items, resample once, report what was dropped",
                         description="Clean a VCTK zip or folder (0.92 or 0.80 layout) or any "
                                     "folder of audio (speaker = sub-folder).")
    p.add_argument("--config", metavar="YAML",
                   help="take the source kind and cleaning settings from a pipeline config; "
                        "--input is then a folder written by 'data fetch'")
    p.add_argument("--source", choices=["vctk", "folder"], default="vctk")
    p.add_argument("--input", required=True, help="VCTK zip or folder, or a folder of audio")
    p.add_argument("--out", required=True, help="folder for audio/, manifest.csv, report.csv")
    p.add_argument("--extract-dir", help="where a VCTK zip is extracted (default: beside it)")
    p.add_argument("--sample-rate", type=int, default=16000, help="Hz (default: 16000)")
    p.add_argument("--min-duration", type=float, default=0.5, help="seconds (default: 0.5)")
    p.add_argument("--silence-dbfs", type=float, default=-60.0,
                   help="items whose loudest 20 ms is below this are silence (default: -60)")
    p.add_argument("--allow-no-transcript", action="store_true",
                   help="keep VCTK items without transcripts")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_data_clean)

    p = verbs.add_parser("split", help="speaker-disjoint test:train = 14:80 split, plus validation")
    p.add_argument("--manifest", required=True, help="manifest.csv from 'data clean'")
    p.add_argument("--out", required=True, help="folder for train.csv, val.csv, test.csv")
    p.add_argument("--config", metavar="YAML", help="take seed, ratio, test speakers from data.split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-speakers", nargs="*", help="name the test speakers instead")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.set_defaults(func=cmd_data_split)


def _add_encode_parser(sub) -> None:
    p = sub.add_parser("encode", help="audio file (wav/flac/ogg, any rate, any channels) -> stream",
                       description="Encode an audio file. It is mixed to mono and resampled to the "
                                   "model's rate; the stream remembers the original rate.")
    p.add_argument("input", help="audio file readable by libsndfile (wav, flac, ogg, ...); - for stdin")
    p.add_argument("output", help="stream file to write (written atomically); - for stdout")
    p.add_argument("--bitrate", metavar="BPS",
                   help="bits per second, or kbps with a k: 6000 or 6k (default: 6k). Alone it picks the "
                        "installed model nearest it; with --model it sets the rate of a model that codes "
                        "every rate (the perceptual family's)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="installed model name or model file")
    _add_cbr(p)
    _add_intra_interval(p, 8)
    _add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_encode, if_stopped="nothing was written")


def _add_decode_parser(sub) -> None:
    p = sub.add_parser("decode", help="stream -> WAV (or FLAC, Ogg, MP3 by extension)",
                       description="Decode a stream with the model named in its header.")
    p.add_argument("input", help="stream file written by 'speechcodec encode'; - for stdin")
    p.add_argument("output", help="audio file to write, mono, format by extension: .wav or .flac (16-bit), "
                                     ".ogg (Vorbis), .mp3; - for stdout (WAV)")
    p.add_argument("--sample-rate", type=int, metavar="HZ",
                   help="output sample rate (default: the rate of the encoded input)")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="model to decode with, when it is not installed under its name")
    p.add_argument("--postfilter", metavar="SPEC",
                   help="pitch comb and formant emphasis on the decoded speech: 'stream' (default: the "
                        "strengths the encoder wrote, off in streams of format 1), 'model' (the model's "
                        "chosen strengths), 'off', or COMB,FORMANT from 0 to 1, e.g. 0.3,0.15")
    _add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_decode, if_stopped="nothing was written")


def _add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="show a stream's model, duration, real bitrate, chunks",
                       description="Print what a stream holds and check every chunk's CRC32; of a packet "
                                   "stream ('speechcodec stream-encode > FILE'): its packets, losses, "
                                   "real bitrate and algorithmic delay.")
    p.add_argument("input", help="stream file; - for stdin")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)


def _add_stream_encode_parser(sub) -> None:
    p = sub.add_parser("stream-encode", help="live: raw 16 kHz PCM on stdin -> packets on stdout, 20 ms each",
                       description="Read raw 16-bit little-endian mono PCM at 16 kHz from stdin (as\n"
                                   "'arecord -f S16_LE -r 16000' writes it) and write a packet to stdout for\n"
                                   "each 20 ms frame as it completes, framed with its length, sequence\n"
                                   "number and CRC32 (docs/format.md): 40 ms of\n"
                                   "algorithmic delay. Pipe it into 'speechcodec stream-decode', or save it\n"
                                   "and read it with 'speechcodec info' and 'speechcodec decode'.",
                       epilog="example:\n  arecord -f S16_LE -r 16000 | speechcodec stream-encode "
                              "--bitrate 12k | speechcodec stream-decode | aplay -f S16_LE -r 16000",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bitrate", metavar="BPS", default="12k",
                   help="bits per second, or kbps with a k: 6k to 64k (default: 12k), counted over the "
                        "packets (the framing apart, as Opus's rate is)")
    p.add_argument("--model", metavar="NAME_OR_PATH", default="pc",
                   help="a perceptual-family model (default: pc)")
    _add_cbr(p)
    _add_intra_interval(p, 1)
    _add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_stream_encode, if_stopped="the packets written so far stand")


def _add_stream_decode_parser(sub) -> None:
    p = sub.add_parser("stream-decode", help="live: packets on stdin -> raw 16 kHz PCM on stdout",
                       description="Read what 'speechcodec stream-encode' writes and write raw 16-bit\n"
                                   "little-endian mono PCM at 16 kHz, 320 samples per packet as it arrives.\n"
                                   "A lost packet (length 0, or missing from the sequence numbers) or a\n"
                                   "damaged one is concealed, as 'speechcodec decode' conceals it.",
                       epilog="example:\n  speechcodec stream-encode < speech.raw | speechcodec stream-decode "
                              "| aplay -f S16_LE -r 16000",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="model to decode with, when it is not installed under the name the stream gives")
    _add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_stream_decode, if_stopped="the audio written so far stands")


def _add_loopback_parser(sub) -> None:
    p = sub.add_parser("loopback", help="a file through the live coder and a lossy link, back to a file",
                       description="Code an audio file 20 ms at a time as a live link would, lose "
                                   "packets at random (--loss), conceal them, and write what the far "
                                   "end hears, aligned with the input.")
    p.add_argument("input", help="audio file (any rate and channels; mixed to mono)")
    p.add_argument("output", help="WAV file to write, at the input's rate")
    p.add_argument("--loss", default="0%", metavar="PERCENT",
                   help="share of packets lost at random, e.g. 5%% or 0.05 (default: 0%%)")
    p.add_argument("--seed", type=int, default=0, help="which random losses (default: 0)")
    p.add_argument("--bitrate", metavar="BPS", default="12k", help="6k to 64k (default: 12k)")
    p.add_argument("--model", metavar="NAME_OR_PATH", default="pc",
                   help="a perceptual-family model (default: pc)")
    _add_cbr(p)
    _add_intra_interval(p, 1)
    _add_threads(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(func=cmd_loopback, if_stopped="nothing was written")


def _add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list installed models",
                       description="List shipped models and those in $SPEECHCODEC_MODEL_PATH.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a codec on a test manifest (real files, PESQ, ViSQOL, STOI)",
                       description="Encode every test utterance into a real file, decode it and "
                                   "score it against the 16 kHz reference: PESQ-WB, PESQ-NB, ViSQOL, "
                                   "STOI, SNR; real kbps from the bytes written. The codec is a "
                                   "speechcodec model, Opus, Codec 2 or the textbook transform coder.")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="a speechcodec model")
    p.add_argument("--opus", metavar="BPS", help="libopus at this target bitrate (6000 or 6k)")
    p.add_argument("--opus-match", metavar="SUMMARY_JSON",
                   help="libopus at the measured bitrate of a neural run (its summary.json): its "
                        "nominal rate is corrected until its real rate matches (3 runs at most)")
    p.add_argument("--codec2", metavar="MODE",
                   help="Codec 2 (libcodec2, narrowband) in this mode: 1200, 1300, 1400, 1600, 2400 or "
                        "3200 bps; the baseline below Opus's floor")
    p.add_argument("--transform", metavar="BPS",
                   help="the textbook transform coder (MDCT, band energies, one step, no network) at "
                        "this target bitrate: what a coder without a network does at the same rate")
    p.add_argument("--transform-match", metavar="SUMMARY_JSON",
                   help="the textbook transform coder at the measured bitrate of a neural run (its "
                        "summary.json)")
    p.add_argument("--target-bitrate", metavar="BPS", help="recorded as the target")
    p.add_argument("--test-manifest", required=True, help="test.csv from 'data split'")
    p.add_argument("--out", required=True, help="folder for scores.csv, summary.json, streams/")
    p.add_argument("--keep-audio", action="store_true", help="also write decoded/*.flac")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)


def _add_report_parser(sub) -> None:
    p = sub.add_parser("report", help="Table 1 (CSV, Markdown) and the rate-quality plot",
                       description="Combine eval folders into the paper-style table and plot.")
    p.add_argument("evals", nargs="+",
                   help="folders written by 'speechcodec eval' (with --config: their parent folder)")
    p.add_argument("--config", metavar="YAML",
                   help="report exactly the runs this config asks for (bitrates, Opus grid)")
    p.add_argument("--out", required=True, help="folder for table1.*, rate_quality.*, metrics.json")
    p.set_defaults(func=cmd_report)


def _add_listen_parser(sub) -> None:
    p = sub.add_parser("listen", help="static HTML page to hear original, neural and Opus side by side",
                       description="Build the listening page from a pipeline run's eval outputs.")
    p.add_argument("--config", required=True, metavar="YAML")
    p.add_argument("--results", required=True, help="the run's results folder (results/NAME)")
    p.add_argument("--out", required=True, help="folder for index.html and assets/")
    p.set_defaults(func=cmd_listen)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model for one target bitrate",
                       description="Train a codec model for one target bitrate: on the pipeline's "
                                   "train manifest with settings from config.yaml, or on any "
                                   "folder of speech. Rerunning the same command resumes from the "
                                   "last checkpoint in --work-dir. Uses CUDA when present. With "
                                   "'arch: perceptual' (config/perceptual.yaml) it trains the pc "
                                   "family's enhancer, one model for every rate: the pipeline's "
                                   "bitrates share one run beside their work folders, and each gets "
                                   "a copy.")
    p.add_argument("--config", metavar="YAML", help="pipeline config (model, train, overrides)")
    p.add_argument("--bitrate", required=True, metavar="BPS",
                   help="target bitrate in bits per second, or kbps with a k: 6000 or 6k")
    p.add_argument("--out", required=True, metavar="PATH", help="model file to write (.safetensors)")
    p.add_argument("--train-manifest", metavar="CSV", help="train.csv from 'data split'")
    p.add_argument("--val-manifest", metavar="CSV",
                   help="val.csv: really range-coded at each checkpoint to steer the real bitrate")
    p.add_argument("--data", nargs="+", metavar="DIR_OR_FILE",
                   help="instead of a manifest: audio files or folders searched recursively")
    p.add_argument("--val-files", type=int, default=0, metavar="N",
                   help="without --val-manifest: validate on N files spread over the training audio")
    p.add_argument("--name", help="model name written into streams (default: from config or OUT)")
    p.add_argument("--description", help="one line shown by 'speechcodec models'")
    p.add_argument("--model-config", metavar="JSON",
                   help='without --config: model settings, e.g. \'{"width": 64, "code_channels": 16}\'')
    p.add_argument("--steps", type=int, help="optimizer steps (overrides the config)")
    p.add_argument("--batch-size", type=int, help="crops per step (overrides the config)")
    p.add_argument("--seed", type=int)
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from this model's weights (an installed name such as sc-3k, or a "
                        ".safetensors file with the same model config), so runs add up over time")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init-from: train only the decoder; the encoder and entropy tables, hence "
                        "the codes and bytes of every input, stay the starting model's")
    p.add_argument("--device", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--nproc", type=int, default=0,
                   help="processes for DistributedDataParallel via torchrun (default: train.gpus)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (default: torch's)")
    p.add_argument("--work-dir", help="checkpoints and metrics (default: OUT with .work)")
    p.add_argument("--metrics-dir", help="metrics.csv and val_metrics.csv (default: the work dir)")
    p.add_argument("--restart-on-change", action="store_true",
                   help="start afresh when the checkpoint has other settings (default: refuse)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechcodec",
        description="Speech codec: encode speech into a small, safe, self-describing file and "
                    "back, or live, 20 ms at a time. pc (6 kbps and up, any rate): a transform coder "
                    "with a neural enhancer at its decoder; sc-3k: a learned autoencoder. Every page "
                    "of packets, or chunk, is checked with CRC32.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    parser.add_argument("--log", metavar="FILE",
                        help="write messages to FILE instead of the terminal (folders are created)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_encode_parser(sub)
    _add_decode_parser(sub)
    _add_info_parser(sub)
    _add_stream_encode_parser(sub)
    _add_stream_decode_parser(sub)
    _add_loopback_parser(sub)
    _add_models_parser(sub)
    _add_data_parser(sub)
    _add_eval_parser(sub)
    _add_report_parser(sub)
    _add_listen_parser(sub)
    _add_train_parser(sub)
    return parser


def _if_stopped(args: argparse.Namespace) -> str | None:
    """What is left when the command stops early, and how to go on (set per command)."""
    note = getattr(args, "if_stopped", None)
    return note() if callable(note) else note


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's cancel) unwinds like Ctrl-C: partial outputs are removed."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _end_progress_bars() -> None:
    """Close the progress bars a stop left open, so what follows starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"speechcodec: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(args.log, "w", buffering=1)  # noqa: SIM115 - lives as long as the process
    warnings.showwarning = _one_line_warning
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    # Started by a shell without job control (a script's `cmd &`), SIGINT arrives ignored and
    # Python never installs its handler: a Ctrl-C (kill -INT) must still stop us cleanly.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.func(args)
    except SpeechCodecError as exc:
        print(f"speechcodec: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # an optional package (the eval or pipeline extra) is absent
        error = missing_extra(exc)
        if error is None:
            raise
        print(f"speechcodec: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's flush quiet
        return 0
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            note = _if_stopped(args) or "nothing was written"
            print(f"speechcodec: error: no space left on device; {note}", file=sys.stderr)
        else:
            where = f" {exc.filename}" if exc.filename else ""
            print(f"speechcodec: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: say what is left, not a traceback
        _end_progress_bars()
        note = _if_stopped(args)
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"speechcodec: {what}{'; ' + note if note else ''}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
