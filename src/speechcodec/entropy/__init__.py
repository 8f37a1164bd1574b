"""Quantisation and the learned probability model of the codes, frozen to integer tables."""

from speechcodec.entropy.factorized import FactorizedPrior
from speechcodec.entropy.quantizer import quantize

__all__ = ["FactorizedPrior", "quantize"]
