"""Model families: the networks a ``ModelConfig`` can name in ``arch``, each registered here once.

A family is an autoencoder class that keeps the :class:`Autoencoder` contract (below) plus one
:class:`Family` record: its name, where its class lives (imported on first use, so this module
needs no torch), its samples per code frame, its own checks, which ``ModelConfig`` fields it
reads and how a model card describes it. To add one, write the class and call :func:`register`
here; the config checker, ``speechcodec models``, the codec and the cards follow.

The contract the codec relies on (``speechcodec.codec``; a ``typing.Protocol`` here, checked
when a network is built)::

    encode(x: [B, 1, T]) -> [B, code_channels, T / samples_per_frame]   (float latent)
    decode(y: [B, code_channels, F]) -> [B, 1, F * samples_per_frame]    (waveform)
    encoder_context_frames: int   # code frames a chunk must see beyond its edges for the
    decoder_context_frames: int   # same codes / samples as coding the whole signal at once

``T`` is a multiple of ``samples_per_frame``. Quantisation and the prior are not the family's:
``CodecModel`` puts every family behind the same rounding and entropy model.

Which codec codes a family, and what it can do, is not this layer's: :mod:`speechcodec.codecs`
holds a record per family. The perceptual family's network is a frame-causal decoder-side
enhancer of the textbook transform coder's dequantised spectrum; it keeps no learned tables in
its model file (``Family.tables``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from speechcodec.model.config import ModelConfig


@runtime_checkable
class Autoencoder(Protocol):
    """What the codec needs of a family's network (a torch ``nn.Module``)."""

    encoder_context_frames: int
    decoder_context_frames: int

    def encode(self, x: Any) -> Any: ...

    def decode(self, y_hat: Any) -> Any: ...


def _no_check(cfg: ModelConfig) -> None:
    return None


@dataclass(frozen=True)
class Family:
    name: str
    network: str | type  # the class, or "module:Class" to import it when a model is first built
    samples_per_frame: Callable[[ModelConfig], int]
    describe: Callable[[ModelConfig], str]  # one Markdown line for a model card
    settings: tuple[str, ...]  # the ModelConfig fields it reads beyond the shared ones
    check: Callable[[ModelConfig], None] = _no_check  # raise ValueError for a config it cannot build
    summary: str = ""
    tables: bool = True  # its model file holds learned entropy tables (``entropy.pmf``)

    def network_class(self) -> type:
        return self.network if not isinstance(self.network, str) else _import(self.network)


def _import(spec: str) -> type:
    import importlib

    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def family_of(cfg: ModelConfig) -> Family:
    return FAMILIES[cfg.arch]


def _describe_folded(cfg: ModelConfig) -> str:
    head = "sub-pixel decoder"
    if cfg.decoder_head == "istft":
        window_ms = 1000 * cfg.istft_window_frames * cfg.fold * cfg.downsample / cfg.sample_rate_hz
        head = f"Vocos-style iSTFT decoder ({window_ms:g} ms window)"
    fold_hz = cfg.sample_rate_hz / cfg.fold
    return (f"`folded` + {head}: {cfg.fold}-sample folding, {cfg.fold_width} channels at {fold_hz:.0f} Hz, "
            f"{cfg.width} at {fold_hz / cfg.downsample:.0f} Hz, {cfg.res_blocks} residual blocks per stage, "
            f"{cfg.code_channels} code channels at {fold_hz / cfg.downsample:.0f} Hz")


def _describe_paper(cfg: ModelConfig) -> str:
    return (f"`paper` (the 2018 paper's network): {cfg.width} channels at the sample rate, "
            f"{cfg.res_blocks} residual blocks, sub-pixel decoder, {cfg.code_channels} code channels")


def _check_paper(cfg: ModelConfig) -> None:
    if cfg.decoder_head != "subpixel":
        raise ValueError("arch 'paper' uses the sub-pixel decoder")


register(Family(
    name="folded",
    network="speechcodec.model.folded:FoldedAutoencoder",
    samples_per_frame=lambda cfg: cfg.fold * cfg.downsample,
    describe=_describe_folded,
    settings=("fold", "fold_width", "downsample", "decoder_head", "istft_window_frames"),
    summary="ours (default): the waveform folded into frames first, so convolutions run at frame rate",
))
register(Family(
    name="paper",
    network="speechcodec.model.paper:PaperAutoencoder",
    samples_per_frame=lambda cfg: cfg.downsample,
    describe=_describe_paper,
    settings=("downsample",),
    check=_check_paper,
    summary="the 2018 paper's network, at the sample rate (slow: the paper's reference row)",
))


def _describe_perceptual(cfg: ModelConfig) -> str:
    return (f"`perceptual`: the textbook transform coder's stream (20 ms MDCT frames, band energies, "
            f"coefficients over their band's RMS^0.5), decoded through a frame-causal enhancer of "
            f"{cfg.width} channels and {cfg.res_blocks} residual blocks; one model for every bitrate"
            + (f"; its output keeps the textbook decoder's band energies at steps below "
               f"2^({cfg.energy_none_step}/64), fully below 2^({cfg.energy_full_step}/64)"
               + (f", and its all-zero bands filled at up to {cfg.fill_gain16}/16 of the textbook decoder's "
                  "noise fill along the same ramp" if cfg.fill_gain16 != 16 else "")
               if cfg.energy_none_step > cfg.energy_full_step else ""))


def _check_perceptual(cfg: ModelConfig) -> None:
    if cfg.code_channels != 320 or cfg.sample_rate_hz != 16000:
        raise ValueError("arch 'perceptual' codes 320 MDCT coefficients a 20 ms frame at 16000 Hz "
                         "(code_channels 320, sample_rate_hz 16000)")
    if not 1 <= cfg.fill_gain16 <= 64:
        raise ValueError(f"fill_gain16 is in sixteenths of the textbook noise fill, 1 to 64, "
                         f"got {cfg.fill_gain16}")


register(Family(
    name="perceptual",
    network="speechcodec.perceptual.network:Enhancer",
    samples_per_frame=lambda cfg: 320,
    describe=_describe_perceptual,
    settings=("width", "res_blocks", "energy_full_step", "energy_none_step", "fill_gain16"),
    check=_check_perceptual,
    summary="the textbook transform coder's stream with a network at its decoder: one model, every rate",
    tables=False,
))
