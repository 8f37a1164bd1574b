"""The decoder postfilter: it finds the pitch, deepens the valleys between harmonics and formants,
keeps level, leaves noise alone, is the same in pieces as in one call, and streams carry it."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

import speechcodec
from conftest import run_cli, synth_speech
from speechcodec.bitstream.container import StreamHeader, read_header, read_stream, write_header
from speechcodec.codec import AutoencoderCodec as Codec
from speechcodec.errors import BitstreamError
from speechcodec.modelfile import load_model_file, update_info
from speechcodec.postfilter import (
    OFF,
    PostfilterSettings,
    comb,
    formant_emphasis,
    pitch_track,
    postfilter,
)

RATE = 16000


def harmonics(f0_hz: float, seconds: float = 1.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Harmonics of ``f0_hz`` falling 6 dB an octave (the second as strong as the first: a trap for
    octave errors), plus white noise at ``noise`` RMS."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * k * f0_hz * t + k) / max(1, k - 1) for k in range(1, int(7000 / f0_hz)))
    x = 0.1 * x / np.sqrt(np.mean(x ** 2))
    return (x + noise * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def valley_depth_db(x: np.ndarray, f0_hz: float) -> float:
    """Mean power at the harmonics over the mean power halfway between them, below 4 kHz (dB)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    bin_hz = RATE / len(x)
    ks = np.arange(1, int(4000 / f0_hz))
    peaks = spec[np.rint(ks * f0_hz / bin_hz).astype(int)]
    valleys = spec[np.rint((ks + 0.5) * f0_hz / bin_hz).astype(int)]
    return float(10 * np.log10(peaks.mean() / valleys.mean()))


@pytest.mark.parametrize("f0_hz", [80.0, 125.0, 210.0])
def test_pitch_is_found_without_octave_errors(f0_hz):
    import torch

    lag, r = pitch_track(torch.from_numpy(harmonics(f0_hz)), RATE)
    inner = slice(5, -5)  # frames that see the signal on both sides
    assert np.median(lag[inner].numpy()) == pytest.approx(RATE / f0_hz, abs=1)
    assert (r[inner] > 0.9).all()


def test_comb_deepens_the_valleys_between_harmonics_and_leaves_noise_alone():
    import torch

    noisy = harmonics(125.0, noise=0.02)
    out = comb(torch.from_numpy(noisy), RATE, 0.4).numpy()
    assert valley_depth_db(out[2000:-2000], 125.0) > valley_depth_db(noisy[2000:-2000], 125.0) + 2.0
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(noisy ** 2)), rel=0.1)
    noise = np.random.default_rng(1).standard_normal(RATE).astype(np.float32) * 0.05
    assert np.array_equal(comb(torch.from_numpy(noise), RATE, 0.4).numpy(), noise)  # nothing voiced


def test_formant_emphasis_lifts_peaks_and_keeps_the_level():
    import torch

    # stationary noise with one formant-like peak (1 kHz, 150 Hz wide, 20 dB over the floor)
    rng = np.random.default_rng(2)
    f = np.fft.rfftfreq(2 * RATE, 1 / RATE)
    envelope = 0.1 + np.exp(-0.5 * ((f - 1000) / 75) ** 2)
    x = np.fft.irfft(envelope * np.exp(2j * np.pi * rng.random(len(f))), 2 * RATE).astype(np.float32)
    x *= 0.1 / np.sqrt(np.mean(x ** 2))
    out = formant_emphasis(torch.from_numpy(x), RATE, 0.3).numpy()
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=0.05)

    def contrast_db(y):  # the peak's band over the floor beside it
        power = np.abs(np.fft.rfft(y)) ** 2
        peak, floor = power[(f > 950) & (f < 1050)].mean(), power[(f > 1400) & (f < 1700)].mean()
        return float(10 * np.log10(peak / floor))

    assert contrast_db(out) > contrast_db(x) + 1.0


def test_settings_are_checked_and_off_is_the_identity():
    x = synth_speech(0.5)
    assert postfilter(x, RATE, OFF) is x
    assert str(OFF) == "off" and str(PostfilterSettings(0.3, 0.15)) == "comb 0.3, formant 0.15"
    for bad in (-0.1, 1.5, float("nan"), "0.3"):
        with pytest.raises(ValueError, match="from 0 to 1"):
            PostfilterSettings(comb=bad)
    assert len(postfilter(np.zeros(0, np.float32), RATE, PostfilterSettings(0.3, 0.2))) == 0
    short = postfilter(x[:37], RATE, PostfilterSettings(0.3, 0.2))
    assert short.shape == (37,) and np.isfinite(short).all()


def test_decoding_in_chunks_equals_one_call_over_the_whole_signal(tiny_model):
    model_file = load_model_file(tiny_model)
    x = synth_speech(4.3, seed=5)
    settings = PostfilterSettings(0.4, 0.2)
    small = Codec(model_file, chunk_s=0.35)  # 13 chunks, so 13 pieces of postfilter
    data = small.encode(x, RATE)
    # the same decoded audio, filtered in one call (the network's own chunking is tested elsewhere:
    # it is equal to float precision, and a voicing decision can flip on that)
    plain, _ = small.decode(data, postfilter="off")
    one_call = postfilter(plain, RATE, settings)
    chunked, _ = small.decode(data, postfilter=settings)
    assert len(chunked) == len(x)
    assert np.abs(chunked - one_call).max() < 1e-6
    assert np.abs(one_call - plain).max() > 1e-3  # the filter did something


