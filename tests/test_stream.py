"""Streaming the perceptual family: 20 ms packets, the file decoder's result, 40 ms of delay,
losses concealed, bad packets survived, and the stream-encode / stream-decode / loopback commands."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechcodec
from conftest import run_cli, synth_speech
from speechcodec.baselines.opus import OpusCodec
from speechcodec.bitstream import pipe
from speechcodec.bitstream.pipe import MAX_GAP_PACKETS, Sequencer
from speechcodec.errors import AudioInputError, BitstreamError, SpeechCodecError, UnsupportedVersionError
from speechcodec.model.config import ModelConfig
from speechcodec.modelfile import load_model_file, save_model
from speechcodec.perceptual import comb, packets
from speechcodec.perceptual.codec import PerceptualCodec
from speechcodec.perceptual.network import Enhancer
from speechcodec.perceptual.stream import (
    ALGORITHMIC_DELAY_MS,
    SLACK_BYTES,
    decode_all,
    decode_pipe,
    encode_pipe,
    largest_packet_bytes,
    loopback,
    loss_pattern,
    packet_budget_bytes,
)
from speechcodec.transform.mdct import HOP

DATA = Path(__file__).parent / "data"


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
def test_vbr_holds_its_bounds_and_meets_the_rate(tiny, bps):
    """VBR (the default): no packet over 3 times the mean, no second (50 packets) over 5 % above
    the rate; on sound without pauses the stream's mean is the rate within 1 %."""
    stream = tiny.encode_packets(synth_speech(4.0, seed=2), bps)
    sizes = np.array([len(p) for p in stream])
    mean = bps * 0.02 / 8
    assert sizes.max() <= largest_packet_bytes(bps) == int(3 * mean)
    assert np.convolve(sizes, np.ones(50), "valid").max() <= 1.05 * 50 * mean
    assert len(set(sizes.tolist())) > 10  # variable: each frame takes what it needs
    steady = np.random.default_rng(1).uniform(-0.3, 0.3, 16000 * 6)
    sizes = np.array([len(p) for p in tiny.encode_packets(steady, bps)])
    assert abs(sizes.mean() / mean - 1) < 0.01


@pytest.mark.parametrize("bps", [6000, 12000, 24000])
def test_cbr_keeps_each_packet_within_its_bytes(tiny, bps):
    stream = tiny.encode_packets(synth_speech(4.0, seed=2), bps, cbr=True)
    sizes = np.array([len(p) for p in stream])
    budget = packet_budget_bytes(bps)
    assert sizes.max() <= budget + SLACK_BYTES == largest_packet_bytes(bps, cbr=True)
    assert sizes.mean() <= budget
    # a packet falls short of its bytes only where the step can go no finer (quiet frames)
    levels, steps = None, []
    for p in stream:
        frame, levels, _ = packets.unpack(p, levels)
        steps.append(frame.step)
    coarse = np.array(steps) > packets.step_of(0)
    assert coarse.sum() > len(stream) // 2 and sizes[coarse].mean() >= 0.95 * budget


@pytest.mark.parametrize("make", ["noise", "clicks", "silence-then-noise"])
def test_vbr_bounds_hold_for_any_input(tiny, make):
    """The bounds are the rate control's, not the speech's: full-scale noise, clicks, and noise
    after a long silence (where a controller that banked the silence's bytes would burst)."""
    rng = np.random.default_rng(0)
    x = {"noise": rng.uniform(-1, 1, 48000),
         "clicks": np.where(rng.random(48000) < 0.002, 1.0, 0.0),
         "silence-then-noise": np.concatenate([np.zeros(48000), rng.uniform(-1, 1, 32000)])}[make]
    for bps in (6000, 24000):
        sizes = np.array([len(p) for p in tiny.encode_packets(x, bps)])
        mean = bps * 0.02 / 8
        assert sizes.max() <= largest_packet_bytes(bps)
        assert np.convolve(sizes, np.ones(50), "valid").max() <= 1.05 * 50 * mean


