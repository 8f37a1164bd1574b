"""The hyper-parameters of a codec model: one JSON-serialisable record stored inside each model file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from speechcodec.contexts import NUM_CONTEXTS
from speechcodec.model.family import FAMILIES

_KINDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
          "str | None": "text or null"}


def _fits(value, annotation: str) -> bool:
    if isinstance(value, bool) or annotation == "bool":
        return isinstance(value, bool) and annotation == "bool"
    return {"int": isinstance(value, int), "float": isinstance(value, (int, float)),
            "str": isinstance(value, str),
            "str | None": value is None or isinstance(value, str)}.get(annotation, True)


def checked_dataclass(cls, values: dict, what: str):
    """``cls(**values)``, refusing keys ``cls`` does not have and values of the wrong type with a
    message naming them. YAML reads ``1e-3`` (no dot) as text: a number field takes it as meant."""
    known = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} config key(s): {', '.join(unknown)}")
    values = dict(values)
    for name, value in values.items():
        if known[name] == "float" and isinstance(value, str):
            try:
                values[name] = value = float(value)
            except ValueError:
                pass
        if not _fits(value, known[name]):
            raise ValueError(f"{what}.{name} must be {_KINDS.get(known[name], known[name])}, got {value!r}")
    return cls(**values)
DECODER_HEADS = ("subpixel", "istft")
PRIOR_CONTEXTS = ("none", "previous")
# Fields added after the first model files: written (and fingerprinted) only when not at their
# default, so every model file made before them keeps its config and its fingerprint.
LATER_FIELDS = {"prior_context": "none", "istft_window_frames": 4, "energy_full_step": 0, "energy_none_step": 0,
                "fill_gain16": 16}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and coding parameters. Units are in the names; counts are plain ints.

    ``arch`` names a model family (``speechcodec.model.family``): ``folded`` (default), the
    waveform folded into frames of ``fold`` samples first (space-to-depth), so nearly every
    convolution runs at the code's frame rate; ``paper``, the 2018 paper's autoencoder. The record
    is flat, because model files store it as it is (and their fingerprints hash it): each family
    says which of the fields below it reads (``Family.settings``).
    """

    arch: str = "folded"
    sample_rate_hz: int = 16000
    code_channels: int = 32
    width: int = 128  # channels at the code frame rate
    fold_width: int = 64  # channels at the fold rate (folded arch only)
    kernel_size: int = 5
    res_blocks: int = 3  # residual blocks per stage
    fold: int = 40  # samples per folded frame (folded arch only)
    downsample: int = 2  # folded: frames per code frame; paper: samples per code frame
    decoder_head: str = "subpixel"  # "subpixel" upsampling, or "istft" (Vocos-style spectra)
    max_symbol: int = 32  # codes are clipped to +-max_symbol for range coding
    prior_components: int = 3  # logistic components per channel in the factorised prior
    input_rms: float = 0.05  # the codec scales audio to this RMS before the encoder
    prior_context: str = "none"  # "previous": tables chosen by the previous code frame
    istft_window_frames: int = 4  # iSTFT head: its window (and FFT) in code frames; 4 = 20 ms at 80 samples
    # perceptual: the decoder gives each band of the network's output the energy the textbook decoder
    # had, fully at quantiser steps at or below energy_full_step, not at all at or above
    # energy_none_step (64ths of an octave), in between in proportion; equal: never
    energy_full_step: int = 0
    energy_none_step: int = 0
    # perceptual: along the same ramp, the bands that quantised to all zeros are filled at up to
    # fill_gain16 sixteenths of the textbook decoder's noise fill (16: as the textbook decoder)
    fill_gain16: int = 16

    def __post_init__(self) -> None:
        if self.arch not in FAMILIES:
            raise ValueError(f"arch must be one of {tuple(FAMILIES)}, got {self.arch!r}")
        if self.decoder_head not in DECODER_HEADS:
            raise ValueError(f"decoder_head must be one of {DECODER_HEADS}, got {self.decoder_head!r}")
        if self.prior_context not in PRIOR_CONTEXTS:
            raise ValueError(f"prior_context must be one of {PRIOR_CONTEXTS}, got {self.prior_context!r}")
        FAMILIES[self.arch].check(self)
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd so convolutions stay centred")
        for name in ("code_channels", "width", "fold_width", "fold", "downsample", "max_symbol",
                     "prior_components", "sample_rate_hz"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.istft_window_frames < 2:  # one frame: hop = window, and Hann's zeros cannot overlap-add
            raise ValueError("istft_window_frames must be at least 2")

    @property
    def samples_per_frame(self) -> int:
        """Samples at ``sample_rate_hz`` per code frame."""
        return FAMILIES[self.arch].samples_per_frame(self)

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.samples_per_frame

    @property
    def prior_contexts(self) -> int:
        """Entropy tables per code channel (1: factorised)."""
        return NUM_CONTEXTS if self.prior_context == "previous" else 1

    def to_dict(self) -> dict:
        values = asdict(self)
        for key, default in LATER_FIELDS.items():
            if values[key] == default:
                del values[key]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        return checked_dataclass(cls, values, "model")
