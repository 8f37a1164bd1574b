"""Waveform <-> latent floats, and the prior over the quantised latents. Knows nothing of bytes.

``ModelConfig`` needs no torch; the network (``CodecModel``, ``build_autoencoder``, in
``speechcodec.model.network``) is imported on first use, so reading a config never loads torch.
The families a config can name (``arch``), and the contract a new one keeps, are in
``speechcodec.model.family``.
"""

from __future__ import annotations

from speechcodec.model.config import ModelConfig

__all__ = ["CodecModel", "ModelConfig", "build_autoencoder"]


def __getattr__(name: str):
    if name in ("CodecModel", "build_autoencoder"):
        from speechcodec.model import network

        return getattr(network, name)
    raise AttributeError(f"module 'speechcodec.model' has no attribute {name!r}")
