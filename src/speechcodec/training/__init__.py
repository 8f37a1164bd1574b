"""Training: one model per target bitrate, resumable, on a CPU, a GPU or several GPUs.

Where things are:

- ``config``: ``TrainConfig``, every setting of a run (needs no torch: reading a config file,
  as the Snakefile does, never loads torch);
- ``loop``: ``train()``, which puts the parts below together, and the step loop;
- ``step``: the learning-rate schedule, the loss and one update;
- ``losses``, ``adversarial``: the distortion terms and the discriminator;
- ``rate``: the two controllers that keep the real bitrate on target;
- ``selection``: validation by really range-coding, the best weights, roll-back;
- ``checkpoint``: the work folder, checkpoint and resume;
- ``logs``: ``metrics.csv`` and ``val_metrics.csv``;
- ``lineage``: starting from an earlier model, and what the model file says of its run;
- ``distributed``: the device, and the processes of a multi-GPU run;
- ``launch``: from the command line's request (config file, flags, audio) to ``train()``.

``TrainConfig`` is imported here at once; everything else on first use.
"""

from __future__ import annotations

from speechcodec.training.config import TrainConfig

__all__ = ["Batches", "TrainConfig", "train"]

_LAZY = {"train": "loop", "Batches": "data"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"speechcodec.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'speechcodec.training' has no attribute {name!r}")
