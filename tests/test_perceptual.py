"""The perceptual family: the textbook coder's frames in packets, decoded through a network."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import speechcodec
from conftest import run_cli, synth_speech
from speechcodec.bitstream import pipe
from speechcodec.errors import BitstreamError, ModelError, TruncatedBitstreamError
from speechcodec.model.config import ModelConfig
from speechcodec.modelfile import load_model_file, save_model
from speechcodec.perceptual import packets
from speechcodec.perceptual.codec import PerceptualCodec
from speechcodec.perceptual.frames import DecodedChunk
from speechcodec.perceptual.network import Enhancer
from speechcodec.transform.mdct import HOP, imdct, odft

RATES = [6000, 12000, 24000]
FILL_CODE = 150  # a step at which this sound leaves some bands empty, not all


def _model(folder, name="tiny-pc", identity=False, seed=0, **config) -> object:
    torch.manual_seed(seed)
    net = Enhancer(ModelConfig(arch="perceptual", code_channels=320, width=16, res_blocks=2, **config))
    if not identity:  # the head starts at zero (the identity); give it something to do
        torch.nn.init.normal_(net.body[-1].weight, std=0.05)
    return save_model(folder / f"{name}.safetensors", net, None, name,
                      {"bitrate_bps": 12000, "bitrates_bps": RATES})


@pytest.fixture(scope="module")
def pc(tmp_path_factory):
    return PerceptualCodec(load_model_file(_model(tmp_path_factory.mktemp("pc"))), threads=1)


def _packets_at(audio: np.ndarray, code: int) -> list[bytes]:
    """Intra packets of ``audio`` all at one step code (no rate control)."""
    return [packets.payload_at(packets.analyse(spectrum), code) for spectrum in odft(audio)]


def _pieces(chunk, parts: int) -> list:
    """A DecodedChunk of many frames cut into ``parts`` runs of frames."""
    cuts = np.linspace(0, len(chunk.symbols), parts + 1).astype(int)
    names = ("step", "symbols", "level_qo", "coefficients", "units", "band_levels_qo")
    return [DecodedChunk(chunk.settings, *(getattr(chunk, n)[a:b] for n in names))
            for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


@pytest.mark.parametrize("bps", RATES)
def test_one_model_meets_every_rate_from_the_bytes(pc, bps):
    """The rate counts the packets (the framing apart): at most the rate asked, and near it
    (this speech-like sound pauses, and a pause takes what it needs)."""
    audio = synth_speech(4.0, seed=3)
    data = pc.at(bps).encode(audio, 16000)
    assert 0.8 < pc.payload_bytes(data) * 8 / 4.0 / bps <= 1.01
    header = pipe.read_header(io.BytesIO(data))
    assert header.bitrate_bps == bps and header.model == "tiny-pc" and header.num_samples == len(audio)
    assert pc.at(bps).name == f"tiny-pc-{bps // 1000}k"
    decoded, rate = pc.decode(data)
    assert rate == 16000 and decoded.shape == audio.shape and np.isfinite(decoded).all()


def test_with_the_identity_network_it_is_the_textbook_decoder(tmp_path):
    """A network that changes nothing gives the textbook decoder's output on the same packets: the
    family is the textbook frames plus the network, and at 16 kbps or less the low band's pitch
    comb on the decoded speech (over the 320 samples before the first too), nothing else."""
    from speechcodec.perceptual import comb

    identity = PerceptualCodec(load_model_file(_model(tmp_path, identity=True)), threads=1)
    audio = synth_speech(2.0, seed=1)
    for bps in (24000, 12000):
        codec = identity.at(bps)
        data = codec.encode(audio, 16000)
        textbook = codec.frames_of(data)
        if bps > comb.MAX_BITRATE_BPS:
            expected = imdct(textbook.coefficients, len(audio), HOP)
        else:
            n = -(-len(audio) // HOP) * HOP + HOP
            whole = imdct(np.concatenate([np.zeros((1, HOP)), textbook.coefficients]), n, HOP)
            expected = comb.comb_signal(whole, comb.GAIN, comb.CUTOFF_HZ, comb.ORDER)[HOP:HOP + len(audio)]
            assert np.abs(expected - imdct(textbook.coefficients, len(audio), HOP)).max() > 1e-3  # it combs
        np.testing.assert_allclose(codec.decode(data)[0], np.clip(expected, -1, 1), atol=1e-6)


def test_chunked_decoding_is_the_network_over_the_whole_signal(tmp_path):
    """Each run of frames goes through the network with the frames before it as context: what one
    run over every frame gives."""
    codec = PerceptualCodec(load_model_file(_model(tmp_path)), threads=1)
    pieces = _pieces(codec.frames_of(codec.encode(synth_speech(3.0, seed=2), 16000)), 6)
    assert len({int(s) for s in np.concatenate([p.step for p in pieces]).ravel()}) > 1  # a step a frame
    chunked = np.concatenate(codec.corrected_units(pieces))
    whole = codec.run_network(np.concatenate([codec.network_input(p) for p in pieces]))
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-5)
    assert np.abs(whole - np.concatenate([p.units for p in pieces])).max() > 1e-3  # it did something


def test_the_network_changes_the_output_and_sees_no_later_frame(pc):
    audio = synth_speech(2.0, seed=4)
    data = pc.encode(audio, 16000)
    textbook = pc.frames_of(data)
    plain = np.clip(imdct(textbook.coefficients, len(audio), HOP), -1, 1)
    assert np.abs(pc.decode(data)[0] - plain).max() > 1e-4
    t = torch.randn(1, 657, 40)
    with torch.inference_mode():
        full = pc.enhancer(t[:, :320], t[:, 320:640], t[:, 640:656], t[:, 656:])
        t2 = t.clone()
        t2[..., 25:] = torch.randn(1, 657, 15)
        cut = pc.enhancer(t2[:, :320], t2[:, 320:640], t2[:, 640:656], t2[:, 656:])
    torch.testing.assert_close(full[..., :25], cut[..., :25])


def test_cut_damaged_and_forged_files(pc):
    """A cut file fails in one line; a damaged page (its CRC fails) is concealed; a page forged
    with its CRC recomputed decodes to bounded, finite audio; a damaged header fails."""
    data = bytearray(pc.encode(synth_speech(2.0), 16000))
    for bad in (data[:-20], data[:70]):
        with pytest.raises(TruncatedBitstreamError):
            pc.decode(bytes(bad))
    flipped = bytearray(data)
    flipped[-30] ^= 0x40
    y, _ = pc.decode(bytes(flipped))
    assert len(y) == 32000 and pc.last_decode["damaged_pages"] == 1
    head = bytearray(data)
    head[12] ^= 0x01
    with pytest.raises(BitstreamError, match="header is damaged"):
        pc.decode(bytes(head))
    # the second page's packets replaced by noise, its CRC made right: decoded, never out of range
    src = io.BytesIO(bytes(data))
    pipe.read_header(src)
    first = len(data) - len(src.read()) + len(pipe.page_bytes(0, pc.packets_of(bytes(data))[:50]))
    rng = np.random.default_rng(0)
    packets_ = pc.packets_of(bytes(data))
    forged = [rng.integers(0, 256, len(p), dtype=np.uint8).tobytes() or b"x" for p in packets_[50:100]]
    page = pipe.page_bytes(50, forged)
    forged_data = bytes(data[:first]) + page + bytes(data[first + len(page):])
    y, _ = pc.decode(forged_data)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 and pc.last_decode["damaged_pages"] == 0


def test_a_perceptual_model_file_holds_no_tables(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _model(tmp_path)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    assert "entropy.pmf" not in tensors
    tensors["entropy.pmf"] = torch.ones(1, 3, dtype=torch.int32)
    save_file(tensors, str(tmp_path / "odd.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="holds no entropy tables"):
        load_model_file(tmp_path / "odd.safetensors")


def test_one_file_is_listed_at_each_of_its_rates_and_decodes_by_its_name(tmp_path, monkeypatch):
    _model(tmp_path)
    monkeypatch.setenv("SPEECHCODEC_MODEL_PATH", str(tmp_path))
    listed = {m["name"]: m["bitrate_bps"] for m in speechcodec.list_models() if m["model"] == "tiny-pc"}
    assert listed == {"tiny-pc-6k": 6000, "tiny-pc-12k": 12000, "tiny-pc-24k": 24000}
    codec = speechcodec.load("tiny-pc-24k")
    assert codec.bitrate_bps == 24000 and speechcodec.load("tiny-pc").bitrate_bps == 12000
    data = codec.encode(synth_speech(1.0), 16000)
    audio, rate = speechcodec.decode(data)
    assert rate == 16000 and len(audio) == 16000
    with pytest.raises(speechcodec.SpeechCodecError, match="codes 2000 to 64000 bps"):
        codec.at(100)


def test_cli_codes_a_perceptual_model_at_the_rate_asked(tmp_path, synth_corpus):
    _model(tmp_path)
    env = {"SPEECHCODEC_MODEL_PATH": str(tmp_path)}
    out = tmp_path / "speech.spcd"
    result = run_cli("encode", synth_corpus[0], out, "--model", "tiny-pc", "--bitrate", "9k", env=env)
    assert result.returncode == 0, result.stderr
    assert "kbps of packets" in result.stderr and "bytes of framing" in result.stderr
    result = run_cli("decode", out, tmp_path / "back.wav", env=env)
    assert result.returncode == 0, result.stderr
    info = run_cli("info", out, "--json", env=env)
    facts = json.loads(info.stdout)
    assert info.returncode == 0 and facts["bitrate_asked_kbps"] == 9.0 and facts["rate_control"] == "vbr"
    assert 0.8 < facts["bitrate_kbps"] / 9 <= 1.01 and facts["framing_kbps"] > 0
    assert facts["intra_packets"] == -(-facts["packets"] // 8)  # a file: an intra packet every 8
    cbr = run_cli("encode", synth_corpus[0], out, "--model", "tiny-pc", "--bitrate", "9k", "--cbr",
                  "--intra-interval", "1", env=env)
    assert cbr.returncode == 0, cbr.stderr
    facts = json.loads(run_cli("info", out, "--json", env=env).stdout)
    assert facts["rate_control"] == "cbr" and facts["intra_packets"] == facts["packets"]
    listed = run_cli("models", env=env).stdout
    assert "tiny-pc-6k" in listed and "perceptual" in listed
    sc = run_cli("encode", synth_corpus[0], tmp_path / "x.spcd", "--model", "tiny-pc-6k", "--bitrate", "1k",
                 env=env)
    assert sc.returncode == 1 and "codes 2000 to 64000 bps" in sc.stderr and "Traceback" not in sc.stderr


def test_training_resumes_where_it_was_stopped_and_writes_a_model_that_codes(tmp_path, synth_corpus):
    from speechcodec.errors import TrainingError
    from speechcodec.perceptual.train import EnhancerTraining, train_enhancer

    cfg = EnhancerTraining(width=16, res_blocks=1, steps=6, decay_from=3, batch=2, crop_frames=16, bf16=False)
    work, out = tmp_path / "work", tmp_path / "mine.safetensors"

    def stop_at_four(line):
        if line.startswith("step 4:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_enhancer(synth_corpus, out, "mine", cfg, work, log=stop_at_four, log_every=1)
    assert torch.load(work / "checkpoint.pt", weights_only=True)["step"] == 4 and not out.exists()
    said = []
    train_enhancer(synth_corpus, out, "mine", cfg, work, log=said.append, log_every=1)
    assert said[0] == "resuming at step 4" and said[1].startswith("step 5:") and len(said) == 3
    codec = PerceptualCodec(load_model_file(out), threads=1)
    assert codec.info["train"]["steps"] == 6 and codec.bitrate_bps == 12000
    ramp = (codec.config.energy_full_step, codec.config.energy_none_step, codec.config.fill_gain16)
    assert ramp == (-250, -100, 20)
    audio = synth_speech(1.0)
    assert codec.decode(codec.encode(audio, 16000))[0].shape == audio.shape
    with pytest.raises(TrainingError, match="other settings"):
        train_enhancer(synth_corpus, out, "mine", EnhancerTraining(width=8, res_blocks=1), work)


def test_fine_steps_fill_the_empty_bands_louder(tmp_path):
    """``fill_gain16``: along the energy ramp, the bands that quantised to all zeros get the
    textbook decoder's noise fill times up to fill_gain16/16 (in proportion to the ramp's
    weight); the other bands keep the textbook decoder's energies. Off unless set."""
    from speechcodec.model.family import family_of
    from speechcodec.perceptual.frames import empty_bands
    from speechcodec.transform import bands

    assert "fill_gain16" not in ModelConfig(arch="perceptual", code_channels=320).to_dict()
    with pytest.raises(ValueError, match="fill_gain16"):
        ModelConfig(arch="perceptual", code_channels=320, fill_gain16=0)
    louder = PerceptualCodec(load_model_file(_model(tmp_path, name="louder", energy_full_step=1023,
                                                    energy_none_step=1024, fill_gain16=32)))
    assert "32/16 of the textbook decoder's noise fill" in family_of(louder.config).describe(louder.config)
    pieces = [louder.frames_of(_packets_at(synth_speech(2.0, seed=5), FILL_CODE))]
    empty = empty_bands(pieces[0].symbols, pieces[0].settings.layout)
    assert empty.any() and not empty.all()
    edges = np.asarray(bands.LAYOUTS["bark16"])[:-1]
    out = louder.enhance(pieces)
    np.testing.assert_allclose(out[empty], 2 * pieces[0].coefficients[empty], rtol=1e-9)
    filled = np.add.reduceat(empty, edges, axis=1) > 0
    energies = [np.add.reduceat(x ** 2, edges, axis=1)[~filled] for x in (out, pieces[0].coefficients)]
    np.testing.assert_allclose(*energies, rtol=1e-6, atol=1e-12)
    step = packets.step_of(FILL_CODE)
    half = PerceptualCodec(load_model_file(_model(tmp_path, name="half", energy_full_step=-300,
                                                  energy_none_step=step + (step + 300), fill_gain16=32)))
    assert half.energy_weight(step) == 0.5
    np.testing.assert_allclose(half.enhance(pieces)[empty], 1.5 * pieces[0].coefficients[empty], rtol=1e-9)


