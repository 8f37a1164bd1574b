"""The codec through its Python API, with a real trained model and real constriction coding."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import speechcodec
from conftest import REPO, run_cli, synth_speech
from speechcodec.bitstream.container import read_header
from speechcodec.modelfile import load_model_file, save_model


@pytest.fixture()
def codec(tiny_model):
    return speechcodec.load(tiny_model)


def test_symbols_survive_the_bitstream_exactly(codec):
    audio = synth_speech(9.0, seed=11)
    data = codec.encode(audio, 16000)
    assert np.array_equal(codec.codes_from_bytes(data), codec.codes(audio, 16000))


def test_real_bits_match_the_models_estimate(codec):
    audio = synth_speech(20.0, seed=12)
    data = codec.encode(audio, 16000)
    codes = codec.codes(audio, 16000)
    estimate_bits = codec.coder.estimate_bits(codes)
    import io

    header_bytes = read_header(io.BytesIO(data))[1]
    payload_bits = (len(data) - header_bytes) * 8
    assert abs(payload_bits - estimate_bits) <= 0.03 * estimate_bits + 8 * 16 * 6  # + records


def test_round_trip_keeps_rate_length_and_resembles_input(codec):
    audio = synth_speech(2.5, seed=2)
    decoded, rate = codec.decode(codec.encode(audio, 16000))
    assert rate == 16000 and decoded.shape == audio.shape and decoded.dtype == np.float32
    assert np.isfinite(decoded).all()


def test_any_rate_and_channel_layout(codec):
    mono = synth_speech(1.5, sample_rate_hz=44100, seed=4)
    stereo = np.stack([mono, 0.5 * mono], axis=1)  # [N, 2]
    for audio in (stereo, stereo.T, (mono * 32767).astype(np.int16)):
        data = codec.encode(audio, 44100)
        decoded, rate = codec.decode(data)
        assert rate == 44100 and len(decoded) == len(mono)
    decoded, rate = codec.decode(data, sample_rate_hz=8000)
    assert rate == 8000 and len(decoded) == round(len(mono) * 8000 / 44100)


@pytest.mark.parametrize("audio, match", [
    (np.zeros(0, np.float32), "no samples"),
    (np.array([0.1, np.nan, 0.2], np.float32), "NaN or infinite"),
    (np.array([0.1, np.inf] * 100, np.float32), "NaN or infinite"),
    (np.zeros((2, 3, 4), np.float32), "1-D or 2-D"),
    (np.array(["a", "b"]), "numeric"),
    (np.array([0.1, 1e30] * 100, np.float32), "far beyond full scale"),
])
def test_bad_arrays_raise_value_errors(codec, audio, match):
    with pytest.raises(ValueError, match=match):
        codec.encode(audio, 16000)


def test_integer_arrays_map_as_soundfile_reads_them(tmp_path):
    """Every integer width, signed or not (8-bit WAV is unsigned), centred and scaled to +-1."""
    from speechcodec.audio import as_mono

    audio = synth_speech(0.5)
    for subtype, dtype in (("PCM_U8", "uint8"), ("PCM_16", "int16"), ("PCM_32", "int32")):
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, audio, 16000, subtype=subtype)
        as_float = sf.read(path, dtype="float32")[0]
        if dtype == "uint8":  # soundfile reads no uint8: the raw bytes after the 44-byte header
            raw = np.frombuffer(path.read_bytes()[44:], np.uint8)
        else:
            raw = sf.read(path, dtype=dtype)[0]
        assert np.abs(as_mono(raw) - as_float).max() < 1e-6, subtype
    for dtype in (np.uint16, np.uint32, np.uint64, np.int8, np.int64):
        half = float(np.iinfo(dtype).max // 2 + 1)
        silence = np.full(100, half if np.dtype(dtype).kind == "u" else 0, dtype)
        assert np.abs(as_mono(silence)).max() == 0.0, dtype  # silence is 0, not an offset


def test_decode_wants_bytes(codec):
    data = codec.encode(synth_speech(0.2), 16000)
    assert codec.decode(bytearray(data))[0].shape == codec.decode(memoryview(data))[0].shape
    for wrong, hint in (("x.spcd", "read_bytes"), (3, "int")):
        for decode in (codec.decode, speechcodec.decode):
            with pytest.raises(speechcodec.BitstreamError, match=f"stream is bytes, got .*{hint}"):
                decode(wrong)


def test_codecs_code_on_their_own_thread_count_and_give_it_back(tiny_model):
    """load() codecs use one torch thread (fastest per stream); the caller's setting is restored."""
    seen: list[int] = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        one, every = speechcodec.load(tiny_model), speechcodec.load(tiny_model, threads=None)
        assert one.threads == 1 and every.threads is None and one is not every
        for codec, expected in ((one, 1), (every, 2)):
            hooks = [m.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
                     for m in codec.model.modules() if isinstance(m, torch.nn.Conv1d)]
            try:
                codec.decode(codec.encode(synth_speech(0.5), 16000))
            finally:
                for hook in hooks:
                    hook.remove()
            assert set(seen) == {expected} and torch.get_num_threads() == 2
            seen.clear()
        with pytest.raises(speechcodec.SpeechCodecError, match="threads must be a whole number"):
            speechcodec.load(tiny_model, threads=0)
    finally:
        torch.set_num_threads(before)


def test_bad_sample_rate(codec):
    for rate in (0, 16000.5, True, "16000", float("nan")):
        with pytest.raises(speechcodec.AudioInputError, match="sample_rate"):
            codec.encode(synth_speech(0.5), rate)