@pytest.fixture()
def filtered_model(tiny_model, tmp_path, monkeypatch):
    """The tiny model, installed, with postfilter strengths in its file (as the shipped ones have)."""
    path = tmp_path / tiny_model.name
    shutil.copy(tiny_model, path)
    before = load_model_file(path).fingerprint
    update_info(path, {"postfilter": {"strengths": {"comb": 0.3, "formant": 0.15}}})
    assert load_model_file(path).fingerprint == before  # streams it wrote stay decodable
    monkeypatch.setenv("SPEECHCODEC_MODEL_PATH", str(tmp_path))
    return path


def test_streams_carry_the_models_strengths_and_old_streams_decode_as_before(filtered_model):
    codec = speechcodec.load(filtered_model)
    assert codec.postfilter == PostfilterSettings(0.3, 0.15)
    data = codec.encode(synth_speech(2.0), RATE)
    header, _ = read_header(io.BytesIO(data))
    assert data[4] == 3 and (header.postfilter_comb_pct, header.postfilter_formant_pct) == (30, 15)
    off, _ = codec.decode(data, postfilter="off")
    default, _ = speechcodec.decode(data)
    assert np.array_equal(default, postfilter(off, RATE, codec.postfilter))
    # The same stream as format 1 (what earlier releases wrote) has no strengths: no postfilter.
    header, chunks = read_stream(io.BytesIO(data))
    old = io.BytesIO()
    write_header(old, header, version=1)
    old.write(data[data.index(b"SPCD") + 7 + len(header.to_bytes()) + 4:])
    assert old.getvalue()[4] == 1 and len(old.getvalue()) == len(data) - 6
    assert np.array_equal(codec.decode(old.getvalue())[0], off)
    # and as format 2 (before the bitrate field): the strengths, without the rate asked for
    v2 = io.BytesIO()
    write_header(v2, header, version=2)
    v2.write(data[data.index(b"SPCD") + 7 + len(header.to_bytes()) + 4:])
    assert v2.getvalue()[4] == 2 and len(v2.getvalue()) == len(data) - 4
    assert np.array_equal(codec.decode(v2.getvalue())[0], default)
    assert np.array_equal(codec.decode(old.getvalue(), postfilter="model")[0], default)
    with pytest.raises(speechcodec.SpeechCodecError, match="postfilter must be"):
        codec.decode(data, postfilter="loud")


def test_a_forged_strength_is_refused():
    header = StreamHeader(model="m", fingerprint="0" * 16, sample_rate_hz=RATE, num_samples=100,
                          samples_per_frame=40, code_channels=4, chunk_frames=8, gain=1.0,
                          source_sample_rate_hz=RATE, source_num_samples=100, source_channels=1,
                          postfilter_comb_pct=101)
    with pytest.raises(BitstreamError, match="postfilter_comb_pct=101 is out of range"):
        write_header(io.BytesIO(), header)


def test_cli_decode_postfilter_option_and_info(filtered_model, tmp_path):
    wav = tmp_path / "in.wav"
    import soundfile as sf

    sf.write(wav, synth_speech(1.5), RATE)
    stream = tmp_path / "x.spcd"
    assert run_cli("encode", wav, stream, "--model", filtered_model, "-q").returncode == 0
    info = run_cli("info", stream)
    assert "postfilter" in info.stdout and "comb 0.3, formant 0.15" in info.stdout
    outs = {}
    for spec in ("stream", "off", "0.3,0.15", "model"):
        out = tmp_path / f"{spec}.wav"
        result = run_cli("decode", stream, out, "--postfilter", spec, "-q")
        assert result.returncode == 0, result.stderr
        outs[spec] = sf.read(out)[0]
    assert np.array_equal(outs["stream"], outs["0.3,0.15"]) and np.array_equal(outs["stream"], outs["model"])
    assert not np.array_equal(outs["stream"], outs["off"])
    for bad in ("1.2,0", "loud", "0.3"):
        result = run_cli("decode", stream, tmp_path / "bad.wav", "--postfilter", bad)
        assert result.returncode != 0 and "--postfilter takes" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad.wav").exists()


@pytest.fixture(scope="module")
def chooser():
    """scripts/choose_postfilter.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "choose_postfilter.py"
    spec = importlib.util.spec_from_file_location("choose_postfilter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_chooser_takes_the_best_pesq_that_keeps_visqol(chooser):
    # scripts/choose_postfilter.py: a filter that raises PESQ-WB and lowers ViSQOL is not chosen.
    pesq = np.array([[2.0, 2.1, 2.6, 2.4], [2.2, 2.3, 2.8, 2.5]])  # [files, grid]; 0 is off
    finalists = [0, 2, 3]
    keeps = np.array([[2.5, 2.4, 2.6], [2.7, 2.6, 2.6]])  # [files, finalists]: 2 loses, 3 keeps
    assert chooser.choose(pesq, keeps, finalists) == 2  # grid 3, the best PESQ-WB that keeps ViSQOL
    loses = np.array([[2.5, 2.4, 2.4], [2.7, 2.6, 2.6]])
    assert chooser.choose(pesq, loses, finalists) == 0  # none keeps it: no postfilter
    gains = np.array([[2.5, 2.6, 2.6], [2.7, 2.6, 2.7]])
    assert chooser.choose(pesq, gains, finalists) == 1  # grid 2: the best PESQ-WB, ViSQOL kept


def test_the_chooser_keeps_a_finalist_at_each_formant_strength(chooser):
    grid = [(c, f) for c in chooser.COMBS for f in chooser.FORMANTS]
    means = np.array([1.0 + c + (f if f < 0.2 else 0.0) for c, f in grid])  # best: strongest comb
    finalists = chooser.finalists_of(means, grid)
    assert finalists[0] == 0 and len(finalists) == 1 + len(chooser.FORMANTS)
    assert [grid[i] for i in finalists[1:]] == [(max(chooser.COMBS), f) for f in chooser.FORMANTS]
    assert int(np.argmax(means)) in finalists
