"""Both model families: shapes, and chunked coding equal to coding the whole signal at once."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from conftest import synth_speech
from speechcodec.bitstream.container import read_stream
from speechcodec.codec import AutoencoderCodec as Codec
from speechcodec.entropy.factorized import counts_from_pmf
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.model.folded import MAX_LOG_MAGNITUDE
from speechcodec.modelfile import ModelFile, load_model_file, save_model

CONFIGS = [
    ModelConfig(width=32, fold_width=16, code_channels=4, res_blocks=2),
    ModelConfig(width=32, fold_width=16, code_channels=4, res_blocks=1, decoder_head="istft"),
    ModelConfig(arch="paper", width=16, code_channels=2, downsample=8, res_blocks=3),
    ModelConfig(width=32, fold_width=16, code_channels=4, res_blocks=1, decoder_head="istft",
                prior_context="previous"),
    ModelConfig(width=32, fold_width=16, code_channels=4, res_blocks=1, decoder_head="istft",
                istft_window_frames=8),
]
IDS = ["folded", "folded-istft", "paper", "folded-context", "folded-istft-long-window"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_shapes_and_rate(cfg):
    torch.manual_seed(0)
    model = CodecModel(cfg)
    x = torch.randn(2, 1, cfg.samples_per_frame * 50)
    x_hat, y_hat, bits = model(x)
    assert x_hat.shape == x.shape
    assert y_hat.shape == (2, cfg.code_channels, 50)
    assert torch.equal(y_hat, torch.round(y_hat))
    assert bits.item() > 0
    (x_hat.pow(2).mean() + bits).backward()  # everything is trainable end to end


def test_paper_family_is_the_papers_shape():
    model = CodecModel(ModelConfig(arch="paper", downsample=4, code_channels=8))
    convs = [m for m in model.autoencoder.encoder.modules() if isinstance(m, torch.nn.Conv1d)]
    assert (convs[0].in_channels, convs[1].out_channels) == (1, 128)
    assert convs[1].stride == (4,)
    blocks = [m for m in model.autoencoder.encoder.modules() if type(m).__name__ == "ResBlock"]
    assert len(blocks) == 3


def _codec(cfg: ModelConfig, chunk_s: float) -> Codec:
    torch.manual_seed(0)
    model = CodecModel(cfg).eval()
    pmf = counts_from_pmf(np.ones((cfg.code_channels * cfg.prior_contexts, 2 * cfg.max_symbol + 1)), 16)
    return Codec(ModelFile("rand", cfg, model.state_dict(), pmf), chunk_s=chunk_s)


def test_istft_head_gradients_stay_finite_when_magnitudes_saturate():
    # Three shipped trainings died here: exp() overflowed, and clamp's backward turned it into NaN.
    model = CodecModel(ModelConfig(decoder_head="istft", width=32, fold_width=16, code_channels=8,
                                   res_blocks=1))
    bins = model.autoencoder.n_fft // 2 + 1
    with torch.no_grad():
        model.autoencoder.head.bias[:bins].fill_(200.0)  # log-magnitudes far past float32's exp range
    x_hat, _, bits = model(torch.randn(2, 1, 1600) * 0.05)
    (x_hat.pow(2).mean() + 1e-3 * bits).backward()
    assert torch.isfinite(x_hat).all() and x_hat.abs().max() > 1.0  # saturated, capped, finite
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_an_istft_window_of_one_frame_is_refused():
    with pytest.raises(ValueError, match="istft_window_frames must be at least 2"):
        ModelConfig(decoder_head="istft", istft_window_frames=1)


@pytest.mark.parametrize("window_frames", [4, 8, 13])
def test_istft_head_inverts_as_torch_istft_does(window_frames):
    model = CodecModel(ModelConfig(decoder_head="istft", width=32, fold_width=16, code_channels=8,
                                   res_blocks=1, istft_window_frames=window_frames))
    ae = model.autoencoder
    assert ae.n_fft == window_frames * ae.cfg.samples_per_frame
    bins, frames = ae.n_fft // 2 + 1, 30
    spec = torch.randn(2, 2 * bins, frames + 1, dtype=torch.float64, requires_grad=True)

    def reference(spec):
        mag = torch.exp(spec[:, :bins].clamp(max=MAX_LOG_MAGNITUDE))
        return torch.istft(torch.polar(mag, spec[:, bins:]), ae.n_fft, ae.cfg.samples_per_frame,
                           window=ae.window.double(), center=True, length=frames * ae.cfg.samples_per_frame)

    ours, theirs = ae._istft(spec, frames)[:, 0], reference(spec)
    assert ours.dtype == torch.float64 and ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    weight = torch.randn_like(theirs)
    grad_ours, = torch.autograd.grad((ours * weight).sum(), spec)
    grad_theirs, = torch.autograd.grad((theirs * weight).sum(), spec)
    # The phases of the DC and Nyquist bins do not reach the signal; their gradients are free.
    real = torch.ones(2 * bins, dtype=torch.bool)
    real[[bins, 2 * bins - 1]] = False
    torch.testing.assert_close(grad_ours[:, real], grad_theirs[:, real], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_chunked_coding_equals_the_network_over_the_whole_signal(cfg):
    # Chunks see context across their edges, and beyond the signal's own edges what the codec
    # defines there (zero samples for the encoder, a few zero code frames for the decoder), so
    # what it writes and plays back is what the network gives run over the whole signal at once.
    audio = synth_speech(3.0, seed=3)
    codec = _codec(cfg, chunk_s=0.3)  # 10 chunks
    data = codec.encode(audio, 16000)
    gain = np.float32(read_stream(io.BytesIO(data))[0].gain)
    spf, m = cfg.samples_per_frame, cfg.max_symbol
    enc_pad = codec.autoencoder.encoder_context_frames
    x = np.zeros((2 * enc_pad - (-len(audio) // spf)) * spf, np.float32)
    x[enc_pad * spf: enc_pad * spf + len(audio)] = audio * gain
    with torch.inference_mode():
        y = codec.autoencoder.encode(torch.from_numpy(x)[None, None])[0, :, enc_pad:-enc_pad]
    codes_whole = np.clip(torch.round(y).numpy(), -m, m)
    codes = codec.codes_from_bytes(data)
    # Convolutions over different lengths may round differently in the last bit, which can
    # flip a code sitting exactly on .5; anything more would be a context bug.
    assert codes.shape == codes_whole.shape
    assert np.mean(codes != codes_whole) < 1e-3
    ctx = codec.autoencoder.decoder_context_frames
    for dec_pad in (codec.decoder_edge_frames, ctx // 2):  # these tiny models' whole context, and less
        codec.decoder_edge_frames = dec_pad
        padded = np.pad(codes.astype(np.float32), ((0, 0), (dec_pad, dec_pad)))
        with torch.inference_mode():
            out_whole = codec.autoencoder.decode(torch.from_numpy(padded)[None])[0, 0, dec_pad * spf:]
        out_whole = np.clip(out_whole[: len(audio)].numpy() * np.float32(1.0 / gain), -1, 1)  # decode clips
        out, _ = codec.decode(data)
        assert out.shape == audio.shape
        np.testing.assert_allclose(out, out_whole, atol=1e-4 * max(1e-3, np.abs(out_whole).max()))


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[3]], ids=["factorised", "context"])
def test_model_file_round_trip(tmp_path, cfg):
    model = CodecModel(cfg)
    pmf = model.prior.freeze(cfg.max_symbol)
    path = save_model(tmp_path / "m.safetensors", model, pmf, "m", {"bitrate_bps": 1234})
    loaded = load_model_file(path)
    assert loaded.config == cfg and loaded.info["bitrate_bps"] == 1234
    assert np.array_equal(loaded.pmf, pmf)
    rebuilt = loaded.build()
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    assert loaded.fingerprint == ModelFile("m", cfg, model.state_dict(), pmf).fingerprint


def test_a_setting_added_later_keeps_older_model_files_and_fingerprints():
    # Model files written before prior_context existed have no such key: their config, hence
    # their fingerprint and every stream they wrote, must stay what it was.
    assert "prior_context" not in ModelConfig().to_dict()
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()
    ctx = ModelConfig(prior_context="previous")
    assert ctx.to_dict()["prior_context"] == "previous" and ModelConfig.from_dict(ctx.to_dict()) == ctx
    with pytest.raises(ValueError, match="prior_context"):
        ModelConfig(prior_context="hyper")


class _StridedAutoencoder(torch.nn.Module):
    """A family in a dozen lines: one strided convolution each way (the contract, nothing more)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        spf = cfg.samples_per_frame
        self.encoder = torch.nn.Conv1d(1, cfg.code_channels, spf, stride=spf)
        self.decoder = torch.nn.ConvTranspose1d(cfg.code_channels, 1, spf, stride=spf)
        self.encoder_context_frames = self.decoder_context_frames = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(y_hat)


