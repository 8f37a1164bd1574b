"""Reference codecs behind the same ``encode(audio, rate) -> bytes`` / ``decode(bytes)`` interface."""

from speechcodec.baselines.opus import OpusCodec

__all__ = ["OpusCodec"]