def test_a_whole_float_sample_rate_is_taken(codec):
    """``16000.0`` (a rate computed or read as a float) is a rate, as ``16000`` is."""
    audio = synth_speech(0.5)
    assert codec.encode(audio, 16000.0) == codec.encode(audio, np.float64(16000)) == codec.encode(audio, 16000)
    assert codec.codes(audio, 16000.0).shape == codec.codes(audio, 16000).shape
    data = codec.encode(audio, 16000)
    assert codec.decode(data, sample_rate_hz=8000.0)[1] == 8000
    for rate in (8000.5, "8000", 10**7):
        with pytest.raises(speechcodec.AudioInputError, match="output sample rate"):
            codec.decode(data, sample_rate_hz=rate)


def test_silence_and_tiny_inputs_code(codec):
    for audio in (np.zeros(16000, np.float32), np.full(3, 0.01, np.float32)):
        decoded, _ = codec.decode(codec.encode(audio, 16000))
        assert decoded.shape == audio.shape and np.isfinite(decoded).all()


def test_decode_picks_the_model_named_in_the_stream(model_path_env):
    names = [m["name"] for m in speechcodec.list_models()]
    assert "tiny-test" in names
    entry = next(m for m in speechcodec.list_models() if m["name"] == "tiny-test")
    assert entry["bitrate_bps"] == 4000 and entry["sample_rate_hz"] == 16000
    codec = speechcodec.load("tiny-test")
    data = codec.encode(synth_speech(1.0), 16000)
    audio, rate = speechcodec.decode(data)
    assert rate == 16000 and len(audio) == 16000


def test_unknown_model_and_changed_weights_are_refused(tiny_model, tmp_path, monkeypatch):
    codec = speechcodec.load(tiny_model)
    data = codec.encode(synth_speech(1.0), 16000)
    monkeypatch.setenv("SPEECHCODEC_MODEL_PATH", str(tmp_path))
    with pytest.raises(speechcodec.UnknownModelError, match="tiny-test"):
        speechcodec.decode(data)
    # Same name, other weights: the fingerprint tells them apart.
    loaded = load_model_file(tiny_model)
    model = loaded.build()
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    other = save_model(tmp_path / "tiny-test.safetensors", model, loaded.pmf, "tiny-test")
    with pytest.raises(speechcodec.ModelMismatchError, match="fingerprint"):
        speechcodec.decode(data)
    with pytest.raises(speechcodec.ModelMismatchError):
        speechcodec.load(other).decode(data)


@pytest.mark.parametrize("retired, successor", [("sc-6k", "pc-6k"), ("sc-12k", "pc-12k"), ("sc-24k", "pc-24k")])
def test_a_retired_model_name_says_its_successor(tmp_path, retired, successor):
    """Retired models are neither listed nor loaded; their names, and streams that name them, fail
    in one line that names what replaces them."""
    import dataclasses
    import io

    from speechcodec.bitstream.container import write_header

    assert retired not in {m["name"] for m in speechcodec.list_models()} and successor in \
        {m["name"] for m in speechcodec.list_models()}
    with pytest.raises(speechcodec.UnknownModelError, match=f"retired.*use {successor}"):
        speechcodec.load(retired)
    # a stream of the retired model: sc-3k's, its header renamed (CRC recomputed)
    data = speechcodec.load("sc-3k").encode(synth_speech(1.0), 16000)
    header, size = read_header(io.BytesIO(data))
    renamed = io.BytesIO()
    write_header(renamed, dataclasses.replace(header, model=retired))
    (tmp_path / "old.spcd").write_bytes(renamed.getvalue() + data[size:])
    result = run_cli("decode", tmp_path / "old.spcd", tmp_path / "old.wav")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and f"use {successor}" in result.stderr, result.stderr
    assert not (tmp_path / "old.wav").exists()


def test_speechcodec_models_lists_pc_and_sc_3k():
    """The installed models: sc-3k, and pc on one row with the names it is listed at."""
    result = run_cli("models", env={"SPEECHCODEC_MODEL_PATH": ""})
    rows = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert result.returncode == 0 and rows == ["sc-3k", "pc"], result.stdout
    assert "(as pc-6k, pc-12k, pc-24k)" in result.stdout


def test_model_files_are_never_unpickled(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(speechcodec.ModelError, match="not a readable safetensors"):
        speechcodec.load(evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(speechcodec.ModelError, match="does not exist"):
        speechcodec.load(tmp_path / "missing.safetensors")


def test_file_api_streams_and_writes_atomically(codec, tmp_path):
    src = tmp_path / "in.flac"
    sf.write(src, np.stack([synth_speech(12.0, 22050, 5)] * 2, axis=1), 22050)
    stats = codec.encode_file(src, tmp_path / "out.spcd")
    assert stats.num_bytes == (tmp_path / "out.spcd").stat().st_size
    assert stats.num_chunks == 2  # 10-second chunks
    header = codec.decode_file(tmp_path / "out.spcd", tmp_path / "back.wav")
    info = sf.info(str(tmp_path / "back.wav"))
    assert (info.samplerate, info.frames, info.channels) == (22050, 12 * 22050, 1)
    assert header.source_channels == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.wav", "in.flac", "out.spcd"]


def test_the_readmes_python_example_runs(tmp_path):
    """The library example in README.md, run as written (a user's speech.wav, the shipped sc-6k)."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "README.md has no python example"
    sf.write(tmp_path / "speech.wav", synth_speech(2.0, sample_rate_hz=22050, seed=5), 22050)
    for code in blocks:
        if "speechcodec.decode(data)" in code:  # the codec example: check what it got
            code += "\nassert isinstance(data, bytes) and rate == 22050 and len(decoded) == len(audio)\n"
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
