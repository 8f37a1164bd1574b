"""speechcodec: a speech codec (pc: an MDCT transform coder with a neural enhancer at its decoder,
6 to 24 kbps; sc-3k: a learned autoencoder) and a safe range-coded format.

>>> import speechcodec
>>> codec = speechcodec.load("pc-12k")              # or a model file path
>>> data = codec.encode(audio, sample_rate)         # bytes
>>> audio_hat, rate = speechcodec.decode(data)      # picks the model named in the stream
"""

import importlib

from speechcodec.errors import (
    AudioInputError,
    BitstreamError,
    ChecksumError,
    DataError,
    ModelError,
    ModelMismatchError,
    SpeechCodecError,
    TrainingError,
    TruncatedBitstreamError,
    UnknownModelError,
    UnsupportedVersionError,
)

__version__ = "0.1.0"

# The codec and the model registry import torch (a second or more): they are loaded on first use,
# so that `speechcodec --help`, the errors and the bitstream reader start at once.
_LAZY = {"Codec": "speechcodec.codec", "EncodeStats": "speechcodec.codec", "decode": "speechcodec.registry",
         "list_models": "speechcodec.registry", "load": "speechcodec.registry",
         "model_for_bitrate": "speechcodec.registry"}

__all__ = [
    "AudioInputError",
    "BitstreamError",
    "ChecksumError",
    "Codec",
    "DataError",
    "EncodeStats",
    "ModelError",
    "ModelMismatchError",
    "SpeechCodecError",
    "TrainingError",
    "TruncatedBitstreamError",
    "UnknownModelError",
    "UnsupportedVersionError",
    "decode",
    "list_models",
    "load",
    "model_for_bitrate",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'speechcodec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
