"""Training: loss falls, resumption is exact, the rate controller steers the real bitrate, DDP runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import TINY_MODEL_CONFIG, run_cli
from speechcodec.config import training_configs
from speechcodec.errors import TrainingError
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.modelfile import load_model_file, save_model
from speechcodec.training import Batches, TrainConfig, train

TINY = ModelConfig(**TINY_MODEL_CONFIG)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**kw) -> TrainConfig:
    base = dict(bitrate_bps=4000, steps=20, batch_size=4, crop_s=0.5, checkpoint_every=10, log_every=1)
    return TrainConfig(**{**base, **kw})


def test_batches_are_crops_of_the_packed_corpus():
    rng = np.random.default_rng(0)
    corpus = [rng.standard_normal(n).astype(np.float32) for n in (5000, 800, 12000)]
    batches = Batches(corpus, crop=700, batch_size=32, gain_db=6.0, seed=3)
    x = batches.at(11)
    assert x.shape == (32, 1, 700) and x.dtype == torch.float32
    assert torch.equal(x, batches.at(11)) and not torch.equal(x, batches.at(12))
    starts, scales = batches.positions(11)
    bounds = np.cumsum([0, 5000, 800, 12000])
    for crop, start, scale in zip(x[:, 0].numpy(), starts, scales, strict=True):
        f = np.searchsorted(bounds, start, side="right") - 1
        assert start + 700 <= bounds[f + 1]  # never across two files
        np.testing.assert_array_equal(crop, corpus[f][start - bounds[f]: start - bounds[f] + 700] * scale)
        assert 10 ** (-6 / 20) - 1e-6 <= abs(scale) <= 10 ** (6 / 20) + 1e-6


def test_loss_falls(tmp_path, synth_corpus):
    train(TINY, _cfg(steps=60, checkpoint_every=60, lr=3e-3), synth_corpus, tmp_path / "m.safetensors",
          "m", progress=False)
    m = pd.read_csv(tmp_path / "m.work" / "metrics.csv")
    distortion = m["stft"] + 2 * m["mse"]
    assert distortion[-10:].mean() < 0.8 * distortion[:10].mean()
    assert list(m["step"]) == list(range(1, 61))


def test_resume_equals_an_uninterrupted_run(tmp_path, synth_corpus):
    whole = train(TINY, _cfg(), synth_corpus, tmp_path / "a.safetensors", "m",
                  val_paths=synth_corpus[:1], progress=False)
    assert train(TINY, _cfg(), synth_corpus, tmp_path / "b.safetensors", "m", val_paths=synth_corpus[:1],
                 progress=False, stop_after=10) is None
    assert not (tmp_path / "b.safetensors").exists()
    assert torch.load(tmp_path / "b.work" / "checkpoint.pt", weights_only=True)["step"] == 10
    resumed = train(TINY, _cfg(), synth_corpus, tmp_path / "b.safetensors", "m",
                    val_paths=synth_corpus[:1], progress=False)
    a, b = load_model_file(whole), load_model_file(resumed)
    assert a.info["steps"] == b.info["steps"] == 20
    assert b.info["train_seconds"] > b.info["train_seconds_last_run"] > 0  # both runs counted
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    assert (a.pmf == b.pmf).all()
    cols = ["step", "loss", "kbps_estimated"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.work" / "metrics.csv")[cols],
                                  pd.read_csv(tmp_path / "b.work" / "metrics.csv")[cols])


def test_checkpoint_from_before_a_new_setting_still_resumes(tmp_path, synth_corpus):
    train(TINY, _cfg(), synth_corpus, tmp_path / "a.safetensors", "m", progress=False, stop_after=10)
    ckpt = tmp_path / "a.work" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["train_config"]["init_from"]  # as written by a version without that setting
    torch.save(state, ckpt)
    out = train(TINY, _cfg(), synth_corpus, tmp_path / "a.safetensors", "m", progress=False)
    assert load_model_file(out).info["steps"] == 20
    assert list(pd.read_csv(tmp_path / "a.work" / "metrics.csv")["step"]) == list(range(1, 21))


def test_a_diverged_run_rolls_back_to_its_best_weights(tmp_path, synth_corpus):
    out, work = tmp_path / "m.safetensors", tmp_path / "m.work"
    train(TINY, _cfg(), synth_corpus, out, "m", val_paths=synth_corpus[:1], progress=False, stop_after=10)
    state = torch.load(work / "checkpoint.pt", weights_only=True)
    good = CodecModel(TINY)
    good.load_state_dict(state["model"])
    save_model(work / "best.safetensors", good, good.prior.freeze(TINY.max_symbol), "m",
               {"step": 10, "rate_lambda": 0.123, "goal_kbps": 4.0})
    state["best"] = 10.0  # as if step 10 had validated at that distortion
    for key, value in state["model"].items():  # then blow the weights up
        if value.is_floating_point():
            state["model"][key] = value * 50
    torch.save(state, work / "checkpoint.pt")

    train(TINY, _cfg(), synth_corpus, out, "m", val_paths=synth_corpus[:1], progress=False)
    val = pd.read_csv(work / "val_metrics.csv").set_index("step")
    assert val.loc[20, "rolled_back"] == 1 and not val.loc[20, "distortion"] <= 15.0
    after = torch.load(work / "checkpoint.pt", weights_only=True)
    for key, value in good.state_dict().items():
        assert torch.equal(after["model"][key], value), key
    assert after["rate_lambda"] == pytest.approx(0.123)
    final = load_model_file(out)
    assert final.info["rollbacks_last_run"] == 1 and final.info["selected_step"] == 10


def test_metrics_written_before_a_new_column_are_padded_not_broken(tmp_path):
    from speechcodec.training.logs import VAL_FIELDS, append_csv

    path = tmp_path / "val_metrics.csv"
    path.write_text(",".join(VAL_FIELDS[:-1]) + "\n500,6.1,6.0,1.9,6.5,1\n")  # before "rolled_back"
    append_csv(path, VAL_FIELDS, [[1000, 5.9, 5.8, 1.8, 6.4, 1, 0]])
    val = pd.read_csv(path)
    assert list(val.columns) == VAL_FIELDS and list(val["step"]) == [500, 1000]
    assert val["rolled_back"].isna().tolist() == [True, False] and val["distortion"].tolist() == [1.9, 1.8]


def test_changed_config_refuses_to_resume(tmp_path, synth_corpus):
    train(TINY, _cfg(), synth_corpus, tmp_path / "a.safetensors", "m", progress=False, stop_after=10)
    with pytest.raises(TrainingError, match="written with other settings.*--restart-on-change"):
        train(TINY, _cfg(lr=1e-4), synth_corpus, tmp_path / "a.safetensors", "m", progress=False)


def test_a_run_can_start_from_an_earlier_model(tmp_path, synth_corpus):
    first = train(TINY, _cfg(steps=60, checkpoint_every=60, lr=3e-3), synth_corpus,
                  tmp_path / "a.safetensors", "m", progress=False, info={"description": "tiny, 4 kbps"})
    train(TINY, _cfg(steps=5), synth_corpus, tmp_path / "fresh.safetensors", "m", progress=False)
    more = train(TINY, _cfg(steps=5, init_from=str(first)), synth_corpus, tmp_path / "b.safetensors", "m",
                 progress=False)
    assert load_model_file(more).info["train_config"]["init_from"] == str(first)
    history = load_model_file(more).info["history"]
    assert [(h["steps"], h["fingerprint"]) for h in history] == [(60, load_model_file(first).fingerprint)]
    again = train(TINY, _cfg(steps=5, init_from=str(more)), synth_corpus, tmp_path / "c.safetensors", "m",
                  progress=False)
    assert [h["steps"] for h in load_model_file(again).info["history"]] == [60, 5]
    assert load_model_file(again).info["description"] == "tiny, 4 kbps"  # kept unless a new one is given

    def first_distortion(work):
        m = pd.read_csv(tmp_path / work / "metrics.csv")
        return float(m["stft"][0] + 2 * m["mse"][0])

    trained = pd.read_csv(tmp_path / "a.work" / "metrics.csv")[-10:]
    assert first_distortion("b.work") < 0.9 * first_distortion("fresh.work")
    assert first_distortion("b.work") < 1.2 * float((trained["stft"] + 2 * trained["mse"]).mean())


def test_learning_rate_warms_up_then_holds(tmp_path, synth_corpus):
    train(TINY, _cfg(warmup_steps=4, lr=1e-3, checkpoint_every=6), synth_corpus, tmp_path / "a.safetensors",
          "m", progress=False, stop_after=6)
    lr = pd.read_csv(tmp_path / "a.work" / "metrics.csv")["lr"].tolist()
    assert lr == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3])


def test_the_starting_model_is_the_first_candidate_to_roll_back_to(tmp_path, synth_corpus):
    val = synth_corpus[:1]
    first = train(TINY, _cfg(steps=10), synth_corpus, tmp_path / "a.safetensors", "m", val_paths=val,
                  progress=False)
    real_bps = round(float(pd.read_csv(tmp_path / "a.work" / "val_metrics.csv")["kbps_real"].iloc[-1]) * 1000)
    work = tmp_path / "b.work"
    work.mkdir()
    (work / "val_metrics.csv").write_text(",".join(["step", "kbps_real"]) + "\n0,1.0\n")  # a killed run's
    train(TINY, _cfg(bitrate_bps=real_bps, init_from=str(first)), synth_corpus, tmp_path / "b.safetensors",
          "m", val_paths=val, progress=False, stop_after=1)
    rows = pd.read_csv(work / "val_metrics.csv")
    assert list(rows["step"]) == [0] and rows["best"].iloc[0] == 1 and rows["rolled_back"].iloc[0] == 0
    best = load_model_file(work / "best.safetensors")
    assert best.info["step"] == 0
    for key, value in load_model_file(first).state_dict.items():
        assert torch.equal(best.state_dict[key], value), key


def _continue_at_own_rate(tmp_path, synth_corpus, name: str, **kw):
    """A model trained for 10 steps, continued at its own real rate with ``kw``; the new run's
    validation rows and written model."""
    val = synth_corpus[:1]
    first = train(TINY, _cfg(steps=10), synth_corpus, tmp_path / "a.safetensors", "m", val_paths=val,
                  progress=False)
    real_bps = round(float(pd.read_csv(tmp_path / "a.work" / "val_metrics.csv")["kbps_real"].iloc[-1]) * 1000)
    settings = dict(lr=3e-3, controller_gain=0.0, steps=10, checkpoint_every=5, rollback_factor=0.0,
                    rate_tolerance=0.05)
    cfg = _cfg(bitrate_bps=real_bps, init_from=str(first), **{**settings, **kw})
    out = train(TINY, cfg, synth_corpus, tmp_path / f"{name}.safetensors", "m", val_paths=val, progress=False)
    return pd.read_csv(tmp_path / f"{name}.work" / "val_metrics.csv").set_index("step"), load_model_file(out)


def test_a_continued_run_ends_with_its_own_weights_not_its_starting_ones(tmp_path, synth_corpus):
    """The starting weights sit on target with the lowest distortion; the run's first checkpoint on
    target, worse as it is, still replaces them (a run is asked to move the model, e.g. its rate).

    Decoder-only at a learning rate far too high: the codes, hence the rate, stay exactly the
    start's, and the distortion surely rises (a smaller step let it fall on some CPUs)."""
    rows, out = _continue_at_own_rate(tmp_path, synth_corpus, "b", decoder_only=True, lr=0.3, steps=5)
    assert rows.loc[0, "best"] == 1 and rows.loc[5, "best"] == 1
    assert rows.loc[5, "kbps_real"] == rows.loc[0, "kbps_real"]
    assert rows.loc[5, "distortion"] > rows.loc[0, "distortion"]  # the old rule kept step 0
    assert out.info["selected_step"] == 5
    start = load_model_file(tmp_path / "a.safetensors").state_dict
    assert any(not torch.equal(start[key], value) for key, value in out.state_dict.items())


