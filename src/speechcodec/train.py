"""Where the trainer was before it got a package of its own: ``speechcodec.training``.

Kept so that ``from speechcodec.train import train, TrainConfig`` goes on working.
"""

from __future__ import annotations

from speechcodec.training.checkpoint import resume_note, work_folder
from speechcodec.training.config import TrainConfig
from speechcodec.training.data import Batches
from speechcodec.training.loop import train

__all__ = ["Batches", "TrainConfig", "resume_note", "train", "work_folder"]
