"""speechcodec: a neural speech codec with a learned entropy model and a safe range-coded format.

>>> import speechcodec
>>> codec = speechcodec.load("sc-6k")               # or a model file path
>>> data = codec.encode(audio, sample_rate)         # bytes
>>> audio_hat, rate = speechcodec.decode(data)      # picks the model named in the stream
"""

from speechcodec.codec import Codec, EncodeStats
from speechcodec.errors import (
    AudioInputError,
    BitstreamError,
    ChecksumError,
    ModelError,
    ModelMismatchError,
    SpeechCodecError,
    TrainingError,
    TruncatedBitstreamError,
    UnknownModelError,
    UnsupportedVersionError,
)
from speechcodec.registry import decode, list_models, load, model_for_bitrate

__version__ = "0.1.0"

__all__ = [
    "AudioInputError",
    "BitstreamError",
    "ChecksumError",
    "Codec",
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