def test_a_continued_run_never_on_target_ends_with_its_final_weights(tmp_path, synth_corpus):
    val, out = _continue_at_own_rate(tmp_path, synth_corpus, "c", rate_lambda=10.0)
    assert list(val["best"]) == [1, 0, 0]  # only the start was on target: a roll-back target, no more
    assert out.info["selected_step"] == 10
    state = torch.load(tmp_path / "c.work" / "checkpoint.pt", weights_only=True)
    for key, value in out.state_dict.items():
        assert torch.equal(state["model"][key], value), key


def test_controller_gain_scales_with_the_learning_rate_when_asked(tmp_path, synth_corpus):
    """The first step's lambda update: same rate error, the log-step halves when the reference lr doubles."""
    log_steps = {}
    for ref in (0.0, 1e-3, 2e-3):
        cfg = _cfg(lr=1e-3, controller_gain=0.1, controller_lr_ref=ref, bitrate_bps=100, steps=1)
        train(TINY, cfg, synth_corpus, tmp_path / f"{ref}.safetensors", "m", progress=False)
        lam = pd.read_csv(tmp_path / f"{ref}.work" / "metrics.csv")["rate_lambda"].iloc[0]
        log_steps[ref] = np.log(lam / cfg.rate_lambda)
    assert log_steps[0.0] == pytest.approx(0.1)  # far over a 0.1 kbps goal: the clipped full step
    assert log_steps[1e-3] == pytest.approx(log_steps[0.0])
    assert log_steps[2e-3] == pytest.approx(log_steps[0.0] / 2)


