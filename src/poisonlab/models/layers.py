"""Small shared layers."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer, so attacks work in pixel space [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self._values = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        self.register_buffer("mean", torch.empty(1, len(mean), 1, 1))
        self.register_buffer("std", torch.empty(1, len(std), 1, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.tensor(self._values[0]).view(1, -1, 1, 1))
            self.std.copy_(torch.tensor(self._values[1]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, GroupNorm (groups of up to 32 channels; safe for per-sample gradients) or identity."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()