def test_a_further_round_starts_from_a_model(tmp_path, synth_corpus):
    """``init_from``: a run starts from a model's weights (a further round) and records the
    rounds before it; a model of another shape is refused in one line."""
    from speechcodec.errors import TrainingError
    from speechcodec.perceptual.train import EnhancerTraining, train_enhancer

    small = dict(width=16, res_blocks=1, batch=2, crop_frames=16, bf16=False)
    first = train_enhancer(synth_corpus, tmp_path / "a.safetensors", "a", EnhancerTraining(steps=3, **small),
                           tmp_path / "a.work", log=lambda line: None)
    said = []
    cfg = EnhancerTraining(steps=1, lr=1e-9, lr_end=1e-9, step_high=40, init_from=str(first), **small)
    second = train_enhancer(synth_corpus, tmp_path / "b.safetensors", "b", cfg, tmp_path / "b.work",
                            log=said.append)
    assert said == [f"starting from {first}"]
    assert load_model_file(second).info["earlier"][0]["fingerprint"] == load_model_file(first).fingerprint
    assert load_model_file(second).info["train"]["step_high"] == 40
    a, b = (load_model_file(m).state_dict for m in (first, second))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # one step at lr 1e-9 from its weights
    other = EnhancerTraining(steps=1, init_from=str(first), **dict(small, width=8))
    with pytest.raises(TrainingError, match="not a perceptual model of this shape"):
        train_enhancer(synth_corpus, tmp_path / "c.safetensors", "c", other, tmp_path / "c.work")