def test_a_resume_with_nothing_left_to_train_keeps_the_training_speed(tmp_path, synth_corpus):
    out = tmp_path / "a.safetensors"
    train(TINY, _cfg(steps=10), synth_corpus, out, "m", progress=False)
    speed = load_model_file(out).info["train_audio_s_per_s"]
    out.unlink()
    train(TINY, _cfg(steps=10), synth_corpus, out, "m", progress=False)  # resumes at step 10 of 10
    again = load_model_file(out).info
    assert speed > 0 and again["train_audio_s_per_s"] == pytest.approx(speed, rel=0.2)
    assert again["train_seconds_last_run"] < again["train_seconds"]


def test_starting_from_a_model_with_another_config_is_a_clear_error(tmp_path, synth_corpus, tiny_model):
    other = ModelConfig(**{**TINY_MODEL_CONFIG, "code_channels": TINY.code_channels + 2})
    with pytest.raises(ValueError, match="code_channels"):
        train(other, _cfg(init_from=str(tiny_model)), synth_corpus, tmp_path / "c.safetensors", "m",
              progress=False)
    result = run_cli("train", "--bitrate", "4000", "--out", str(tmp_path / "d.safetensors"), "--data",
                     *map(str, synth_corpus), "--model-config", json.dumps(other.to_dict()), "--steps", "2",
                     "--init-from", str(tiny_model))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot start from" in result.stderr
    assert "Traceback" not in result.stderr


