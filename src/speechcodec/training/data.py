"""Training audio: read and level-normalised once, packed on the training device, cropped into
batches that depend only on (seed, rank, step), which is what makes resumption exact."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import soxr
import torch

from speechcodec.audio import active_rms, read_audio
from speechcodec.errors import TrainingError


def load_corpus(paths: Sequence[str | os.PathLike], sample_rate_hz: int, input_rms: float,
                min_samples: int) -> list[np.ndarray]:
    """Read, resample and level-normalise training audio once (active RMS -> ``input_rms``)."""
    corpus = []
    for path in paths:
        audio, rate = read_audio(path)
        if rate != sample_rate_hz:
            audio = soxr.resample(audio, rate, sample_rate_hz).astype(np.float32)
        rms, _ = active_rms(iter((audio,)), sample_rate_hz)
        if rms == 0.0 or len(audio) < min_samples:
            continue
        corpus.append((audio * (input_rms / rms)).astype(np.float32))
    if not corpus:
        raise TrainingError(f"no usable training audio (need files of at least {min_samples} samples)")
    return corpus


class Batches:
    """Random crops with level and polarity augmentation; batch ``step`` depends only on
    (seed, rank, step), which is what makes resumption exact.

    The corpus is packed into one flat float32 tensor on the training device (116 min of 16 kHz
    speech is 450 MB), so a batch is a single gather there: no per-step host work beyond drawing
    the crop positions, and no host-to-device copy of audio."""

    def __init__(self, corpus: list[np.ndarray], crop: int, batch_size: int, gain_db: float,
                 seed: int, rank: int = 0, device: torch.device | str = "cpu"):
        self.crop = crop
        self.batch_size = batch_size
        self.gain_db = gain_db
        self.seed = seed
        self.rank = rank
        sizes = np.array([len(a) for a in corpus], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.starts_max = sizes - crop + 1
        self.weights = self.starts_max / self.starts_max.sum()
        self.flat = torch.from_numpy(np.concatenate(corpus)).to(device)
        self.window = torch.arange(crop, device=device)

    def positions(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Where each crop of batch ``step`` starts in the packed corpus, and its gain (signed)."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        files = rng.choice(len(self.starts_max), size=self.batch_size, p=self.weights)
        starts = np.empty(self.batch_size, np.int64)
        scales = np.empty(self.batch_size, np.float32)
        for i, f in enumerate(files):
            starts[i] = self.offsets[f] + rng.integers(0, self.starts_max[f])
            gain = 10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20)
            scales[i] = gain if rng.random() < 0.5 else -gain
        return starts, scales

    def at(self, step: int) -> torch.Tensor:
        """Batch ``step``: ``[batch_size, 1, crop]`` on the corpus's device."""
        starts, scales = self.positions(step)
        device = self.flat.device
        index = torch.from_numpy(starts).to(device)[:, None] + self.window
        return (self.flat[index] * torch.from_numpy(scales).to(device)[:, None])[:, None, :]


class TrainingData:
    """A run's audio: its training batches (this rank's) and, on rank 0, its validation files."""

    def __init__(self, batches: Batches, val_audio: list[np.ndarray], files: int, seconds: float,
                 sample_rate_hz: int):
        self.batches = batches
        self.val_audio = val_audio
        self.files = files  # training files kept (long enough, not silent)
        self.seconds = seconds  # their duration
        self.batch_audio_s = batches.crop / sample_rate_hz * batches.batch_size

    @classmethod
    def load(cls, model_cfg, cfg, audio_paths: Sequence[str | os.PathLike],
             val_paths: Sequence[str | os.PathLike], rank: int, device: torch.device) -> TrainingData:
        """Crops of ``crop_s`` (whole code frames); at most ``val_max_files`` validation files, read
        by rank 0 only (the one that validates)."""
        spf, rate_hz = model_cfg.samples_per_frame, model_cfg.sample_rate_hz
        crop = max(spf, round(cfg.crop_s * rate_hz) // spf * spf)
        corpus = load_corpus(audio_paths, rate_hz, model_cfg.input_rms, crop)
        batches = Batches(corpus, crop, cfg.batch_size, cfg.gain_db, cfg.seed, rank, device)
        files, seconds = len(corpus), sum(len(a) for a in corpus) / rate_hz
        del corpus  # packed into ``batches``
        val_audio = []
        if rank == 0 and val_paths:
            val_audio = load_corpus(list(val_paths)[: cfg.val_max_files], rate_hz, model_cfg.input_rms, spf)
        return cls(batches, val_audio, files, seconds, rate_hz)
