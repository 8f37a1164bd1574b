"""Which codec codes each model family, and what it can do: one record per family.

The model layer (:mod:`speechcodec.model.family`) registers networks and knows no codec; this
registry, above it, joins a family to the class that codes with it and says what that class
can do, so callers ask a record instead of probing a codec's methods:

- ``rates``: ``"one"``, a model per bitrate (the autoencoders), or ``"every"``, one model that
  codes any rate it is asked for (:meth:`at`; the perceptual family);
- ``streams``: it codes live, 20 ms at a time (``stream_encoder``, ``stream_decoder``);
- ``postfilter``: its streams carry the decoder postfilter's strengths.

A family without a record of its own is an autoencoder (:data:`AUTOENCODER`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CodecRecord:
    arch: str
    codec: str  # the class that codes with it, "module:Class" (imported on first use)
    rates: str = "one"  # "one": a model per bitrate; "every": the model codes any rate asked
    streams: bool = False
    postfilter: bool = False

    @property
    def every_rate(self) -> bool:
        return self.rates == "every"

    def codec_class(self) -> type:
        module, _, name = self.codec.partition(":")
        return getattr(importlib.import_module(module), name)


AUTOENCODER = CodecRecord("autoencoder", "speechcodec.codec:AutoencoderCodec", postfilter=True)
CODECS: dict[str, CodecRecord] = {}


def register_codec(record: CodecRecord) -> CodecRecord:
    if record.arch in CODECS:
        raise ValueError(f"a codec for family {record.arch!r} is registered twice")
    CODECS[record.arch] = record
    return record


def codec_record(arch: str) -> CodecRecord:
    """The record of model family ``arch`` (an autoencoder's unless it registered its own)."""
    return CODECS.get(arch) or replace(AUTOENCODER, arch=arch)


def capabilities(codec) -> CodecRecord:
    """What a loaded model's codec can do (its family's record)."""
    return codec_record(codec.config.arch)


register_codec(replace(AUTOENCODER, arch="folded"))
register_codec(replace(AUTOENCODER, arch="paper"))
register_codec(CodecRecord("perceptual", "speechcodec.perceptual.codec:PerceptualCodec", rates="every",
                           streams=True))
