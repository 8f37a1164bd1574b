"""A hostile sender's fuzzer: mutated files and packet streams whose CRCs are recomputed.

Every case must end in one of two ways: the project's own error (a :class:`SpeechCodecError`
with a one-line message), or audio that is finite, within full scale, and no longer than the
input's bytes allow (:data:`MAX_SAMPLES_PER_INPUT_BYTE`). Anything else (another exception,
NaN, a sample above 1, a bomb) is a failure. Run under an address-space limit, so that a bomb
fails the run rather than the machine::

    .venv/bin/python tests/hostile.py [--cases-per-class N] [--seed S] [--limit-gb 3]

Prints a table of outcomes per mutation class; exits 1 on any failure. ``tests/test_hostile.py``
runs it in CI.
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# What the formats promise (docs/format.md): at most this many output samples, at any output rate
# up to 96 kHz, per byte of input (the packet framing: 51 concealed packets of 320 samples at
# 16 kHz for a 10-byte page, times 6 for 96 kHz; the container: 4096 at the model's rate, times 6)
MAX_SAMPLES_PER_INPUT_BYTE = 6 * 4096


def _limit(gb: float) -> None:
    size = int(gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


def _check(result, input_bytes: int) -> str:
    """'error', 'audio', or what went wrong."""
    from speechcodec.errors import SpeechCodecError

    kind, value = result
    if kind == "raised":
        if isinstance(value, SpeechCodecError) and "\n" not in str(value) and str(value):
            return "error"
        return f"FAIL {type(value).__name__}: {str(value)[:120]}"
    audio = np.asarray(value)
    if not np.isfinite(audio).all():
        return "FAIL non-finite audio"
    if audio.size and np.abs(audio).max() > 1.0:
        return f"FAIL peak {np.abs(audio).max():.3f}"
    if audio.size > MAX_SAMPLES_PER_INPUT_BYTE * max(input_bytes, 1):
        return f"FAIL {audio.size} samples from {input_bytes} bytes"
    return "audio"


def _run(fn, *args):
    try:
        return "ok", fn(*args)
    except MemoryError as exc:
        return "raised", exc
    except Exception as exc:  # noqa: BLE001 - the point is to see every kind
        return "raised", exc


def _page(seq: int, count: int, lacing: bytes, body: bytes) -> bytes:
    """A page with any head, its CRC made right (as a sender who recomputes it would)."""
    from speechcodec.bitstream.pipe import SYNC

    head = SYNC + struct.pack("<HB", seq & 0xFFFF, count & 0xFF) + lacing
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def _header_with_crc(raw_head: bytes) -> bytes:
    """A packet-stream header (all but its CRC) with its CRC made right."""
    return raw_head + struct.pack("<I", zlib.crc32(raw_head))


def _extreme(rng: random.Random) -> bytes:
    return rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
                       bytes(rng.randrange(256) for _ in range(4))])


def packet_file_cases(codec, rng: random.Random, n: int):
    """(class, bytes) of mutated packet files (format 2), every CRC recomputed."""
    from speechcodec.bitstream import pipe

    x = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 0.1, 16000).astype(np.float32)
    data = codec.encode(x, 16000)
    src = io.BytesIO(data)
    header = pipe.read_header(src)
    head_len = src.tell()
    stream = codec.packets_of(data)

    def rebuild(packets, first=0):
        return b"".join(pipe.page_bytes(first + i, packets[i:i + 50]) for i in range(0, len(packets), 50))

    for _ in range(n):  # packet bytes: flips, cuts, growth, random packets
        packets = list(stream)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(packets))
            p = bytearray(packets[i])
            how = rng.randrange(4)
            if how == 0:
                p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
            elif how == 1:
                p = p[: rng.randrange(1, len(p) + 1)]
            elif how == 2:
                p += bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
            else:
                p = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 1275)))
            packets[i] = bytes(p[:1275])  # the most the framing carries
        yield "packet file: packets", data[:head_len] + rebuild(packets)
    for _ in range(n):  # page heads: sequence numbers, counts, lacing, with the CRC made right
        pages = [(i, stream[i:i + 50]) for i in range(0, len(stream), 50)]
        out = []
        for first, packets in pages:
            lacing = b"".join(b"\xff" * (len(p) // 255) + bytes((len(p) % 255,)) for p in packets)
            body = b"".join(packets)
            seq, count = first, len(packets)
            how = rng.randrange(5)
            if how == 0:
                seq = rng.choice([0, 1, 127, 128, 255, 256, 32767, 32768, 65535, rng.randrange(65536)])
            elif how == 1:
                count = rng.choice([0, 1, 255, rng.randrange(256)])
            elif how == 2:
                lacing = bytes(rng.randrange(256) for _ in range(len(lacing)))
            elif how == 3:
                lacing = b"\xff" * rng.randint(1, 20) + lacing
            out.append(_page(seq, count, lacing, body))
        yield "packet file: page heads", data[:head_len] + b"".join(out)
    raw = data[:head_len - 4]
    for _ in range(n):  # header fields set to extremes, the header CRC made right
        h = bytearray(raw)
        at = rng.randrange(4, len(h) - 1)
        piece = _extreme(rng)[: rng.randint(1, 4)]
        h[at:at + len(piece)] = piece
        if rng.random() < 0.3:  # a model name that is a path
            name = rng.choice([b"../../etc/passwd", b"/etc/passwd", b"..", b"pc/../pc", b"x" * 64, b"p\x00c"])
            at_name = struct.calcsize("<4sBBI8sIBI")  # the header's fields before the name's length
            h = h[:at_name] + bytes((len(name),)) + name
        yield "packet file: header fields", _header_with_crc(bytes(h[: len(h)])) + data[head_len:]
    del header


def container_cases(rng: random.Random, n: int):
    """(class, bytes) of mutated files of the container (format 3), every CRC recomputed."""
    from speechcodec.bitstream.container import _CRC, _PREFIX, _RECORD

    data = (HERE / "data" / "pc-format3.spcd").read_bytes()
    (header_len,) = struct.unpack_from("<H", data, 5)
    head_end = _PREFIX.size + header_len
    for _ in range(n):  # header fields set to extremes
        d = bytearray(data)
        at = rng.randrange(_PREFIX.size, head_end - 1)
        piece = _extreme(rng)[: rng.randint(1, 4)]
        d[at:at + len(piece)] = piece
        d[head_end:head_end + 4] = _CRC.pack(zlib.crc32(bytes(d[:head_end])))
        yield "container: header fields", bytes(d)
    chunk_at = head_end + _CRC.size
    frames, size = _RECORD.unpack_from(data, chunk_at)
    payload = data[chunk_at + _RECORD.size: chunk_at + _RECORD.size + size]
    rest = data[chunk_at + _RECORD.size + size + _CRC.size:]
    for _ in range(n):  # a chunk's frame count and payload, its CRC made right
        f, p = frames, bytearray(payload)
        how = rng.randrange(3)
        if how == 0:
            f = rng.choice([1, frames - 1, frames + 1, 500, 10 ** 6, 2 ** 32 - 1, rng.randrange(2 ** 32)])
        elif how == 1:
            for _ in range(rng.randint(1, 8)):
                p[rng.randrange(len(p))] = rng.randrange(256)
        else:
            p = bytearray(rng.randrange(256) for _ in range(len(p)))
        record = _RECORD.pack(f, len(p))
        chunk = record + bytes(p) + _CRC.pack(zlib.crc32(record + bytes(p)))
        yield "container: chunks", data[:chunk_at] + chunk + rest


def run(cases_per_class: int, seed: int, packet_files: bool = True) -> tuple[Counter, list[str], int]:
    import speechcodec

    rng = random.Random(seed)
    codec = speechcodec.load("pc", threads=1)
    counts: Counter = Counter()
    failures: list[str] = []
    total = 0

    def record(klass: str, outcome: str) -> None:
        nonlocal total
        total += 1
        counts[klass, "error" if outcome == "error" else "audio" if outcome == "audio" else "FAIL"] += 1
        if outcome.startswith("FAIL"):
            failures.append(f"{klass}: {outcome}")

    def decode(data: bytes):
        return speechcodec.decode(data, sample_rate_hz=rng.choice([None, 8000, 16000, 48000, 96000]))[0]

    files = list(packet_file_cases(codec, rng, cases_per_class)) if packet_files else []
    for klass, data in files + list(container_cases(rng, cases_per_class)):
        record(klass, _check(_run(decode, data), len(data)))
    # a live decoder handed anything at all
    dec = codec.stream_decoder()
    for _ in range(cases_per_class):
        packet = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randint(0, 1400))), None, "text",
                             12, b"\x00" * rng.randint(1, 40), b"\xff" * rng.randint(1, 40)])
        got = _run(dec.pull, packet)
        record("stream decoder: any packet", _check(got, len(packet) if isinstance(packet, bytes) else 1))
    # the API handed what is not a stream, or not audio
    for thing in (None, 12, "a.spcd", ["a"], {"x": 1}, b"", b"SCPK", b"SPCD", 3.5, object()):
        record("API: not a stream", _check(_run(speechcodec.decode, thing), 1))
    enc = codec.stream_encoder()
    for thing in (["a", "b"], "text", None, np.array([np.nan]), np.zeros((2, 2)), {"x": 1}, object()):
        record("API: not audio", _check(_run(enc.push, thing), 1))
    return counts, failures, total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-gb", type=float, default=3.0, help="address-space limit (0: none)")
    parser.add_argument("--no-packet-files", action="store_true",
                        help="leave out the packet-file classes (a release before format 2 has none)")
    args = parser.parse_args(argv)
    if args.limit_gb:
        _limit(args.limit_gb)
    import warnings

    warnings.simplefilter("ignore")  # clipping warnings of odd input are expected here
    t0 = time.perf_counter()
    counts, failures, total = run(args.cases_per_class, args.seed, not args.no_packet_files)
    seconds = time.perf_counter() - t0
    print(f"{total} cases in {seconds:.1f} s (address space limited to {args.limit_gb:g} GB)\n")
    print("| mutation class | one-line error | bounded, finite audio | failures |")
    print("|---|---|---|---|")
    for klass in dict.fromkeys(k for k, _ in counts):
        print(f"| {klass} | {counts[klass, 'error']} | {counts[klass, 'audio']} | {counts[klass, 'FAIL']} |")
    for line in failures[:20]:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
