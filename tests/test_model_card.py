"""scripts/model_card.py: every number in a card comes from the model file and the benchmark CSVs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from conftest import TINY_MODEL_CONFIG
from speechcodec.model import ModelConfig
from speechcodec.modelfile import load_model_file
from speechcodec.training import TrainConfig, train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "model_card.py"


def _benchmarks(folder: Path, name: str) -> tuple[Path, Path]:
    quality, speed = folder / "quality.csv", folder / "speed.csv"
    pd.DataFrame([{"model": name, "kbps": 4.21, "pesq_wb": 1.234, "pesq_nb": 1.5, "visqol": 1.61, "stoi": 0.7,
                   "opus_kbps": 5.68, "opus_pesq_wb": 2.28, "opus_visqol": 2.18, "delta_pesq_wb": 1.234 - 2.28,
                   "delta_visqol": 1.61 - 2.18, "note": "Opus floor"}]).to_csv(quality, index=False)
    pd.DataFrame([{"model": name, "kbps": 4.2, "encode_x_realtime": 151.0,
                   "decode_x_realtime": 149.0, "machine": "Some CPU (AVX2)"}]).to_csv(speed, index=False)
    return quality, speed


def _card(model: Path, quality: Path, speed: Path, *extra: str) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), str(model), "--quality", str(quality),
                             "--speed", str(speed), *extra], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return model.with_suffix(".md").read_text()


def test_card_of_a_model_trained_in_one_run(tmp_path, tiny_model):
    model = tmp_path / "tiny-test.safetensors"
    model.write_bytes(tiny_model.read_bytes())
    card = _card(model, *_benchmarks(tmp_path, "tiny-test"))
    fingerprint = load_model_file(model).fingerprint
    assert f"`tiny-test` (fingerprint `{fingerprint}`)" in card
    assert ("| 4.21 | 1.23 | 1.50 | 1.61 | 0.700 | PESQ-WB 2.28, ViSQOL 2.18 at 5.68 kbps (its lowest rate) "
            "| 151 / 149 |") in card
    assert "speed on one thread of Some CPU (AVX2), range coding included" in card
    assert "**Against Opus**: -1.05 PESQ-WB, -0.57 ViSQOL (below Opus; 25.9% fewer bits than Opus)." in card
    assert "| postfilter | none in the file" in card
    quality = pd.read_csv(tmp_path / "quality.csv").assign(kbps=5.9, pesq_wb=2.3, delta_pesq_wb=0.02)
    quality.to_csv(tmp_path / "quality.csv", index=False)  # higher PESQ, but 3.9 % more bits
    card = _card(model, tmp_path / "quality.csv", tmp_path / "speed.csv")
    assert "+0.02 PESQ-WB, -0.57 ViSQOL (beats Opus in PESQ, but with more bits than Opus spent; 3.9%" in card
    assert "earlier runs" not in card and "--init-from" not in card.split("```bash")[1].split("```")[0]
    assert "30 steps" in card and "LibriSpeech" in card
    assert "only checkpoints within 10% of it could be selected" in card
    assert "--steps 30 --batch-size 4 --out tiny-test.safetensors" in card


def test_card_of_a_continued_model_adds_up_its_runs(tmp_path, tiny_model, synth_corpus):
    torch.set_num_threads(1)
    cfg = TrainConfig(bitrate_bps=4000, steps=3, batch_size=4, crop_s=0.5, checkpoint_every=3,
                      init_from=str(tiny_model))
    model = train(ModelConfig(**TINY_MODEL_CONFIG), cfg, synth_corpus, tmp_path / "tiny-test.safetensors",
                  "tiny-test", progress=False)
    first = load_model_file(tiny_model)
    card = _card(model, *_benchmarks(tmp_path, "tiny-test"), "--config", "config/ship_gpu.yaml")
    assert f"continued from `tiny-test` (`{first.fingerprint}`)" in card
    assert f"1. `tiny-test` (`{first.fingerprint}`): 30 steps x batch 4 on cpu" in card
    assert "| all runs together | 33 steps," in card
    commands = card.split("```bash")[1].split("```")[0]
    assert "--config config/ship.yaml --bitrate 4000" in commands  # the first run's
    assert "--name tiny-test --steps 30 --batch-size 4 --out tiny-test.safetensors" in commands
    assert "--config config/history/ship_gpu.yaml" in commands  # recorded as config/ship_gpu.yaml: moved
    assert "--init-from tiny-test.safetensors --steps 3 --batch-size 4 --out tiny-test-1.safetensors" \
        in commands


def test_card_names_adversarial_and_decoder_only_training(tmp_path, tiny_model, synth_corpus):
    torch.set_num_threads(1)
    cfg = TrainConfig(bitrate_bps=4100, steps=2, batch_size=2, crop_s=0.5, checkpoint_every=2,
                      init_from=str(tiny_model), decoder_only=True, adversarial_weight=0.2,
                      feature_matching_weight=1.0, adversarial_from_step=1)
    model = train(ModelConfig(**TINY_MODEL_CONFIG), cfg, synth_corpus, tmp_path / "tiny-test.safetensors",
                  "tiny-test", progress=False)
    card = _card(model, *_benchmarks(tmp_path, "tiny-test"))
    assert ("lambda x kbps + 0.2 x hinge loss against a multi-resolution STFT discriminator + 1.0 x "
            "feature matching (from step 1), the decoder alone (encoder and tables kept: the same codes "
            "and bytes); seed 0") in card
    # its rate is the encoder's, trained at 4000 bps, not the 4100 this run was given
    assert "| nominal bitrate | 4 kbps: the rate of the run it continues (its last run trained the" in card
    first = tmp_path / "first" / "tiny-test.safetensors"
    first.parent.mkdir()
    first.write_bytes(tiny_model.read_bytes())
    plain = _card(first, *_benchmarks(tmp_path, "tiny-test"))
    assert "normalised MSE + lambda x kbps; seed 0" in plain and "discriminator" not in plain


def test_each_run_is_retrained_with_its_own_config_bitrate_and_batch(tmp_path, tiny_model, synth_corpus):
    torch.set_num_threads(1)
    cfg = TrainConfig(bitrate_bps=3900, steps=2, batch_size=2, crop_s=0.5, checkpoint_every=2,
                      init_from=str(tiny_model))
    ctx = ModelConfig(**{**TINY_MODEL_CONFIG, "prior_context": "previous"})
    middle = train(ctx, cfg, synth_corpus, tmp_path / "middle.safetensors", "tiny-test", progress=False,
                   info={"config_file": "config/own.yaml"})
    last = train(ctx, TrainConfig(**{**cfg.__dict__, "init_from": str(middle), "bitrate_bps": 4100}),
                 synth_corpus, tmp_path / "tiny-test.safetensors", "tiny-test", progress=False)
    card = _card(last, *_benchmarks(tmp_path, "tiny-test"), "--config", "config/last.yaml")
    commands = card.split("```bash")[1].split("```")[0]
    assert "--config config/ship.yaml --bitrate 4000" in commands  # recorded nothing: the base config
    assert "--config config/own.yaml --bitrate 3900" in commands and "--steps 2 --batch-size 2" in commands
    assert "--config config/last.yaml --bitrate 4100" in commands
    assert "16 contexts from the previous code frame" in card


def test_retrain_script_redoes_every_run_in_order(tmp_path, synth_corpus):
    torch.set_num_threads(1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "model": TINY_MODEL_CONFIG,
                                      "train": {"crop_s": 0.5, "checkpoint_every": 3, "log_every": 1}}))
    data = tmp_path / "data"
    data.mkdir()
    for p in synth_corpus:
        (data / p.name).write_bytes(p.read_bytes())
    first = train(ModelConfig(**TINY_MODEL_CONFIG),
                  TrainConfig(bitrate_bps=4000, steps=3, batch_size=2, crop_s=0.5, checkpoint_every=3),
                  synth_corpus, tmp_path / "first.safetensors", "tiny", progress=False,
                  info={"config_file": str(config)})
    second = train(ModelConfig(**TINY_MODEL_CONFIG),
                   TrainConfig(bitrate_bps=4500, steps=2, batch_size=3, crop_s=0.5, checkpoint_every=2,
                               init_from=str(first)),
                   synth_corpus, tmp_path / "tiny.safetensors", "tiny", progress=False,
                   info={"config_file": str(config)})
    script = SCRIPT.with_name("retrain.py")
    work = tmp_path / "work"
    cmd = [sys.executable, str(script), str(second), "--data", str(data), "--work", str(work)]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "run 1 of 2" in dry.stdout and "--bitrate 4000" in dry.stdout and "--bitrate 4500" in dry.stdout
    assert not work.exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    redone = load_model_file(work / "tiny-1.safetensors")
    assert redone.info["bitrate_bps"] == 4500 and redone.info["train_config"]["batch_size"] == 3
    assert [(h["steps"], h["batch_size"], h["bitrate_bps"]) for h in redone.info["history"]] == [(3, 2, 4000)]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # finished runs are skipped
    assert again.stdout.count(": done") == 2


def test_each_shipped_model_has_one_nominal_bitrate():
    """`speechcodec models`, the model card and docs/results.md's table name the same nominal rate."""
    from speechcodec.registry import list_models

    pretrained = SCRIPT.parents[1] / "src" / "speechcodec" / "pretrained"
    readme = (SCRIPT.parents[1] / "docs" / "results.md").read_text()
    shipped = [m for m in list_models() if Path(m["path"]).parent == pretrained]
    assert {m["model"] for m in shipped} == {"sc-3k", "pc"}
    for m in shipped:
        kbps = f"{m['bitrate_bps'] / 1000:g}"
        card = Path(m["path"]).with_suffix(".md").read_text()
        if m["arch"] == "perceptual":  # one model, a row of its card for each rate it is listed at
            assert f"| `{m['name']}` |" in card, m["name"]
        else:
            assert f"| nominal bitrate | {kbps} kbps" in card, (m["name"], kbps)
        assert f"| {m['name']} | {kbps} |" in readme, (m["name"], kbps)


