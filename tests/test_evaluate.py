"""Evaluation: the PESQ conformance pair, real Opus and Codec 2, and a report from a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import SHARED, run_cli, synth_speech
from speechcodec.baselines import Codec2Codec, OpusCodec
from speechcodec.errors import BitstreamError, SpeechCodecError
from speechcodec.evaluate import evaluate, evaluate_opus_matched, evaluate_transform_matched
from speechcodec.metrics import pesq_nb, pesq_wb, snr_db, stoi, visqol
from speechcodec.report import build_report

PESQ_DIR = SHARED / "data" / "pesq_reference"


def test_pesq_matches_the_conformance_pair():
    if not (PESQ_DIR / "speech.wav").exists():
        pytest.skip(f"PESQ reference pair not found at {PESQ_DIR}")
    ref, rate = sf.read(PESQ_DIR / "speech.wav")
    deg, _ = sf.read(PESQ_DIR / "speech_bab_0dB.wav")
    assert rate == 16000
    assert pesq_wb(ref, deg) == pytest.approx(1.0832337141036987, abs=1e-6)
    assert pesq_nb(ref, deg) == pytest.approx(1.6072081327438354, abs=1e-6)


def test_metrics_order_clean_above_noisy():
    ref = synth_speech(3.0, seed=1)
    noisy = ref + 0.05 * np.random.default_rng(0).standard_normal(len(ref)).astype(np.float32)
    assert snr_db(ref, ref) > 100 and 5 < snr_db(ref, noisy) < 20
    assert stoi(ref, ref) > stoi(ref, noisy)


def test_visqol_scores_with_the_lattice_mapper(speech_file):
    ref, rate = sf.read(speech_file, dtype="float32")
    assert rate == 16000
    noisy = ref + 0.02 * np.random.default_rng(0).standard_normal(len(ref)).astype(np.float32)
    clean, degraded = visqol(ref, ref), visqol(ref, noisy)
    # the lattice mapper puts identical speech near its ceiling (4.6-4.7); white noise 20 dB under
    # the speech far below (the fallback polynomial would say about 3.5)
    assert 4.4 < clean <= 5.0 and 1.0 <= degraded < 3.0
    assert np.isnan(visqol(ref[:100], ref[:100]))  # too short to score: NaN, not a crash


def test_opus_round_trip_on_real_speech(speech_file):
    audio, rate = sf.read(speech_file, dtype="float32")
    codec = OpusCodec(32000)
    assert codec.version.startswith("libopus")
    data = codec.encode(audio, rate)
    decoded, out_rate = codec.decode(data)
    assert out_rate == 16000 and len(decoded) == len(audio)
    assert pesq_wb(audio, decoded) > 4.0  # delay-aligned: without alignment PESQ drops
    kbps = codec.payload_bytes(data) * 8 / (len(audio) / rate) / 1000
    assert 20 < kbps < 40


def _envelope_lag(ref: np.ndarray, deg: np.ndarray, most: int) -> int:
    """Samples ``deg`` lags ``ref`` by, from their smoothed envelopes (a vocoder keeps no waveform)."""
    def env(x):
        return np.convolve(np.abs(x), np.ones(40) / 40, "same")

    a, b = env(ref), env(deg)
    n = len(a) - 2 * most
    corr = [np.corrcoef(a[most:most + n], b[most + lag:most + lag + n])[0, 1] for lag in range(-most, most)]
    return int(np.argmax(corr)) - most


def test_codec2_round_trip_on_real_speech(speech_file):
    import soxr

    audio, rate = sf.read(speech_file, dtype="float32")
    narrow = soxr.resample(audio, rate, 8000)
    seconds = len(audio) / rate
    for mode in (3200, 1200):
        codec = Codec2Codec(mode)
        data = codec.encode(audio, rate)
        decoded, out_rate = codec.decode(data)
        assert out_rate == 8000 and len(decoded) == len(narrow)  # the input's length, at 8 kHz
        # fixed-size frames: the real rate is the mode's, within one (20 or 40 ms) frame of padding
        kbps = codec.payload_bytes(data) * 8 / seconds / 1000
        assert mode / 1000 <= kbps < mode / 1000 * (1 + 0.05 / seconds)
        assert len(data) - codec.payload_bytes(data) == 20  # the framing's header only
        assert abs(_envelope_lag(narrow, decoded, 400)) <= 40  # its 20 ms delay (160) compensated
        wide = soxr.resample(decoded, 8000, 16000)
        assert pesq_nb(audio, wide) > 2.0 and pesq_wb(audio, wide) > 1.2
    with pytest.raises(BitstreamError, match="not a Codec 2 stream"):
        Codec2Codec(3200).decode(b"OPUSRAW1" + bytes(40))
    with pytest.raises(BitstreamError, match="not a whole Codec 2 3200"):
        Codec2Codec(3200).decode(data[:-1])  # the 1200 bps stream, cut and read as another mode
    with pytest.raises(SpeechCodecError, match="no 3000 bps mode; choose one of 1200, 1300"):
        Codec2Codec(3000)


def test_opus_rate_follows_its_target():
    audio = synth_speech(4.0, seed=3)
    rates = [OpusCodec(b).payload_bytes(OpusCodec(b).encode(audio, 16000)) for b in (8000, 24000)]
    assert rates[0] < rates[1]


def test_matched_opus_lands_on_the_neural_rate_or_reports_its_floor(tmp_path):
    manifest = _manifest(tmp_path)
    matched = evaluate_opus_matched({"kbps": 12.0, "codec": "x"}, manifest, tmp_path / "m12", workers=2,
                                    progress=False)
    # libopus's real rate falls short of its nominal one: the nominal rate is raised to match.
    assert matched["target_bitrate_bps"] > 12000 and matched["matched_to"] == "x"
    first = evaluate("opus:12000", manifest, tmp_path / "o12", workers=2, progress=False)["kbps"]
    assert abs(matched["kbps"] - 12.0) < abs(first - 12.0) / 3 and not matched["note"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("m12")) == ["m12"]  # tries gone
    floor = evaluate_opus_matched({"kbps": 3.4, "codec": "x"}, manifest, tmp_path / "m3", workers=2,
                                  progress=False)
    assert floor["target_bitrate_bps"] == 6000 and "no lower than" in floor["note"]
    assert json.loads((tmp_path / "m3" / "summary.json").read_text())["note"] == floor["note"]


def _manifest(tmp_path, n=3):
    rows = []
    for i in range(n):
        path = tmp_path / "audio" / f"u{i}.flac"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, synth_speech(2.0, seed=20 + i), 16000)
        rows.append((f"spk{i}", f"u{i}", "", 2.0, f"audio/u{i}.flac", ""))
    df = pd.DataFrame(rows, columns=["speaker", "utterance", "transcript", "duration_s", "path", "source"])
    df.to_csv(tmp_path / "test.csv", index=False)
    return tmp_path / "test.csv"


def test_report_from_a_tiny_run(tmp_path, tiny_model):
    manifest = _manifest(tmp_path)
    neural = evaluate(str(tiny_model), manifest, tmp_path / "neural", workers=2, progress=False,
                      target_bitrate_bps=4000, keep_audio=True)
    streams = sorted((tmp_path / "neural" / "streams").iterdir())
    assert len(streams) == 3
    assert neural["arch"] == "folded"
    assert neural["kbps"] == pytest.approx(sum(p.stat().st_size for p in streams) * 8 / 6.0 / 1000)
    assert len(list((tmp_path / "neural" / "decoded").glob("*.flac"))) == 3
    evaluate_opus_matched(neural, manifest, tmp_path / "opus_m", workers=2, progress=False)
    evaluate("opus:16000", manifest, tmp_path / "opus_16k", workers=1, progress=False)
    codec2 = evaluate("codec2:3200", manifest, tmp_path / "codec2", workers=1, progress=False,
                      target_bitrate_bps=3200)
    assert codec2["kind"] == "codec2" and codec2["kbps"] == pytest.approx(3.2, rel=0.02)
    textbook = evaluate_transform_matched(neural, manifest, tmp_path / "transform_m", workers=2, progress=False)
    assert textbook["kind"] == "transform" and textbook["matched_to"] == "tiny-test"
    assert textbook["kbps"] == pytest.approx(neural["kbps"], rel=0.03)  # its rate control, from bytes
    evaluate("transform:16000", manifest, tmp_path / "transform_16k", workers=1, progress=False)
    table = build_report([tmp_path / d for d in ("neural", "opus_m", "opus_16k", "codec2", "transform_m",
                                                 "transform_16k")], tmp_path / "report")
    assert list(table.columns[:4]) == ["model", "target_kbps", "neural_kbps", "neural_pesq_wb"]
    assert table["model"].tolist() == ["tiny-test"]
    row = table.iloc[0]
    assert row["delta_pesq_wb"] == pytest.approx(row["neural_pesq_wb"] - row["opus_pesq_wb"])
    assert neural["kbps"] < 6  # below Opus's floor, so beside Codec 2 as well, PESQ-NB with PESQ-WB
    assert row["codec2"] == "codec2-3200bps"
    assert row["delta_pesq_nb_codec2"] == pytest.approx(row["neural_pesq_nb"] - codec2["pesq_nb"])
    assert "| tiny-test | " in (tmp_path / "report" / "table1.md").read_text().split("Codec 2 (narrowband")[1]
    assert "Codec 2 (libcodec2, 8 kHz)" in (tmp_path / "report" / "rate_quality.svg").read_text()
    # Beside the textbook transform coder at the model's real rate: a table of its own, a series.
    assert row["transform_kbps"] == pytest.approx(textbook["kbps"])
    assert row["delta_visqol_transform"] == pytest.approx(row["neural_visqol"] - textbook["visqol"])
    beside = (tmp_path / "report" / "table1.md").read_text().split("Beside the textbook baseline")[1]
    assert f"| tiny-test | {row['neural_kbps']:.2f} |" in beside and f"| {textbook['kbps']:.2f} |" in beside
    assert "textbook transform coder (no network)" in (tmp_path / "report" / "rate_quality.svg").read_text()
    for name in ("table1.csv", "table1.md", "rate_quality.png", "rate_quality.svg", "metrics.json",
                 "curve.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert (tmp_path / "report" / "rate_quality.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert set(metrics) == {"tiny-test"}
    assert metrics["tiny-test"]["transform_pesq_wb"] == pytest.approx(textbook["pesq_wb"], abs=1e-3)


def test_a_model_below_opus_floor_meets_the_nearest_codec2_mode_at_or_above_its_rate():
    from speechcodec.report import codec2_match

    runs = [{"kind": "codec2", "codec": f"codec2-{m}bps", "target_bitrate_bps": m} for m in (3200, 1200, 1600)]
    others = [{"kind": "opus", "codec": "opus-6000bps", "target_bitrate_bps": 6000}]
    assert codec2_match(1.5, runs + others)["codec"] == "codec2-1600bps"
    assert codec2_match(1.2, runs)["codec"] == "codec2-1200bps"
    assert codec2_match(2.9, runs)["codec"] == "codec2-3200bps"
    assert codec2_match(5.4, runs)["codec"] == "codec2-3200bps"  # above every mode: its ceiling
    assert codec2_match(6.5, runs) == {}  # Opus reaches it: no Codec 2 row
    assert codec2_match(2.9, others) == {}  # no Codec 2 mode scored


def test_the_papers_network_is_plotted_as_its_own_series(tmp_path):
    from speechcodec.report import plot_rate_quality

    def summary(codec, kind, arch, kbps, pesq):
        return {"codec": codec, "kind": kind, "arch": arch, "kbps": kbps, "pesq_wb": pesq, "pesq_wb_std": 0.1}

    summaries = [summary("sc-6k", "neural", "folded", 6.0, 2.0),
                 summary("sc-12k", "neural", "folded", 12.0, 2.3),
                 summary("paper-15k", "neural", "paper", 14.5, 2.4),
                 summary("opus-6000", "opus", None, 6.0, 2.3)]
    scores = pd.DataFrame({"codec": ["sc-6k"], "kbps": [6.0], "pesq_wb": [2.0]})
    svg = plot_rate_quality(summaries, scores, tmp_path / "plot")[1].read_text()
    assert "the 2018 paper" in svg and "speechcodec" in svg and "Opus (libopus)" in svg
    no_paper = plot_rate_quality(summaries[:2] + summaries[3:], scores, tmp_path / "plot2")[1].read_text()
    assert "the 2018 paper" not in no_paper


def test_eval_and_report_cli(tmp_path, tiny_model):
    manifest = _manifest(tmp_path, n=2)
    r = run_cli("eval", "--opus", "8000", "--test-manifest", manifest, "--out", tmp_path / "o8", "-q")
    assert r.returncode == 0, r.stderr
    assert "PESQ-WB" in r.stderr
    r = run_cli("eval", "--model", tiny_model, "--test-manifest", manifest, "--out", tmp_path / "n", "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("eval", "--opus-match", tmp_path / "n" / "summary.json", "--test-manifest", manifest,
                "--out", tmp_path / "om", "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("report", tmp_path / "n", tmp_path / "om", tmp_path / "o8", "--out", tmp_path / "rep")
    assert r.returncode == 0 and "| tiny-test |" in r.stdout
    # an eval cut short (Ctrl-C, a full disk) has streams but no summary: say so, write nothing
    breaks = {"om": ("summary.json", None, "has no summary.json"),
              "n": ("scores.csv", "", "has unreadable results")}
    for cut, (name, text, what) in breaks.items():
        if text is None:
            (tmp_path / cut / name).unlink()
        else:
            (tmp_path / cut / name).write_text(text)
        r = run_cli("report", tmp_path / "o8", tmp_path / cut, "--out", tmp_path / "rep2")
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            f"speechcodec: error: {tmp_path / cut} is not a finished eval folder: it {what}; "
            f"run `speechcodec eval --out {tmp_path / cut}` (again)"], r.stderr
    assert not (tmp_path / "rep2").exists()
