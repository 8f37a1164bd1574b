"""Integers and tables to bytes and back: range coding and the container. No torch here."""

from speechcodec.bitstream.container import (
    FORMAT_VERSION,
    MAGIC,
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    Chunk,
    StreamHeader,
    read_header,
    read_stream,
    stream_bytes,
    write_chunk,
    write_end,
    write_header,
)
from speechcodec.bitstream.rangecoder import RangeCoder

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_SAMPLE_RATE_HZ",
    "MIN_SAMPLE_RATE_HZ",
    "Chunk",
    "RangeCoder",
    "StreamHeader",
    "read_header",
    "read_stream",
    "stream_bytes",
    "write_chunk",
    "write_end",
    "write_header",
]
