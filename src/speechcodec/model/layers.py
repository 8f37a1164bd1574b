"""Building blocks: centred convolutions, residual blocks, space-to-depth and depth-to-space."""

from __future__ import annotations

import torch
from torch import nn


def conv1d(c_in: int, c_out: int, kernel_size: int, dilation: int = 1) -> nn.Conv1d:
    """A 'same'-length convolution (odd kernel, symmetric zero padding)."""
    return nn.Conv1d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2 * dilation,
                     dilation=dilation)


def conv_radius(kernel_size: int, dilation: int = 1) -> int:
    """How many steps either side of an output a centred convolution reads."""
    return (kernel_size - 1) // 2 * dilation


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU}[name]()


class ResBlock(nn.Module):
    """``x + conv(act(conv_dilated(act(x))))``: two convolutions with a skip connection."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, act: str = "gelu"):
        super().__init__()
        self.body = nn.Sequential(
            activation(act),
            conv1d(channels, channels, kernel_size, dilation),
            activation(act),
            conv1d(channels, channels, kernel_size),
        )
        self.radius = conv_radius(kernel_size, dilation) + conv_radius(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[B, C, T]`` -> ``[B, C * factor, T / factor]``: each output step holds ``factor`` inputs."""
    b, c, t = x.shape
    return x.reshape(b, c, t // factor, factor).permute(0, 1, 3, 2).reshape(b, c * factor, t // factor)


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`: ``[B, C * factor, T]`` -> ``[B, C, T * factor]``."""
    b, cf, t = x.shape
    c = cf // factor
    return x.reshape(b, c, factor, t).permute(0, 1, 3, 2).reshape(b, c, t * factor)


class SpaceToDepth(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.factor)


class DepthToSpace(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(x, self.factor)


def res_stack(channels: int, kernel_size: int, count: int, act: str, dilate: bool) -> nn.Sequential:
    """``count`` residual blocks; with ``dilate`` their dilations grow 1, 3, 9, ..."""
    return nn.Sequential(*[
        ResBlock(channels, kernel_size, 3**i if dilate else 1, act) for i in range(count)
    ])


def stack_radius(stack: nn.Sequential) -> int:
    return sum(block.radius for block in stack)


CODE_INIT_GAIN = 64.0


def init_code_scale(conv: nn.Conv1d, gain: float = CODE_INIT_GAIN) -> None:
    """Scale the last encoder convolution so that codes start spread over several integers.

    With default initialisation the latent starts near 0.03, every code rounds to 0, and the
    rate can only climb slowly from nothing; starting wide, the rate controller brings it
    down to the target from above, which it does quickly and reliably.
    """
    with torch.no_grad():
        conv.weight.mul_(gain)
        if conv.bias is not None:
            conv.bias.zero_()