def test_a_packet_is_as_long_as_its_range_coder_needs(tiny):
    """No head and no word padding: a packet one byte shorter (its last byte dropped) no longer
    decodes to the same frame, and the sizes are not whole 32-bit words."""
    stream = tiny.encode_packets(synth_speech(2.0, seed=3), 12000)
    sizes = [len(p) for p in stream]
    assert len({s % 4 for s in sizes}) == 4
    levels = None
    for p in stream:
        frame, now, _ = packets.unpack(p, levels)
        try:
            shorter = packets.unpack(p[:-1], levels)[0]
            assert shorter.step != frame.step or not np.array_equal(shorter.symbols, frame.symbols)
        except BitstreamError:
            pass
        levels = now


def test_packets_dequantised_together_are_each_dequantised_alone(tiny):
    """The file decoder dequantises every packet in one pass (``packets.dequantised``); the
    numbers are those of each packet alone (``packets.unpack``, as a stream decoder does), bit
    for bit, noise fill included (each frame's from its own packet's seed)."""
    stream = tiny.encode_packets(synth_speech(3.0, seed=4), 6000)
    reads, alone, levels = [], [], None
    for p in stream:
        reads.append(packets.read(p, levels))
        frame, levels, _ = packets.unpack(p, levels)
        alone.append(frame)
    together = packets.dequantised(reads)
    filled = 0
    for t, frame in enumerate(alone):
        assert together.step[t, 0] == frame.step
        for name in ("symbols", "level_qo", "coefficients", "units", "band_levels_qo"):
            np.testing.assert_array_equal(getattr(together, name)[t], getattr(frame, name)[0])
        filled += bool(np.any((frame.symbols[0] == 0) & (frame.coefficients[0] != 0)))
    assert 0 < filled < len(stream)  # some frames have bands of noise fill, some none


def test_the_encoder_rounds_for_rate_and_distortion_and_the_decoder_reads_it_as_ever():
    """A packet's symbols are its frame at its step rounded as the encoder rounds: below
    RD_BINS for rate and distortion (some one nearer zero than plain rounding, each where that
    saved more bits than it cost), plainly above; and its estimated size is that of those symbols."""
    from speechcodec.transform.mdct import odft
    from speechcodec.transform.quantiser import COEFFICIENT_OFFSET, rd_symbols, scale_index

    spectra = odft(synth_speech(1.0, seed=5))
    moved = 0
    for spectrum in spectra[10:20]:
        a = packets.analyse(spectrum)
        code = packets.fitting_code(a, 30)
        frame, _, _ = packets.unpack(packets.payload_at(a, code))
        units = a.normalised * 2.0 ** (-packets.step_of(code) / 64)
        index = scale_index(a.index_base, packets.step_of(code), COEFFICIENT_OFFSET)
        np.testing.assert_array_equal(frame.symbols[0], packets.rounded(units, index))
        np.testing.assert_array_equal(frame.symbols[0, :packets.RD_BINS], rd_symbols(
            units[:packets.RD_BINS], index[:packets.RD_BINS], packets.RD_BIT_WEIGHT))
        np.testing.assert_array_equal(frame.symbols[0, packets.RD_BINS:], np.rint(units[packets.RD_BINS:]))
        moved += int(np.count_nonzero(frame.symbols[0] != np.rint(units)))
        assert packets.estimated_bits(a, np.array([code]))[0] == pytest.approx(
            a.energy_bits + packets.TABLES.bits(frame.symbols[0], index))
    assert moved > 0


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
    """Three packets lost: their 60 ms are concealed (not silence), and the output is the
    lossless one again within the stated bound: the next intra packet (at most
    ``STREAM_INTRA_INTERVAL`` packets on), the network's memory after it, and the low-band comb's (at
    12 kbps it runs). The file decoder conceals the same losses the same way."""
    stream = pc.encode_packets(speech, 12000)
    clean = np.concatenate([d.pull(p) for d in [pc.stream_decoder()] for p in stream])
    dec = pc.stream_decoder()
    lossy = np.concatenate([dec.pull(None if 40 <= i < 43 else p) for i, p in enumerate(stream)])
    assert dec.lost == 3 and len(lossy) == len(clean)
    concealed = lossy[41 * HOP:43 * HOP]
    assert np.sqrt(np.mean(concealed ** 2)) > 0.1 * np.sqrt(np.mean(clean[41 * HOP:43 * HOP] ** 2))
    settled = (43 + packets.STREAM_INTRA_INTERVAL + pc.enhancer.context_frames + comb.MEMORY_FRAMES + 1) * HOP
    assert np.abs(lossy[settled:] - clean[settled:]).max() < 1e-5
    assert np.abs(lossy[40 * HOP:43 * HOP] - clean[40 * HOP:43 * HOP]).max() > 1e-3
    whole = pc.decode_packets([None if 40 <= i < 43 else p for i, p in enumerate(stream)])
    assert np.abs(lossy[HOP:] - whole).max() < 1e-5