def test_rate_controller_moves_the_real_bitrate_toward_the_target(tmp_path, synth_corpus):
    """A reachable low target is approached from above; an unreachable high one relaxes lambda."""
    finals, lambdas = {}, {}
    for target in (700, 6000):
        cfg = _cfg(bitrate_bps=target, steps=150, checkpoint_every=25, controller_gain=0.1, lr=3e-3,
                   log_every=10)
        train(TINY, cfg, synth_corpus, tmp_path / f"{target}.safetensors", "m",
              val_paths=synth_corpus[-2:], progress=False)
        val = pd.read_csv(tmp_path / f"{target}.work" / "val_metrics.csv")
        finals[target] = (val["kbps_real"].iloc[0], val["kbps_real"].iloc[-1])
        lambdas[target] = pd.read_csv(tmp_path / f"{target}.work" / "metrics.csv")["rate_lambda"].iloc[-1]
    first, last = finals[700]
    assert abs(last - 0.7) < 0.5 * abs(first - 0.7)
    assert finals[700][1] < finals[6000][1]
    assert lambdas[6000] < cfg.rate_lambda / 10 < lambdas[700]


def test_ddp_with_two_gloo_processes(tmp_path, synth_corpus):
    out = tmp_path / "ddp.safetensors"
    r = run_cli("train", "--data", *synth_corpus, "--bitrate", "4000", "--out", out, "--steps", "6",
                "--batch-size", "2", "--nproc", "2", "--threads", "1", "--device", "cpu", "-q",
                "--description", "two-process test model",
                "--model-config", '{"width": 32, "fold_width": 16, "code_channels": 8, "res_blocks": 1}',
                timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    model = load_model_file(out)
    assert model.info["device"] == "cpu x2" and model.info["steps"] == 6
    assert model.info["description"] == "two-process test model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.safetensors", "ddp.work"]


