"""The trained network: autoencoder plus prior over its codes (torch)."""

from __future__ import annotations

import torch
from torch import nn

from speechcodec.entropy import FactorizedPrior, quantize
from speechcodec.model.config import ModelConfig
from speechcodec.model.family import Autoencoder, family_of


def build_autoencoder(cfg: ModelConfig) -> nn.Module:
    """The network of ``cfg``'s family (``speechcodec.model.family``)."""
    network = family_of(cfg).network_class()(cfg)
    if not isinstance(network, Autoencoder):
        raise TypeError(f"model family {cfg.arch!r}: {type(network).__name__} lacks part of the "
                        "Autoencoder contract (encode, decode, encoder/decoder_context_frames)")
    return network


class CodecModel(nn.Module):
    """Autoencoder plus prior over the codes: everything that is trained.

    ``forward`` is the training view: it returns the reconstruction, the quantised latent and
    its ideal bit count. The codec (``speechcodec.codec``) uses ``autoencoder`` and the prior's
    frozen integer tables instead.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.autoencoder = build_autoencoder(cfg)
        self.prior = FactorizedPrior(cfg.code_channels, cfg.prior_components,
                                     contexts=cfg.prior_contexts)

    def forward(self, x: torch.Tensor, quant_mode: str = "round"):
        """``x``: ``[B, 1, T]`` -> ``(x_hat [B, 1, T], y_hat [B, C, F], bits scalar)``."""
        y = self.autoencoder.encode(x)  # [B, C, F]
        y_hat = quantize(y, "round")
        # The rate term can use a noisy proxy; the decoder always sees rounded codes.
        y_rate = y_hat if quant_mode == "round" else quantize(y, quant_mode)
        x_hat = self.autoencoder.decode(y_hat)
        return x_hat, y_hat, self.prior.bits(y_rate, self.prior.table_rows(y_hat))