def test_bad_packets_are_concealed_or_decoded_never_a_crash(tiny):
    """A packet has no check of its own (the framing's CRC is for accidents): whatever bytes
    come, the decoder gives 320 finite samples within full scale, conceals what does not
    decode, and a packet that is not bytes at all is concealed too."""
    stream = tiny.encode_packets(synth_speech(1.0, seed=4), 12000)
    dec = tiny.stream_decoder()
    assert len(dec.pull(stream[0])) == HOP
    assert len(dec.pull("not bytes")) == HOP and dec.damaged == 1 and dec.lost == 1
    rng = np.random.default_rng(0)
    for _ in range(300):  # random bytes: decoded or concealed, never an exception
        junk = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        out = dec.pull(junk)
        assert len(out) == HOP and np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert dec.frames == 302


def test_stream_api_refuses_bad_input_with_one_line(tiny):
    enc = tiny.stream_encoder(12000)
    with pytest.raises(AudioInputError, match="mono"):
        enc.push(np.zeros((2, 320), np.float32))
    with pytest.raises(AudioInputError, match="NaN"):
        enc.push(np.array([0.0, np.nan]))
    with pytest.raises(AudioInputError, match="numbers"):
        enc.push(["a", "b"])
    with pytest.warns(UserWarning, match="clipped") as said:
        enc.push(np.full(700, 3.0))
        enc.push(np.full(700, -3.0))
    assert len(said) == 1 and enc.clipped == 1400  # one warning a stream
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loud = tiny.encode_packets(np.full(3200, 50.0), 12000)
    assert loud == tiny.encode_packets(np.full(3200, 1.0), 12000)  # beyond full scale costs no bytes
    enc.flush()
    with pytest.raises(SpeechCodecError, match="flushed"):
        enc.push(np.zeros(320))
    for bps in (1000, 100000, 12000.5):
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
    assert len(clean) == len(audio) and stats["lost"] == 0 and 0.9 < stats["bitrate_bps"] / 12000 <= 1.05
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
    assert abs(facts["bitrate_kbps"] / 12 - 1) < 0.04 and facts["rate_control"] == "vbr"
    assert facts["largest_packet_bytes"] <= facts["largest_packet_allowed_bytes"] == 90
    assert facts["postfilter"] == "low-band pitch comb (g 0.1 below 3 kHz)"  # 12 kbps: the decoder combs
    assert facts["intra_packets"] == frames  # live: every packet intra
    # the framing (header, and a page per packet: sync, sequence number, count, length, CRC32) apart
    assert facts["framing_bytes"] == facts["num_bytes"] - facts["payload_bytes"] > 9 * frames
    # a saved packet stream decodes as a file: what the live decoder played, without its 20 ms lag
    done = run_cli("decode", saved, tmp_path / "call.wav")
    assert done.returncode == 0, done.stderr
    call, _ = sf.read(tmp_path / "call.wav", dtype="float32")
    assert len(call) == HOP * (frames - 1) and np.abs(call - pcm[HOP:]).max() <= 1.5 / 32768
    # a pipe cut inside a packet, and one that is not a packet stream: one line each
    bad_pipes = ((enc.stdout[:-7], "ends inside a page"), (b"RIFF1234", "no SCPK magic"), (b"", "empty"))
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
    for args, says in ((("--loss", "1.5"), "--loss"), (("--model", "sc-3k"), "perceptual"),
                       (("--bitrate", "1k"), "codes 2000 to 64000 bps")):
        bad = run_cli("loopback", speech_path, tmp_path / "x.wav", *args)
        assert bad.returncode == 1 and says in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / "x.wav").exists()


