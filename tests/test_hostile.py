"""A decoder that trusts nothing (issue 43): each recipe of the hostile-sender probe, and the fuzzer
(``tests/hostile.py``) under an address-space limit."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import speechcodec
from conftest import run_cli
from speechcodec.bitstream import pipe
from speechcodec.errors import AudioInputError, BitstreamError, SpeechCodecError

DATA = Path(__file__).parent / "data"
OLD_FILE = DATA / "pc-format3.spcd"  # the container (format 3): the perceptual family before packets


def _with_header_crc(data: bytes) -> bytes:
    """A container file whose header CRC is made right again (as a hostile sender would)."""
    (length,) = struct.unpack_from("<H", data, 5)
    end = 7 + length
    return data[:end] + struct.pack("<I", zlib.crc32(data[:end])) + data[end + 4:]


def test_a_header_that_claims_more_audio_than_its_chunks_is_refused(tmp_path):
    """The bomb: source_num_samples (offset 35) set to 10**9, the CRC recomputed. Before, decode
    wrote a 2 GB WAV; now one line, and nothing written."""
    data = bytearray(OLD_FILE.read_bytes())
    data[35:43] = struct.pack("<Q", 10 ** 9)
    forged = _with_header_crc(bytes(data))
    with pytest.raises(BitstreamError, match="disagrees with num_samples"):
        speechcodec.decode(forged)
    (tmp_path / "bomb.spcd").write_bytes(forged)
    done = run_cli("decode", tmp_path / "bomb.spcd", tmp_path / "out.wav")
    assert done.returncode == 1 and "disagrees" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.wav").exists()


def test_a_chunk_claims_no_more_frames_than_its_bytes_carry():
    """A chunk record (frames u32, payload length u32, payload, CRC32) that claims its 500
    frames (160,000 samples) from 4 bytes: refused, whatever its CRC says."""
    data = OLD_FILE.read_bytes()
    (length,) = struct.unpack_from("<H", data, 5)
    at = 7 + length + 4
    payload = data[at + 8: at + 8 + 4]
    record = struct.pack("<II", 500, 4)
    forged = data[:at] + record + payload + struct.pack("<I", zlib.crc32(record + payload))
    with pytest.raises(BitstreamError, match="more than its 4 bytes can carry"):
        speechcodec.decode(forged)


@pytest.mark.parametrize("rate", [8000, 48000])
def test_output_is_within_full_scale_after_resampling(rate):
    """An unmodified file decoded at another rate peaked at 1.04: clipped after the last resampling."""
    square = np.sign(np.sin(2 * np.pi * 210 * np.arange(32000) / 16000)).astype(np.float32)
    for data in (OLD_FILE.read_bytes(), speechcodec.load("pc").at(24000).encode(square, 16000)):
        y, got = speechcodec.decode(data, sample_rate_hz=rate)
        assert got == rate and np.isfinite(y).all() and np.abs(y).max() <= 1.0


def test_band_levels_far_below_the_floor_give_finite_audio():
    """NaN audio came from levels a forged chunk put far below the floor (a step of zero): the
    textbook decoder holds them to the floor."""
    from speechcodec.bitstream.rangecoder import finish, new_encoder
    from speechcodec.transform import bands
    from speechcodec.transform.laplace import TABLES
    from speechcodec.transform.payload import decode_payload
    from speechcodec.transform.quantiser import TransformSettings, dequantise, index_base, scale_index

    settings = TransformSettings()
    encoder = new_encoder()
    TABLES.encode(encoder, np.full((2, 16), -3000), np.full((2, 16), 90))  # levels far below the floor
    floor_qo = np.full((2, 320), bands.floor_level(settings.energy_step) * settings.energy_step)
    TABLES.encode(encoder, np.full((2, 320), 5000), scale_index(index_base(settings, floor_qo), 0, -4))
    symbols, level_qo = decode_payload(finish(encoder), settings, 90, -4, 0, 2)
    assert (level_qo == floor_qo).all()
    coefficients = dequantise(settings, symbols, level_qo, 0)
    assert np.isfinite(coefficients).all() and np.isfinite(symbols / np.exp2(level_qo / 8.0)).all()


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "pc/../pc"])
def test_a_stream_names_a_model_never_a_file(name, tmp_path):
    """A packet stream or file header that names a path is refused before anything is loaded;
    the name a header gives is looked up among installed models only."""
    head = pipe.PipeHeader("pc", speechcodec.load("pc").fingerprint, 12000).to_bytes()
    fields = struct.calcsize("<4sBBI8sIBI")
    raw = head[:fields] + bytes((len(name),)) + name.encode()
    forged = raw + struct.pack("<I", zlib.crc32(raw))
    with pytest.raises(BitstreamError, match="not a model name"):
        pipe.read_header(io.BytesIO(forged))
    bad = run_cli("stream-decode", stdin=forged)
    assert bad.returncode == 1 and "not a model name" in bad.stderr and "Traceback" not in bad.stderr
    # the container's header too
    data = bytearray(OLD_FILE.read_bytes())
    (length,) = struct.unpack_from("<H", data, 5)
    old_name = b"pc"
    at = data.index(bytes((len(old_name),)) + old_name, 7)
    new = bytes((len(name),)) + name.encode()
    data[at:at + 1 + len(old_name)] = new
    data[5:7] = struct.pack("<H", length - len(old_name) + len(name))
    with pytest.raises(BitstreamError, match="never files"):
        speechcodec.decode(_with_header_crc(bytes(data)))
    # and a file that happens to be called like a model in the working folder is not loaded
    from speechcodec.registry import load_named

    (tmp_path / "pc-12k").write_bytes(b"not weights")
    with pytest.raises(SpeechCodecError):
        load_named(str(tmp_path / "pc-12k"))


def test_every_header_field_is_range_checked():
    head = pipe.PipeHeader("pc", speechcodec.load("pc").fingerprint, 12000, num_samples=16000).to_bytes()
    for at, value, says in ((6, b"\xff\xff\xff\xff", "bitrate"), (5, b"\x80", "flags"),
                            (18, b"\x01\x00\x00\x00", "source rate"), (22, b"\x00", "source channels"),
                            (23, b"\xfe\xff\xff\xff", "samples")):
        raw = bytearray(head[:-4])
        raw[at:at + len(value)] = value
        with pytest.raises(BitstreamError, match=says):
            pipe.read_header(io.BytesIO(bytes(raw) + struct.pack("<I", zlib.crc32(bytes(raw)))))


def test_bad_input_of_any_type_raises_the_projects_own_error():
    codec = speechcodec.load("pc")
    enc = codec.stream_encoder()
    for thing in (["a", "b"], "text", {"x": 1}, object()):
        with pytest.raises(AudioInputError):
            enc.push(thing)
    for thing in (None, 12, 3.5, ["a"], object()):
        with pytest.raises(SpeechCodecError):
            speechcodec.decode(thing)
        with pytest.raises(SpeechCodecError):
            codec.encode(thing, 16000)


def test_the_hostile_sender_fuzz(tmp_path):
    """At least 1,000 mutated files and packets, every CRC recomputed, under a 2 GB address-space
    limit: each one a one-line error or bounded, finite audio within full scale."""
    fuzzer = str(Path(__file__).parent / "hostile.py")
    done = subprocess.run([sys.executable, fuzzer, "--cases-per-class", "170", "--limit-gb", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    total = int(done.stdout.split()[0])
    assert total >= 1000 and "| 0 |" in done.stdout