def test_a_new_model_family_is_one_class_and_one_registration(monkeypatch, tmp_path):
    from speechcodec.model.family import FAMILIES, Family

    known = "\\('folded', 'paper', 'perceptual'\\)"
    with pytest.raises(ValueError, match=f"arch must be one of {known}, got 'strided'"):
        ModelConfig(arch="strided")
    family = Family(name="strided", network=_StridedAutoencoder, samples_per_frame=lambda c: c.downsample,
                    describe=lambda c: f"`strided`: {c.downsample}-sample frames", settings=("downsample",))
    monkeypatch.setitem(FAMILIES, "strided", family)
    cfg = ModelConfig(arch="strided", downsample=160, code_channels=4, max_symbol=16)
    model = CodecModel(cfg).eval()
    path = save_model(tmp_path / "s.safetensors", model, model.prior.freeze(cfg.max_symbol), "strided-test", {})
    codec = Codec(load_model_file(path))
    audio = synth_speech(1.5, seed=3)
    decoded, rate = codec.decode(codec.encode(audio, 16000))
    assert rate == 16000 and len(decoded) == len(audio)

    class NoDecoder(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.encoder_context_frames = self.decoder_context_frames = 1

        def encode(self, x):
            return x

    monkeypatch.setitem(FAMILIES, "strided", Family(name="strided", network=NoDecoder,
                                                    samples_per_frame=lambda c: c.downsample,
                                                    describe=lambda c: "", settings=()))
    with pytest.raises(TypeError, match="lacks part of the Autoencoder contract"):
        CodecModel(cfg)