def _page_stream(pages) -> list:
    """What a Sequencer makes of pages given as (first sequence number, [packet or None])."""
    from speechcodec.bitstream.pipe import Page

    seq = Sequencer()
    return list(seq.packets(Page(first, [p or b"" for p in ps]) for first, ps in pages)), seq


def test_the_sequence_numbers_say_what_was_lost_late_or_repeated():
    """Gaps of any size (128 and more too) are concealed (up to a second of them), a 16-bit wrap
    is no gap, a packet behind the one expected is dropped, a zero-length packet is a loss."""
    got, seq = _page_stream([(0, [b"a", b"b"]), (5, [b"c"]), (3, [b"late"]), (5, [b"again"]),
                             (6, [None, b"d"])])
    assert got == [b"a", b"b", None, None, None, b"c", None, b"d"] and seq.lost == 4 and seq.late == 2
    got, _ = _page_stream([(65534, [b"a", b"b"]), (0, [b"c"])])  # 65534, 65535, 0: no gap
    assert got == [b"a", b"b", b"c"]
    got, _ = _page_stream([(10, [b"a"]), (10 + 200, [b"b"])])  # a gap of 199: a second concealed
    assert got == [b"a"] + [None] * MAX_GAP_PACKETS + [b"b"]
    got, _ = _page_stream([(100, [b"a"]), (100 + 40000, [b"b"])])  # more than half the range: behind
    assert got == [b"a"]
    # a stray page far ahead (a forged one, or the sender's count reset): the good packets after
    # it are behind; the first is dropped, the second followed, and the stream goes on
    got, seq = _page_stream([(10, [b"a"]), (3000, [b"stray"]), (11, [b"b"]), (12, [b"c"]), (13, [b"d"])])
    assert got == [b"a"] + [None] * MAX_GAP_PACKETS + [b"stray", b"c", b"d"] and seq.late == 1


def test_a_file_is_the_packets_of_a_call(tiny):
    """One encoder, one decoder: a file holds the packets a stream encoder makes (told to send an
    intra packet every 8, as a file's encoder does), framed in pages of a second, and decodes to
    what a stream decoder plays (320 samples earlier), within 1e-5. Its bitrate counts the
    packets; the framing is apart."""
    x = synth_speech(3.0, seed=8)
    data = tiny.encode(x, 16000)
    stream = tiny.encode_packets(x, intra_interval=packets.FILE_INTRA_INTERVAL)
    assert tiny.packets_of(data) == stream
    assert tiny.payload_bytes(data) == sum(map(len, stream)) < len(data)
    y, rate = tiny.decode(data)
    dec = tiny.stream_decoder()
    played = np.concatenate([dec.pull(p) for p in stream])
    assert rate == 16000 and len(y) == len(x) and np.abs(y - played[HOP:HOP + len(x)]).max() < 1e-5


def test_a_damaged_page_is_concealed_as_the_call_would_conceal_it(tiny, tmp_path):
    """A flipped bit in a file's packets: that page's second is concealed (the page after says
    how many packets were lost), by ``decode`` and ``stream-decode`` alike; nothing raises."""
    data = bytearray(tiny.encode(synth_speech(3.0, seed=8), 16000))
    stream = tiny.packets_of(bytes(data))
    header = len(data) - sum(len(pipe.page_bytes(i, stream[i:i + 50])) for i in range(0, len(stream), 50))
    data[header + len(pipe.page_bytes(0, stream[:50])) + 100] ^= 0x08  # in the second page's packets
    y, _ = tiny.decode(bytes(data))
    assert tiny.last_decode["damaged_pages"] == 1 and tiny.last_decode["lost"] == 50
    assert len(y) == 48000 and np.isfinite(y).all()
    whole = tiny.decode_packets(stream[:50] + [None] * 50 + stream[100:])
    assert np.abs(y - whole[:48000]).max() < 1e-6
    saved = tmp_path / "damaged.spcd"
    saved.write_bytes(bytes(data))
    env = {"SPEECHCODEC_MODEL_PATH": str(tmp_path)}
    _tiny(tmp_path)  # installed, so that the file's name finds it
    played = run_cli("stream-decode", stdin=bytes(data[:header]) + bytes(data[header:]), env=env)
    assert played.returncode == 0, played.stderr
    pcm = np.frombuffer(played.stdout, "<i2").astype(np.float32) / 32768
    assert "50 lost" in played.stderr and np.abs(pcm[HOP:HOP + 48000] - y).max() <= 1.5 / 32768


