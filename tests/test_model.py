"""Both model families: shapes, and chunked coding equal to coding the whole signal at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import synth_speech
from speechcodec.codec import Codec
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
]
IDS = ["folded", "folded-istft", "paper", "folded-context"]


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


def test_istft_head_inverts_as_torch_istft_does():
    model = CodecModel(ModelConfig(decoder_head="istft", width=32, fold_width=16, code_channels=8,
                                   res_blocks=1))
    ae = model.autoencoder
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
def test_chunked_coding_equals_whole_signal_coding(cfg):
    audio = synth_speech(3.0, seed=3)
    whole = _codec(cfg, chunk_s=100.0)
    chunked = _codec(cfg, chunk_s=0.3)
    codes_whole = whole.codes(audio, 16000)
    codes_chunked = chunked.codes(audio, 16000)
    # Convolutions over different lengths may round differently in the last bit, which can
    # flip a code sitting exactly on .5; anything more would be a context bug.
    assert codes_whole.shape == codes_chunked.shape
    assert np.mean(codes_whole != codes_chunked) < 1e-3
    data_whole, data_chunked = whole.encode(audio, 16000), chunked.encode(audio, 16000)
    out_whole, _ = whole.decode(data_whole)
    out_chunked, _ = chunked.decode(data_chunked)
    assert out_whole.shape == out_chunked.shape == audio.shape
    if np.array_equal(codes_whole, codes_chunked):
        np.testing.assert_allclose(out_chunked, out_whole, atol=1e-4 * max(1e-3, np.abs(out_whole).max()))


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
