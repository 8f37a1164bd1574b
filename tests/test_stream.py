"""Streaming the perceptual family: 20 ms packets, the file decoder's result, 40 ms of delay,
losses concealed, bad packets survived, and the stream-encode / stream-decode / loopback commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechcodec
from conftest import run_cli, synth_speech
from speechcodec.baselines.opus import OpusCodec
from speechcodec.errors import AudioInputError, SpeechCodecError
from speechcodec.model.config import ModelConfig
from speechcodec.modelfile import load_model_file, save_model
from speechcodec.perceptual import packets
from speechcodec.perceptual.codec import PerceptualCodec
from speechcodec.perceptual.network import Enhancer
from speechcodec.perceptual.stream import (
    ALGORITHMIC_DELAY_MS,
    SLACK_BYTES,
    loopback,
    loss_pattern,
    packet_budget_bytes,
)
from speechcodec.transform.mdct import HOP


def _tiny(folder, name="tiny-pc", seed=0) -> PerceptualCodec:
    torch.manual_seed(seed)
    net = Enhancer(ModelConfig(arch="perceptual", code_channels=320, width=16, res_blocks=2))
    torch.nn.init.normal_(net.body[-1].weight, std=0.05)
    path = save_model(folder / f"{name}.safetensors", net, None, name, {"bitrate_bps": 12000})
    return PerceptualCodec(load_model_file(path), threads=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("stream"))


@pytest.fixture(scope="module")
def pc():
    return speechcodec.load("pc", threads=1)


@pytest.fixture(params=["real", "synthetic"])
def speech_path(request, tmp_path) -> Path:
    """A real utterance of the shared speech (skipped in a clone without it), and synthetic
    speech-like audio (so that every clone runs these tests)."""
    if request.param == "real":
        return request.getfixturevalue("speech_file")
    path = tmp_path / "synthetic.wav"
    sf.write(path, synth_speech(3.0, seed=7), 16000, subtype="PCM_16")
    return path


@pytest.fixture()
def speech(speech_path) -> np.ndarray:
    x, rate = sf.read(speech_path, dtype="float32")
    assert rate == 16000
    return x


def _pushed(enc, audio, seed=0) -> list[bytes]:
    """Push ``audio`` in blocks of random sizes (as a sound card hands them over), then flush."""
    rng, out, start = np.random.default_rng(seed), [], 0
    while start < len(audio):
        size = int(rng.integers(1, 1000))
        out += enc.push(audio[start:start + size])
        start += size
    return out + enc.flush()


def test_streamed_speech_is_the_file_decoders(pc, speech):
    """Packets do not depend on how the samples were handed over, and the stream decoder, frame
    by frame, gives what the file decoder gives over the whole packet stream (one network pass,
    one inverse MDCT), 320 samples later, within 1e-5 (the network's sums run in another order)."""
    enc = pc.stream_encoder(12000)
    stream = _pushed(enc, speech)
    assert stream == pc.encode_packets(speech, 12000)
    assert len(stream) == -(-len(speech) // HOP) + 1
    dec = pc.stream_decoder()
    pulled = [dec.pull(p) for p in stream]
    assert all(len(b) == HOP for b in pulled)
    streamed = np.concatenate(pulled)
    whole = pc.decode_packets(stream)
    assert len(whole) == len(streamed) - HOP
    assert np.abs(streamed[HOP:] - whole).max() < 1e-5
    # and it is speech, not noise: the coded speech follows the input
    error = whole[:len(speech)] - speech
    assert 10 * np.log10(np.sum(speech ** 2) / np.sum(error ** 2)) > 5


@pytest.mark.parametrize("bps", [6000, 12000, 24000])
def test_no_packet_exceeds_its_rate_and_the_stream_meets_it(tiny, bps):
    stream = tiny.encode_packets(synth_speech(4.0, seed=2), bps)
    sizes = np.array([len(p) for p in stream])
    budget = packet_budget_bytes(bps)
    assert budget == bps * 20 // 8000
    assert sizes.max() <= budget + SLACK_BYTES and sizes.mean() <= budget
    # a packet falls short of its bytes only where the step can go no finer (silence) or by
    # less than a 4-byte word and the 3 bytes an earlier packet may have taken
    coarse = np.array([p[1] for p in stream]) > 0
    assert coarse.sum() > len(stream) // 2
    assert sizes[coarse].min() >= budget - 7 and sizes[coarse].mean() >= 0.95 * budget
    assert all((s - packets.HEAD_BYTES) % 4 == 0 for s in sizes)
    assert [p[0] for p in stream] == [i % 256 for i in range(len(stream))]


def test_delay_is_40_ms_by_cross_correlation(pc, speech):
    """Pushing 20 ms yields the packet of the frame before; the output lags the input by 320
    samples; with the 20 ms a frame waits for, the delay is 40 ms."""
    enc, dec = pc.stream_encoder(24000), pc.stream_decoder()
    out, made = [], []
    for start in range(0, len(speech) - len(speech) % HOP, HOP):
        got = enc.push(speech[start:start + HOP])
        made.append(len(got))
        out += [dec.pull(p) for p in got]
    assert made == [1] * len(made)  # a packet for every 20 ms pushed, at once
    y = np.concatenate(out)
    n = min(len(y), len(speech))
    spectrum = np.fft.rfft(y[:n], 2 * n) * np.conj(np.fft.rfft(speech[:n], 2 * n))
    lag = int(np.argmax(np.fft.irfft(spectrum)[: n // 2]))
    assert lag == HOP
    assert (lag + HOP) * 1000 // 16000 == ALGORITHMIC_DELAY_MS == 40


def test_a_loss_is_concealed_and_the_decoder_recovers_exactly(pc, speech):
    """Three packets lost: their 60 ms are concealed (not silence), and once the network's
    memory has passed them the output is the lossless one again: a packet's band energies never
    lean on the packet before."""
    stream = pc.encode_packets(speech, 12000)
    clean = np.concatenate([d.pull(p) for d in [pc.stream_decoder()] for p in stream])
    dec = pc.stream_decoder()
    lossy = np.concatenate([dec.pull(None if 40 <= i < 43 else p) for i, p in enumerate(stream)])
    assert dec.lost == 3 and len(lossy) == len(clean)
    concealed = lossy[41 * HOP:43 * HOP]
    assert np.sqrt(np.mean(concealed ** 2)) > 0.1 * np.sqrt(np.mean(clean[41 * HOP:43 * HOP] ** 2))
    settled = (43 + pc.enhancer.context_frames + 1) * HOP
    assert np.abs(lossy[settled:] - clean[settled:]).max() < 1e-5
    assert np.abs(lossy[40 * HOP:43 * HOP] - clean[40 * HOP:43 * HOP]).max() > 1e-3


def test_bad_packets_are_concealed_or_dropped_never_a_crash(tmp_path, tiny):
    stream = tiny.encode_packets(synth_speech(1.0, seed=4), 12000)
    other = _tiny(tmp_path, "other-pc", seed=1)
    dec = tiny.stream_decoder()
    assert len(dec.pull(stream[0])) == HOP
    cut = stream[1][:-4]
    flipped = bytearray(stream[1])
    flipped[-1] ^= 0x10
    foreign = other.encode_packets(synth_speech(1.0, seed=4), 12000)[1]
    for bad in (cut, bytes(flipped), foreign, b"", b"\x01\x02\x03", "not bytes"):
        assert len(dec.pull(bad)) == HOP  # concealed as lost
    assert dec.damaged == 6 and dec.lost == 6
    # the sequence runs ahead by 6 frames (the bad ones took 1 .. 6): frame 7 decodes now
    assert len(dec.pull(stream[7])) == HOP
    assert len(dec.pull(stream[3])) == 0 and dec.late == 1  # late: dropped
    assert len(dec.pull(stream[7])) == 0 and dec.late == 2  # repeated: dropped
    assert len(dec.pull(stream[10])) == 3 * HOP  # 8 and 9 never came: concealed first
    rng = np.random.default_rng(0)
    for _ in range(300):  # random bytes: concealed, never an exception
        junk = rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        out = dec.pull(junk)
        assert np.isfinite(out).all()


def test_stream_api_refuses_bad_input_with_one_line(tiny):
    enc = tiny.stream_encoder(12000)
    with pytest.raises(AudioInputError, match="mono"):
        enc.push(np.zeros((2, 320), np.float32))
    with pytest.raises(AudioInputError, match="NaN"):
        enc.push(np.array([0.0, np.nan]))
    enc.flush()
    with pytest.raises(SpeechCodecError, match="flushed"):
        enc.push(np.zeros(320))
    for bps in (3000, 100000, 12000.5):
        with pytest.raises(SpeechCodecError, match="a stream codes"):
            tiny.stream_encoder(bps)
    with pytest.raises(SpeechCodecError, match="perceptual"):
        speechcodec.load("sc-3k").stream_encoder()
    with pytest.raises(SpeechCodecError, match="packet loss"):
        loss_pattern(10, 1.0)


def test_opus_conceals_the_same_losses():
    audio = synth_speech(2.0, seed=5)
    opus = OpusCodec(12000)
    data = opus.encode(audio, 16000)
    lost = loss_pattern(opus.packet_count(data), 0.2, seed=1)
    assert lost.sum() > 0
    clean, _ = opus.decode(data)
    lossy, _ = opus.decode(data, lost)
    assert len(lossy) == len(clean) == len(audio) and np.abs(lossy - clean).max() > 1e-3
    with pytest.raises(SpeechCodecError, match="loss flags"):
        opus.decode(data, lost[:-1])


def test_loopback_keeps_length_and_alignment(tiny):
    audio = synth_speech(2.0, seed=6)
    clean, stats = loopback(tiny, audio, 12000, 0.0)
    assert len(clean) == len(audio) and stats["lost"] == 0 and abs(stats["bitrate_bps"] / 12000 - 1) < 0.03
    lossy, stats = loopback(tiny, audio, 12000, 0.2, seed=3)
    assert stats["lost"] == int(loss_pattern(stats["packets"], 0.2, 3).sum()) > 0
    assert len(lossy) == len(audio) and np.isfinite(lossy).all()


def test_cli_stream_encode_decode_pipe(speech_path, tmp_path):
    x, _ = sf.read(speech_path, dtype="int16")
    raw = x.astype("<i2").tobytes()
    enc = run_cli("stream-encode", "--bitrate", "12k", stdin=raw)
    assert enc.returncode == 0, enc.stderr
    assert "packets at pc-12k" in enc.stderr
    dec = run_cli("stream-decode", stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    frames = -(-len(x) // HOP) + 1
    assert len(dec.stdout) == 2 * HOP * frames and f"{frames} frames" in dec.stderr
    pcm = np.frombuffer(dec.stdout, "<i2").astype(np.float32) / 32768
    codec = speechcodec.load("pc")
    want = codec.decode_packets(codec.encode_packets(x.astype(np.float32) / 32768, 12000))
    assert np.abs(pcm[HOP:HOP + len(want)] - want).max() <= 1.5 / 32768
    saved = tmp_path / "speech.scpk"
    saved.write_bytes(enc.stdout)
    info = run_cli("info", "--json", saved)
    facts = json.loads(info.stdout)
    assert facts["packets"] == frames and facts["algorithmic_delay_ms"] == 40 and facts["model"] == "pc"
    assert abs(facts["bitrate_kbps"] / 12 - 1) < 0.02 and facts["largest_packet_bytes"] <= 30 + SLACK_BYTES
    # a saved packet stream decodes as a file: what the live decoder played, without its 20 ms lag
    done = run_cli("decode", saved, tmp_path / "call.wav")
    assert done.returncode == 0, done.stderr
    call, _ = sf.read(tmp_path / "call.wav", dtype="float32")
    assert len(call) == HOP * (frames - 1) and np.abs(call - pcm[HOP:]).max() <= 1.5 / 32768
    # a pipe cut inside a packet, and one that is not a packet stream: one line each
    bad_pipes = ((enc.stdout[:-7], "ends inside a packet"), (b"RIFF1234", "no SCPK magic"), (b"", "empty"))
    for stdin, says in bad_pipes:
        bad = run_cli("stream-decode", stdin=stdin)
        assert bad.returncode == 1 and says in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
        assert "Traceback" not in bad.stderr


def test_cli_loopback(speech_path, tmp_path):
    out = tmp_path / "heard.wav"
    done = run_cli("loopback", speech_path, out, "--loss", "10%", "--bitrate", "6k")
    assert done.returncode == 0, done.stderr
    y, rate = sf.read(out)
    x, _ = sf.read(speech_path)
    assert rate == 16000 and len(y) == len(x)
    assert "lost (10% asked)" in done.stderr
    for args, says in ((("--loss", "1.5"), "--loss"), (("--model", "sc-6k"), "perceptual"),
                       (("--bitrate", "2k"), "a stream codes")):
        bad = run_cli("loopback", speech_path, tmp_path / "x.wav", *args)
        assert bad.returncode == 1 and says in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / "x.wav").exists()