def test_card_of_a_perceptual_model_shows_every_round_and_its_command(tmp_path, synth_corpus):
    """A perceptual model continued from another (``--init-from``) lists both rounds, in order,
    and the commands that redo them, the second starting from the first's file."""
    from speechcodec.perceptual.train import EnhancerTraining, train_enhancer

    small = dict(width=16, res_blocks=1, batch=2, crop_frames=16, bf16=False)
    quiet = {"log": lambda line: None}
    first = train_enhancer(synth_corpus, tmp_path / "one.safetensors", "tiny-pc",
                           EnhancerTraining(steps=2, **small), tmp_path / "one.work", **quiet)
    second = EnhancerTraining(steps=3, decay_from=0, lr=2e-4, step_high=40, init_from=str(first), **small)
    model = train_enhancer(synth_corpus, tmp_path / "tiny-pc.safetensors", "tiny-pc", second,
                           tmp_path / "two.work", **quiet)
    earlier = load_model_file(model).info["earlier"]
    assert len(earlier) == 1 and earlier[0]["fingerprint"] == load_model_file(first).fingerprint
    quality, speed = _benchmarks(tmp_path, "tiny-pc-12k")
    card = _card(model, quality, speed)
    assert "round 1: 2 steps" in card and f"round 2: from `{first}`, 3 steps" in card
    assert "quantiser steps -374 to 40" in card and "trained on the steps of 3 to 24 kbps" in card
    commands = card.split("```bash")[1].split("```")[0]
    assert "--steps 2 --decay-from 40000 --out tiny-pc.round1.safetensors" in commands
    assert ("--lr 0.0002 --step-high 40 --init-from tiny-pc.round1.safetensors --out tiny-pc.safetensors"
            in commands)
