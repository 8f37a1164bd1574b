"""Shared fixtures: synthetic speech-like audio, a tiny model trained on the fly, the shared data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPEECHCODEC_SHARED", REPO.parent / "shared"))
SPEECH_DIR = SHARED / "data" / "speech" / "audio"
TINY_MODEL_CONFIG = {"width": 32, "fold_width": 16, "code_channels": 8, "res_blocks": 1,
                     "max_symbol": 16}


def synth_speech(seconds: float, sample_rate_hz: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced-speech-like test signal: gliding harmonics under syllable envelopes, plus pauses.

    Deterministic for a seed; peak about 0.5. Not speech, but it has speech's spectral tilt,
    pitch movement and on/off structure, which is what the codec's plumbing needs.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) + 20 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate_hz
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30) if k * f0.max() < sample_rate_hz / 2)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.25 * t) > -0.7).astype(np.float64)
    noise = rng.standard_normal(n) * 0.02
    x = (voiced * syllables * pauses + noise * syllables) * 0.25
    return (x / max(1e-9, np.abs(x).max()) * 0.5).astype(np.float32)


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for i in range(4):
        p = folder / f"spk{i}" / f"utt{i}.wav"
        p.parent.mkdir()
        sf.write(p, synth_speech(3.0, seed=i), 16000)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, synth_corpus) -> Path:
    """A real model, trained for a few steps on CPU, with frozen tables: fast, not good."""
    import torch

    from speechcodec.model import ModelConfig
    from speechcodec.training import TrainConfig, train

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(bitrate_bps=4000, steps=30, batch_size=4, crop_s=0.5, checkpoint_every=30)
    return train(ModelConfig(**TINY_MODEL_CONFIG), cfg, synth_corpus,
                 folder / "tiny-test.safetensors", "tiny-test", progress=False)


@pytest.fixture()
def model_path_env(tiny_model, monkeypatch) -> Path:
    """Make the tiny model installed by name, as a user would with $SPEECHCODEC_MODEL_PATH."""
    monkeypatch.setenv("SPEECHCODEC_MODEL_PATH", str(tiny_model.parent))
    return tiny_model


@pytest.fixture()
def speech_file() -> Path:
    path = SPEECH_DIR / "vctk_p232_002_16k.wav"
    if not path.exists():
        pytest.skip(f"shared speech data not found at {SPEECH_DIR} (a user's clone has none)")
    return path


def cli_command() -> list[str]:
    """The installed ``speechcodec`` command."""
    script = Path(sys.executable).parent / "speechcodec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "speechcodec.cli"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, cwd: Path | None = None,
            stdin: bytes | None = None):
    """Run the installed ``speechcodec`` command as a user would (``stdin``: bytes piped in, and
    then stdout comes back as bytes too)."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run([*cli_command(), *map(str, args)], input=stdin, capture_output=True,
                            text=stdin is None, env=full_env, timeout=timeout, cwd=cwd)
    if stdin is not None:
        result.stderr = result.stderr.decode()
    return result


@pytest.fixture()
def small_disks(tmp_path):
    """``make(size_kb)``: a tmpfs of that size, to see what a full disk does; skips where mounting
    is not allowed."""
    import subprocess

    mounted: list[Path] = []

    def make(size_kb: int) -> Path:
        path = tmp_path / f"small_disk_{len(mounted)}"
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture()
def small_disk(small_disks) -> Path:
    """A 300 kB tmpfs."""
    return small_disks(300)