def test_ddp_with_a_discriminator(tmp_path, synth_corpus):
    """The discriminator is wrapped in its own DistributedDataParallel; a two-process run trains it."""
    config = tmp_path / "adv.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL_CONFIG, "train": {
        "steps": 4, "batch_size": 2, "crop_s": 0.5, "checkpoint_every": 4, "log_every": 1,
        "adversarial_weight": 1.0, "feature_matching_weight": 1.0, "adversarial_from_step": 1}}))
    out = tmp_path / "ddp.safetensors"
    r = run_cli("train", "--config", config, "--data", *synth_corpus, "--bitrate", "4000", "--out", out,
                "--nproc", "2", "--threads", "1", "--device", "cpu", "-q", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_model_file(out).info["device"] == "cpu x2"
    state = torch.load(tmp_path / "ddp.work" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["discriminator"]
    m = pd.read_csv(tmp_path / "ddp.work" / "metrics.csv")
    assert m["adversarial"].notna().tolist() == [False, True, True, True]


KILL_SCRIPT = f"""
import sys, torch
torch.set_num_threads(1)
from speechcodec.model import CodecModel, ModelConfig
from speechcodec.training import Batches, TrainConfig, train
cfg = TrainConfig(bitrate_bps=4000, steps=400, batch_size=2, crop_s=0.5, checkpoint_every=5)
train(ModelConfig(**{TINY_MODEL_CONFIG!r}), cfg, sys.argv[2:], sys.argv[1], "k", progress=False)
"""


def test_kill_minus_nine_then_resume(tmp_path, synth_corpus):
    out = tmp_path / "k.safetensors"
    args = [sys.executable, "-c", KILL_SCRIPT, str(out), *map(str, synth_corpus)]
    proc = subprocess.Popen(args)
    ckpt = tmp_path / "k.work" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and
                                          torch.load(ckpt, weights_only=True)["step"] >= 10):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(ckpt, weights_only=True)["step"]  # whole and loadable after the kill
    assert 10 <= step < 400 and not out.exists()
    subprocess.run(args, check=True, timeout=600)
    assert load_model_file(out).info["steps"] == 400
    metrics = pd.read_csv(tmp_path / "k.work" / "metrics.csv")
    assert metrics["step"].is_monotonic_increasing and metrics["step"].iloc[-1] == 400


def test_per_bitrate_overrides():
    config = {"name": "x", "model": {"code_channels": 8}, "train": {"steps": 100, "gpus": 1},
              "overrides": {"6000": {"train": {"steps": 300}, "model": {"code_channels": 16}}}}
    m3, t3, _ = training_configs(config, 3000)
    m6, t6, _ = training_configs(config, 6000)
    assert (t3.steps, m3.code_channels) == (100, 8)
    assert (t6.steps, m6.code_channels, t6.bitrate_bps) == (300, 16, 6000)


def test_diverging_updates_are_skipped_not_fatal(tmp_path, synth_corpus):
    """An absurd learning rate blows the weights up; non-finite steps are skipped, the run ends."""
    path = train(TINY, _cfg(lr=1e30, prior_lr_scale=1.0, steps=8, checkpoint_every=4), synth_corpus,
                 tmp_path / "d.safetensors", "d", val_paths=synth_corpus[:1], progress=False)
    assert load_model_file(path).info["skipped_updates_last_run"] > 0


def test_a_factorised_model_continues_with_contexts_at_the_same_rate(tmp_path, synth_corpus):
    from speechcodec.bitstream.context import NUM_CONTEXTS

    val = synth_corpus[:1]
    first = train(TINY, _cfg(steps=10), synth_corpus, tmp_path / "a.safetensors", "m", val_paths=val,
                  progress=False)
    first_kbps = float(pd.read_csv(tmp_path / "a.work" / "val_metrics.csv")["kbps_real"].iloc[-1])
    ctx = ModelConfig(**{**TINY_MODEL_CONFIG, "prior_context": "previous"})
    out = train(ctx, _cfg(steps=4, init_from=str(first)), synth_corpus, tmp_path / "b.safetensors", "m",
                val_paths=val, progress=False)
    # Every context starts as its channel's prior, so the starting point codes at the same rate.
    start = pd.read_csv(tmp_path / "b.work" / "val_metrics.csv").iloc[0]
    assert start["step"] == 0 and abs(start["kbps_real"] / first_kbps - 1) < 0.02
    model = load_model_file(out)
    assert model.config.prior_context == "previous"
    assert model.pmf.shape == (TINY.code_channels * NUM_CONTEXTS, 2 * TINY.max_symbol + 1)
    trained = torch.load(tmp_path / "b.work" / "checkpoint.pt", weights_only=True)["model"]
    logits = trained["prior.logits"].reshape(TINY.code_channels, NUM_CONTEXTS, -1)
    assert any(not torch.equal(logits[:, k], logits[:, 0]) for k in range(1, NUM_CONTEXTS))  # learned apart
    # The other way round is refused: contexts cannot be folded back into one table.
    with pytest.raises(ValueError, match="prior_context"):
        train(TINY, _cfg(steps=2, init_from=str(out)), synth_corpus, tmp_path / "c.safetensors", "m",
              progress=False)


def test_a_config_can_build_on_another(tmp_path):
    from speechcodec.config import load_config
    from speechcodec.errors import SpeechCodecError

    (tmp_path / "base.yaml").write_text("name: a\nmodel: {code_channels: 8, width: 64}\ntrain: {steps: 5}\n")
    (tmp_path / "variant.yaml").write_text("base: base.yaml\nname: b\nmodel: {prior_context: previous}\n")
    config = load_config(tmp_path / "variant.yaml")
    assert config["name"] == "b" and config["train"] == {"steps": 5}
    assert config["model"] == {"code_channels": 8, "width": 64, "prior_context": "previous"}
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(SpeechCodecError, match="back to itself"):
        load_config(tmp_path / "loop.yaml")


def test_a_config_with_a_wrong_key_or_type_is_refused_before_training(tmp_path):
    from speechcodec.config import load_config
    from speechcodec.errors import SpeechCodecError

    (tmp_path / "typo.yaml").write_text("name: a\ntrian: {steps: 5}\n")
    with pytest.raises(SpeechCodecError, match="unknown section.*trian"):
        load_config(tmp_path / "typo.yaml")
    assert TrainConfig.from_dict({"bitrate_bps": 6000, "lr": "3e-4"}).lr == 3e-4  # YAML's text 3e-4
    for bad, match in (({"lr": "fast"}, "train.lr must be a number, got 'fast'"),
                       ({"steps": 1.5}, "train.steps must be a whole number"),
                       ({"amp": True}, "train.amp must be text"), ({"steps": 0}, "steps must be at least 1"),
                       ({"bitrate_bps": -6000}, "bitrate_bps must be at least 1")):
        with pytest.raises(ValueError, match=match):
            TrainConfig.from_dict({"bitrate_bps": 6000, **bad})
    with pytest.raises(ValueError, match="model.width must be a whole number"):
        ModelConfig.from_dict({"width": "wide"})


def test_train_cli_errors_are_one_line(tmp_path, synth_corpus):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\ntrain: {lr: fast}\n")
    for args, match in ((["--bitrate", "6"], "for 6 kbps write --bitrate 6k"),
                        (["--bitrate", "0"], "must be positive"),
                        (["--bitrate", "6000", "--config", bad], "train.lr must be a number")):
        result = run_cli("train", *args, "--data", synth_corpus[0], "--out", tmp_path / "m.safetensors")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and match in lines[0], result.stderr
    assert not (tmp_path / "m.safetensors").exists()
    result = run_cli("train", "--bitrate", "6000", "--data", synth_corpus[0], "--out", tmp_path / "m.pt")
    assert result.returncode == 1 and result.stderr.strip() == (
        f"speechcodec: error: --out {tmp_path / 'm.pt'}: a model file is named *.safetensors "
        "(what `speechcodec models` and --model look for)")
    assert list(tmp_path.iterdir()) == [bad]  # no work folder either


def test_decoder_only_training_keeps_every_code_and_byte(tmp_path, synth_corpus, tiny_model):
    from conftest import synth_speech
    from speechcodec.codec import AutoencoderCodec as Codec

    out = train(TINY, _cfg(steps=6, lr=3e-3, decoder_only=True, init_from=str(tiny_model)), synth_corpus,
                tmp_path / "d.safetensors", "tiny-test", progress=False)
    before, after = load_model_file(tiny_model), load_model_file(out)
    changed = {k for k in before.state_dict if not torch.equal(before.state_dict[k], after.state_dict[k])}
    assert changed and all(k.startswith("autoencoder.") and ".encoder." not in k for k in changed), changed
    assert np.array_equal(before.pmf, after.pmf)
    audio = synth_speech(2.0, seed=5)
    a, b = Codec(before), Codec(after)
    assert np.array_equal(a.codes(audio, 16000), b.codes(audio, 16000))
    assert len(a.encode(audio, 16000)) == len(b.encode(audio, 16000))
    with pytest.raises(ValueError, match="init_from"):
        train(TINY, _cfg(steps=2, decoder_only=True), synth_corpus, tmp_path / "e.safetensors", "m",
              progress=False)


def test_a_bitrate_without_its_overrides_is_pointed_out(tmp_path, synth_corpus):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"name": "x", "model": TINY_MODEL_CONFIG,
                                  "train": {"steps": 1, "batch_size": 2, "crop_s": 0.5, "checkpoint_every": 1},
                                  "overrides": {"6000": {"train": {"steps": 2}}}}))
    data = [str(p) for p in synth_corpus]
    off = run_cli("train", "--config", str(config), "--bitrate", "5800", "--data", *data,
                  "--out", str(tmp_path / "a.safetensors"), "-q")
    assert off.returncode == 0 and "settings for 6000 bps, none for 5800" in off.stderr
    on = run_cli("train", "--config", str(config), "--bitrate", "6000", "--data", *data,
                 "--out", str(tmp_path / "b.safetensors"), "-q")
    assert on.returncode == 0 and "none for" not in on.stderr