def test_a_one_rate_model_refuses_a_bitrate_beside_it(model_path_env, synth_corpus, tmp_path):
    result = run_cli("encode", synth_corpus[0], tmp_path / "x.spcd", "--model", "tiny-test", "--bitrate", "6k")
    assert result.returncode == 1 and "codes one rate" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.spcd").exists()


def test_fine_steps_keep_the_textbook_decoders_band_energies(tmp_path):
    """The energy ramp: full at steps at or below ``energy_full_step``, none at or above
    ``energy_none_step``, in proportion between; off unless set (old configs keep their fingerprint)."""
    from speechcodec.transform import bands

    assert "energy_full_step" not in ModelConfig(arch="perceptual", code_channels=320).to_dict()
    codec = PerceptualCodec(load_model_file(_model(tmp_path, energy_full_step=-300, energy_none_step=-100)))
    assert [codec.energy_weight(s) for s in (-400, -300, -200, -100, 0)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    always = PerceptualCodec(load_model_file(_model(tmp_path, name="always", energy_full_step=1023,
                                                    energy_none_step=1024)))
    pieces = [always.frames_of(always.encode(synth_speech(2.0, seed=5), 16000))]
    edges = np.asarray(bands.LAYOUTS["bark16"])[:-1]
    kept = np.add.reduceat(always.enhance(pieces) ** 2, edges, axis=1)
    textbook = np.add.reduceat(pieces[0].coefficients ** 2, edges, axis=1)
    np.testing.assert_allclose(kept, textbook, rtol=1e-6, atol=1e-12)
    plain = PerceptualCodec(load_model_file(_model(tmp_path, name="plain")))
    assert plain.energy_weight(-1000) == 0.0
    assert not np.allclose(np.add.reduceat(plain.enhance(pieces) ** 2, edges, axis=1), textbook)


def test_a_stream_decodes_only_with_the_model_that_wrote_it(tmp_path):
    """The header names the model, not its rate: any rate of it decodes; other weights refuse."""
    codec = PerceptualCodec(load_model_file(_model(tmp_path)))
    data = codec.at(6000).encode(synth_speech(1.0), 16000)
    assert codec.at(24000).decode(data)[0].shape == (16000,)
    other = PerceptualCodec(load_model_file(_model(tmp_path / "other", seed=1)))
    with pytest.raises(speechcodec.ModelMismatchError, match="decode it with the model that wrote it"):
        other.decode(data)
