"""How to train, as a torch-free dataclass: reading a config file (``speechcodec.config``, the
Snakefile's parse) never imports torch."""

from __future__ import annotations

from dataclasses import dataclass

from speechcodec.model.config import checked_dataclass


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``bitrate_bps`` is the target the rate controllers steer the real rate to."""

    bitrate_bps: int
    steps: int = 2000
    batch_size: int = 16
    crop_s: float = 1.0
    lr: float = 1.5e-3
    lr_decay_from: float = 0.7  # fraction of steps after which the LR decays linearly to 0
    warmup_steps: int = 0  # LR rises linearly over these first steps: a run that starts from trained
    # weights (init_from) with fresh Adam moments would otherwise move every weight by ~lr at once
    mse_weight: float = 2.0
    stft_weight: float = 1.0
    rate_lambda: float = 0.05  # initial weight of kbps in the loss
    controller_gain: float = 0.02  # how fast lambda reacts to a relative rate error
    controller_lr_ref: float = 0.0  # when set, the learning rate the gain is meant for: the gain then
    # scales with the scheduled lr / this. The rate answers lambda at a speed proportional to the
    # step size, so a gain fixed for lr 1e-3 overshoots at 3e-4 (validation rate swung +-40 %)
    rate_tolerance: float = 0.10  # a validation can be the best only within this relative distance
    # of the target rate (the distortion falls with the rate: a wide band prefers the top of it)
    prior_lr_scale: float = 10.0  # learning-rate multiplier of the entropy model
    gain_db: float = 6.0  # random level augmentation, +-dB
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    val_max_files: int = 24  # validation files really range-coded at each checkpoint
    device: str = "auto"  # auto: CUDA when present, else CPU
    amp: str = "auto"  # bfloat16 autocast: auto = on GPU only; "on" also on CPU; "off"
    grad_clip_norm: float = 1.0  # global gradient-norm clip (0: off); keeps a bad batch from
    # throwing the model off (unclipped bf16 runs blew up after ~2,500 steps)
    rollback_factor: float = 1.5  # validation distortion above this x the best: back to the best
    # weights with fresh optimizer state (0: off); a collapsed or blown-up run recovers by itself
    init_from: str | None = None  # model name or file whose weights start a fresh run (not a resume)
    decoder_only: bool = False  # train the decoder alone: the encoder and the entropy tables, hence
    # every code and every byte written, stay those of the model started from (init_from)
    loudness_weight: float = 0.0  # weight of the Bark-band loudness loss (training.losses.loudness_loss)
    adversarial_weight: float = 0.0  # weight of the generator's hinge loss against a multi-resolution
    # STFT discriminator (speechcodec.training.adversarial); 0 with feature_matching_weight 0: no discriminator
    feature_matching_weight: float = 0.0  # weight of matching the discriminator's features on real speech
    adversarial_from_step: int = 0  # the codec feels those two terms from this step on; the
    # discriminator trains from the first (a run from trained weights gives it a head start)
    discriminator_lr: float = 1e-4

    def __post_init__(self) -> None:
        if self.decoder_only and not self.init_from:
            raise ValueError("decoder_only needs init_from: the model whose encoder and tables are kept")
        for name in ("bitrate_bps", "steps", "batch_size", "checkpoint_every", "log_every", "val_max_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.crop_s > 0:
            raise ValueError(f"crop_s must be positive, got {self.crop_s}")
        for name in ("lr", "prior_lr_scale", "loudness_weight", "adversarial_weight", "feature_matching_weight",
                     "adversarial_from_step", "discriminator_lr"):  # lr 0 freezes the weights
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return checked_dataclass(cls, values, "train")