def test_a_continued_run_holds_its_rate_from_the_first_step(tmp_path, synth_corpus):
    """The controller's goal starts where the starting weights' training estimate meets the target."""
    val = synth_corpus[:1]
    first = train(TINY, _cfg(steps=10), synth_corpus, tmp_path / "a.safetensors", "m", val_paths=val,
                  progress=False)
    real_bps = round(float(pd.read_csv(tmp_path / "a.work" / "val_metrics.csv")["kbps_real"].iloc[-1]) * 1000)
    # Frozen weights at their own real rate: the rate weight has nothing to correct, so it must not move.
    cfg = _cfg(bitrate_bps=real_bps, init_from=str(first), lr=0.0, steps=8, controller_gain=0.1)
    train(TINY, cfg, synth_corpus, tmp_path / "b.safetensors", "m", val_paths=val, progress=False)
    goal = pd.read_csv(tmp_path / "b.work" / "val_metrics.csv")["rate_goal_kbps"].iloc[0]
    estimates = pd.read_csv(tmp_path / "b.work" / "metrics.csv")["kbps_estimated"]
    assert goal == pytest.approx(estimates.mean(), rel=0.02)
    # The estimate is not the real rate, so a goal equal to the target would drift.
    assert abs(goal / (real_bps / 1000) - 1) > 0.03
    lambdas = pd.read_csv(tmp_path / "b.work" / "metrics.csv")["rate_lambda"]
    assert lambdas.iloc[-1] == pytest.approx(cfg.rate_lambda, rel=0.01)