def test_older_files_still_decode_and_older_pipes_say_what_to_do(pc):
    """A perceptual file of container format 3 (before packets) decodes as it did; a packet
    stream of pipe format 1 fails in one line that says to re-encode it."""
    data = (DATA / "pc-format3.spcd").read_bytes()
    want, _ = sf.read(DATA / "pc-format3.wav", dtype="float32")
    y, rate = speechcodec.decode(data)
    assert rate == 16000 and len(y) == len(want) and np.abs(y - want).max() <= 1.5 / 32768
    with pytest.raises(UnsupportedVersionError, match="format 1.*re-encode"):
        speechcodec.decode((DATA / "pc-pipe1.scpk").read_bytes())
    bad = run_cli("stream-decode", stdin=(DATA / "pc-pipe1.scpk").read_bytes())
    assert bad.returncode == 1 and "re-encode" in bad.stderr and "Traceback" not in bad.stderr


def test_inter_packets_decode_as_the_stream_decoder_plays_them(tiny):
    """Inter packets (band energies predicted from the packet before), an intra one every 8: the
    file decoder and a stream decoder read them alike, and fewer bytes of energies go into them.
    After a loss the inter packets are concealed (``skipped``) up to the next intra packet, and
    the output is the lossless one again within the bound that interval sets."""
    x = synth_speech(3.0, seed=9)
    every = tiny.encode_packets(x, 12000, cbr=True)
    stream = tiny.encode_packets(x, 12000, cbr=True, intra_interval=8)
    assert [packets.is_intra(p) for p in stream] == [i % 8 == 0 for i in range(len(stream))]
    assert all(packets.is_intra(p) for p in every) and stream != every
    dec = tiny.stream_decoder()
    played = np.concatenate([dec.pull(p) for p in stream])
    assert np.abs(played[HOP:] - tiny.decode_packets(stream)).max() < 1e-5 and dec.skipped == 0
    lossy = [None if i == 50 else p for i, p in enumerate(stream)]  # the next intra packet: 56
    dec = tiny.stream_decoder()
    heard = np.concatenate([dec.pull(p) for p in lossy])
    assert dec.lost == 6 and dec.skipped == 5 and dec.damaged == 0
    whole, counts = decode_all(tiny, lossy)
    assert counts == {"lost": 1, "damaged": 0, "skipped": 5} and np.abs(heard[HOP:] - whole).max() < 1e-5
    settled = (56 + tiny.enhancer.context_frames + comb.MEMORY_FRAMES + 1) * HOP
    assert np.abs(heard[settled:] - played[settled:]).max() < 1e-5
    assert np.abs(heard[50 * HOP:56 * HOP] - played[50 * HOP:56 * HOP]).max() > 1e-3


def test_a_file_sends_an_intra_packet_every_8_and_a_call_every_packet(tiny, tmp_path):
    """The encoders' defaults, as the CLI's help states them: a file (no loss) takes inter packets
    with an intra one every :data:`packets.FILE_INTRA_INTERVAL`, a stream every packet intra;
    ``--intra-interval`` sets it, within 1 .. 250."""
    x = synth_speech(2.0, seed=3)
    filed = tiny.packets_of(tiny.encode(x, 16000))
    every = packets.FILE_INTRA_INTERVAL
    assert [packets.is_intra(p) for p in filed] == [i % every == 0 for i in range(len(filed))]
    assert every == 8 and packets.STREAM_INTRA_INTERVAL == 1
    assert all(packets.is_intra(p) for p in tiny.encode_packets(x))
    assert all(packets.is_intra(p) for p in tiny.packets_of(tiny.at(12000, intra_interval=1).encode(x, 16000)))
    for bad in (0, 251, 2.5, True):
        with pytest.raises(SpeechCodecError, match="intra interval"):
            tiny.stream_encoder(intra_interval=bad)
    for command, default in (("encode", every), ("stream-encode", packets.STREAM_INTRA_INTERVAL)):
        assert f"(default: {default})" in " ".join(run_cli(command, "--help").stdout.split())
    wav, out = tmp_path / "x.wav", tmp_path / "x.spcd"
    sf.write(wav, x, 16000)
    bad = run_cli("encode", str(wav), str(out), "--model", "pc", "--bitrate", "12k", "--intra-interval", "0")
    assert bad.returncode == 1 and "intra interval is 1 to 250" in bad.stderr and not out.exists()


