"""Reference codecs behind the same ``encode(audio, rate) -> bytes`` / ``decode(bytes)`` interface."""

from speechcodec.baselines.codec2 import Codec2Codec
from speechcodec.baselines.opus import OpusCodec
from speechcodec.baselines.transform import TransformCodec, TransformSettings

__all__ = ["Codec2Codec", "OpusCodec", "TransformCodec", "TransformSettings"]
