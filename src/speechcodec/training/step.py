"""One training step: the learning-rate schedule, the rate-distortion loss, the optional
adversarial terms, and a guarded update.

loss = stft_weight * STFT + mse_weight * normalised MSE + lambda * kbps, where kbps is the ideal
rate of the rounded codes under the learned prior (plus, when asked, adversarial and
feature-matching terms against a discriminator trained alongside: ``training.adversarial``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechcodec.training.adversarial import discriminator_loss, feature_matching_loss, generator_loss
from speechcodec.training.checkpoint import Trainables
from speechcodec.training.config import TrainConfig
from speechcodec.training.losses import loudness_loss, normalized_mse, stft_loss


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Constant, then linear decay to 0 from ``lr_decay_from`` of the run; a linear warm-up first."""
    decay_from = int(cfg.steps * cfg.lr_decay_from)
    lr = cfg.lr if step < decay_from else cfg.lr * (cfg.steps - step) / max(1, cfg.steps - decay_from)
    if step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


@dataclass
class StepResult:
    """What a step measured, as tensors (no GPU sync every step); the adversarial values are None
    when not computed."""

    loss: torch.Tensor
    stft: torch.Tensor
    mse: torch.Tensor
    kbps: torch.Tensor
    grad_norm: torch.Tensor
    adversarial: list
    updated: bool
    loudness: torch.Tensor | None = None

    def row(self, step: int, measured_kbps: float, rate_lambda: float, lr: float, speed: float) -> list:
        """The step's row of ``metrics.csv`` (``logs.TRAIN_FIELDS``)."""
        return [step, self.loss.item(), self.stft.item(), self.mse.item(), measured_kbps, rate_lambda,
                lr, float(self.grad_norm), round(speed, 2),
                *("" if v is None else float(v) for v in self.adversarial),
                "" if self.loudness is None else float(self.loudness)]


def training_step(net: torch.nn.Module, disc_net: torch.nn.Module | None, parts: Trainables,
                  x: torch.Tensor, cfg: TrainConfig, rate_lambda: float, step: int, amp: bool,
                  batch_audio_s: float) -> StepResult:
    """Compress and rebuild batch ``x``, and update. A non-finite loss or gradient would poison
    Adam's state and every later step: that update is skipped (the step still counts, so
    schedules and resumption stay aligned)."""
    device = x.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        x_hat, _, bits = net(x)
    x_hat = x_hat.float()
    kbps = bits / batch_audio_s / 1000
    l_stft = stft_loss(x_hat, x)
    l_mse = normalized_mse(x_hat, x)
    loss = cfg.stft_weight * l_stft + cfg.mse_weight * l_mse + rate_lambda * kbps
    l_loud = None
    if cfg.loudness_weight:
        l_loud = loudness_loss(x_hat, x, parts.model.cfg.sample_rate_hz)
        loss = loss + cfg.loudness_weight * l_loud
        l_loud = l_loud.detach()
    adversarial = [None, None, None]
    if parts.disc is not None:
        loss, adversarial = adversarial_step(parts, disc_net, x, x_hat, loss, cfg, step, amp)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.grad_clip_norm or float("inf"))
    updated = bool(torch.isfinite(loss) and torch.isfinite(grad_norm))
    if updated:
        parts.optimizer.step()
    return StepResult(loss, l_stft, l_mse, kbps, grad_norm, adversarial, updated, l_loud)


def adversarial_step(parts: Trainables, disc_net: torch.nn.Module, x: torch.Tensor, x_hat: torch.Tensor,
                     loss: torch.Tensor, cfg: TrainConfig, step: int, amp: bool):
    """Update the discriminator on this batch, then add the codec's adversarial and
    feature-matching terms (from ``adversarial_from_step``) against the updated one.

    Returns the codec's loss and the three values logged, as tensors: adversarial, feature
    matching, discriminator; the first two None before ``adversarial_from_step``."""
    disc, device = parts.disc, x.device
    disc.requires_grad_(True)
    n = x.shape[0]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        # real and decoded speech as one batch: one call through the discriminator, not two
        both = disc_net(torch.cat([x, x_hat.detach()]))
        real = [(logits[:n], [f[:n] for f in maps]) for logits, maps in both]
        l_disc = discriminator_loss(real, [(logits[n:], []) for logits, _ in both])
    parts.disc_optimizer.zero_grad(set_to_none=True)
    l_disc.backward()
    norm = torch.nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip_norm or float("inf"))
    if torch.isfinite(l_disc) and torch.isfinite(norm):  # as for the codec: skip a non-finite update
        parts.disc_optimizer.step()
    disc.requires_grad_(False)  # the codec's terms below move the codec only
    if step < cfg.adversarial_from_step:
        return loss, [None, None, l_disc.detach()]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        fake = disc(x_hat)
        l_adv, l_fm = generator_loss(fake).float(), feature_matching_loss(real, fake).float()
    loss = loss + cfg.adversarial_weight * l_adv + cfg.feature_matching_weight * l_fm
    return loss, [l_adv.detach(), l_fm.detach(), l_disc.detach()]