def test_a_model_records_its_config_relative_to_its_project(tmp_path, synth_corpus):
    """Trained from a subfolder with ``--config ../config/c.yaml``, the model still says
    ``config/c.yaml``: what ``scripts/retrain.py`` needs, run from the project root."""
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "scratch").mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    config = {"name": "x", "model": TINY_MODEL_CONFIG,
              "train": {"steps": 1, "batch_size": 2, "crop_s": 0.5, "checkpoint_every": 1}}
    (project / "config" / "c.yaml").write_text(json.dumps(config))
    outside = tmp_path / "loose"
    outside.mkdir()
    (outside / "c.yaml").write_text(json.dumps(config))
    data = [str(p) for p in synth_corpus]
    for given, cwd, recorded in (("../config/c.yaml", project / "scratch", "config/c.yaml"),
                                 ("c.yaml", outside, "c.yaml")):
        result = run_cli("train", "--config", given, "--bitrate", "4000", "--data", *data,
                         "--out", "m.safetensors", "-q", cwd=cwd)
        assert result.returncode == 0, result.stderr
        assert load_model_file(cwd / "m.safetensors").info["config_file"] == recorded


def test_bfloat16_instructions_are_read_from_cpuinfo():
    from speechcodec.training.distributed import cpu_has_bfloat16

    assert cpu_has_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n") is False
    assert cpu_has_bfloat16("flags\t\t: fpu avx2 avx512f avx512_bf16\n") is True
    assert cpu_has_bfloat16("flags\t\t: fpu avx2 amx_bf16 amx_tile\n") is True
    assert cpu_has_bfloat16("Features\t: fp asimd sve bf16 i8mm\n") is True
    assert cpu_has_bfloat16("model name\t: something\n") is None


def test_bfloat16_autocast_on_a_cpu_without_it_says_it_is_slow(tmp_path, synth_corpus, monkeypatch, capsys):
    import speechcodec.training.loop as training

    monkeypatch.setattr(training, "cpu_has_bfloat16", lambda: False)
    train(TINY, _cfg(steps=2, amp="on"), synth_corpus, tmp_path / "a.safetensors", "m", progress=False)
    assert "no bfloat16 instructions" in capsys.readouterr().out
    monkeypatch.setattr(training, "cpu_has_bfloat16", lambda: True)
    train(TINY, _cfg(steps=2, amp="on"), synth_corpus, tmp_path / "b.safetensors", "m", progress=False)
    train(TINY, _cfg(steps=2), synth_corpus, tmp_path / "c.safetensors", "m", progress=False)
    assert "bfloat16" not in capsys.readouterr().out


ADVERSARIAL = dict(adversarial_weight=1.0, feature_matching_weight=2.0, discriminator_lr=1e-3)


def test_an_adversarial_run_resumes_exactly_discriminator_included(tmp_path, synth_corpus):
    cfg = _cfg(steps=8, checkpoint_every=4, adversarial_from_step=2, **ADVERSARIAL)
    whole = train(TINY, cfg, synth_corpus, tmp_path / "a.safetensors", "m", progress=False)
    train(TINY, cfg, synth_corpus, tmp_path / "b.safetensors", "m", progress=False, stop_after=4)
    resumed = train(TINY, cfg, synth_corpus, tmp_path / "b.safetensors", "m", progress=False)
    a, b = load_model_file(whole), load_model_file(resumed)
    for key in a.state_dict:
        assert torch.equal(a.state_dict[key], b.state_dict[key]), key
    da = torch.load(tmp_path / "a.work" / "checkpoint.pt", weights_only=True)["discriminator"]
    db = torch.load(tmp_path / "b.work" / "checkpoint.pt", weights_only=True)["discriminator"]
    assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)
    m, cols = pd.read_csv(tmp_path / "a.work" / "metrics.csv"), ["step", "loss", "discriminator"]
    pd.testing.assert_frame_equal(m[cols], pd.read_csv(tmp_path / "b.work" / "metrics.csv")[cols])
    # the discriminator learns from the first step; the codec feels it from adversarial_from_step
    assert m["discriminator"].notna().all()
    assert m["adversarial"].isna().tolist() == [True, True] + [False] * 6
    assert (m["feature_matching"].dropna() > 0).all()