def test_the_low_band_comb_finds_the_pitch_and_leaves_the_rest():
    """The decoder's postfilter: the lag of a 125 Hz voice (not a multiple of it); a whole signal
    combed at once is what a stream decoder's blocks give, bit for bit; noise, silence and the
    band above the low-pass pass (nearly) as they are; on only in streams of 16 kbps or less."""
    rate, n = 16000, 320 * 40
    t = np.arange(n) / rate
    voice = sum(np.sin(2 * np.pi * 125 * k * t) / k for k in range(1, 12))
    lag, r = comb.pitch(voice[:2 * 320])
    assert lag == 128 and r > 0.95
    rng = np.random.default_rng(0)
    signal = 0.3 * voice + 0.05 * rng.standard_normal(n)
    whole = comb.comb_signal(signal, comb.GAIN, comb.CUTOFF_HZ, comb.ORDER)
    stream = comb.LowBandComb(comb.GAIN, comb.CUTOFF_HZ, comb.ORDER)
    np.testing.assert_array_equal(whole, np.concatenate([stream(b) for b in signal.reshape(-1, 320)]))
    # the comb takes noise out between the harmonics below the low-pass, and little above it
    change = np.abs(np.fft.rfft(whole[3200:] - signal[3200:])) ** 2
    freq = np.fft.rfftfreq(n - 3200, 1 / rate)
    assert change[freq < 2000].sum() > 30 * change[freq > 5000].sum()
    noise = rng.standard_normal(n)
    np.testing.assert_array_equal(comb.comb_signal(noise, 0.1, 3000.0, 4), noise)  # unvoiced: as is
    np.testing.assert_array_equal(comb.comb_signal(np.zeros(n), 0.1, 3000.0, 4), np.zeros(n))
    with pytest.raises(ValueError, match="whole hops"):
        stream(np.zeros(100))
    assert comb.for_bitrate(6000) is not None and comb.for_bitrate(12000) is not None
    assert comb.for_bitrate(24000) is None


def test_the_decoder_combs_as_the_streams_header_says(tiny):
    """Whether the decoder combs follows the stream's bitrate (its header's), not the rate the
    decoding codec was loaded at: a file and a pipe at 24 kbps decode without it, at 6 kbps with it."""
    audio = synth_speech(3.0, seed=5)
    for bps in (24000, 6000):
        packets_ = tiny.encode_packets(audio, bps, intra_interval=packets.FILE_INTRA_INTERVAL)  # a file's
        plain = tiny.at(24000).decode_packets(packets_)  # no comb
        combed = tiny.at(6000).decode_packets(packets_)
        assert np.abs(plain - combed).max() > 1e-3
        want = plain if bps > 16000 else combed
        decoded, _ = tiny.at(12000).decode(tiny.at(bps).encode(audio, 16000))
        assert np.abs(decoded - want[:len(audio)]).max() < 1e-5
        src = io.BytesIO()
        encode_pipe(tiny.at(bps), io.BytesIO((audio * 32767).astype("<i2").tobytes()), src)
        src.seek(0)
        header = pipe.read_header(src)
        out = io.BytesIO()
        decode_pipe(tiny.at(12000), src, out, header.bitrate_bps)
        played = np.frombuffer(out.getvalue(), "<i2").astype(np.float32) / 32768
        again = tiny.at(bps).decode_packets(tiny.encode_packets(
            (audio * 32767).astype("<i2").astype(np.float32) / 32768, bps))
        assert np.abs(played[HOP:HOP + len(again)] - again).max() <= 1.5 / 32768