@pytest.mark.parametrize("adversarial", [True, False])
def test_the_adversarial_terms_train_the_decoder(tmp_path, synth_corpus, tiny_model, adversarial):
    """With the distortion terms off, the decoder moves only if the adversarial terms reach it
    (the rate term moves the encoder and the prior alone): the False case shows the test can fail."""
    terms = ADVERSARIAL if adversarial else {}
    out = train(TINY, _cfg(steps=3, stft_weight=0.0, mse_weight=0.0, lr=1e-3, init_from=str(tiny_model),
                           **terms), synth_corpus, tmp_path / "g.safetensors", "tiny-test", progress=False)
    before, after = load_model_file(tiny_model).state_dict, load_model_file(out).state_dict
    decoder = [k for k in before if k.startswith("autoencoder.decoder") or k.startswith("autoencoder.head")]
    assert decoder
    moved = [k for k in decoder if not torch.equal(before[k], after[k])]
    assert bool(moved) == adversarial, moved


def test_adversarial_losses_are_hinges_and_relative_feature_distances():
    from speechcodec.training.adversarial import (
        MultiResolutionDiscriminator,
        discriminator_loss,
        feature_matching_loss,
        generator_loss,
    )

    confident = [(torch.full((2, 1, 5), 1.5), []), (torch.full((2, 1, 3), 1.0), [])]
    fooled = [(torch.full((2, 1, 5), -1.5), []), (torch.full((2, 1, 3), -1.0), [])]
    assert discriminator_loss(confident, fooled) == 0  # beyond the margins: nothing to learn
    assert discriminator_loss(fooled, confident) == pytest.approx((5.0 + 4.0) / 2)
    assert generator_loss(confident) == 0 and generator_loss(fooled) == pytest.approx((2.5 + 2.0) / 2)
    disc = MultiResolutionDiscriminator(fft_sizes=(64, 128), channels=8)
    x = torch.randn(2, 1, 1600) * 0.05
    real = disc(x)
    assert len(real) == 2 and all(len(maps) == 4 for _, maps in real)
    assert [logits.shape for logits, _ in real] == [(2, 1, 1600 // 16 + 1), (2, 1, 1600 // 32 + 1)]
    assert feature_matching_loss(real, disc(x)) == 0
    noisy = feature_matching_loss(real, disc(x + 0.01 * torch.randn_like(x)))
    assert 0 < noisy < feature_matching_loss(real, disc(x + 0.1 * torch.randn_like(x)))


def test_the_loudness_loss_hears_noise_in_harmonic_valleys_more_than_missing_harmonics():
    """PESQ's asymmetry: the same energy counts double when added (noise between the harmonics)
    than when removed; and it is finite in silence and zero for a perfect copy."""
    from conftest import synth_speech
    from speechcodec.training.losses import bark_bands, loudness_loss

    bands = bark_bands(512, 16000)
    assert bands.shape == (49, 257) and bands.sum(0).max() == 1 and (bands.sum(1) > 0).all()
    x = torch.from_numpy(synth_speech(1.0, seed=2))[None, None]
    assert loudness_loss(x, x) == 0
    noise = 0.01 * torch.randn_like(x)
    added = loudness_loss(x + noise, x)
    quieter = x * (1 - (noise.pow(2).mean() / x.pow(2).mean()).sqrt())  # about the same energy removed
    assert added > 1.5 * loudness_loss(quieter, x) > 0
    silence = torch.zeros(1, 1, 8000, requires_grad=True)
    loudness_loss(silence, torch.zeros(1, 1, 8000)).backward()
    assert torch.isfinite(silence.grad).all()


def test_a_loudness_weight_adds_its_term_to_the_loss_and_log(tmp_path, synth_corpus):
    train(TINY, _cfg(steps=4, checkpoint_every=4, loudness_weight=2.0), synth_corpus,
          tmp_path / "m.safetensors", "m", progress=False)
    m = pd.read_csv(tmp_path / "m.work" / "metrics.csv")
    assert (m["loudness"] > 0).all()
    assert np.allclose(m["loss"], m["stft"] + 2.0 * m["mse"] + m["rate_lambda"].shift(1, fill_value=0.05)
                       * m["kbps_estimated"] + 2.0 * m["loudness"], rtol=1e-4)
