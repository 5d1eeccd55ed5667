"""Differentiable data augmentation: random translation (zero padding) and horizontal flip.

Used inside training and inside poison crafting (gradients flow to the input), as in the
gradient-matching reference code's differentiable augmentation.
"""

from __future__ import annotations

import torch
from torch import nn


class DifferentiableAugment(nn.Module):
    """Shift each image by an integer (dy, dx) in [-shift, shift] with zero fill, and flip it with
    probability 1/2 when ``flip``. Pure index arithmetic: the output is differentiable in ``x``.

    Args:
        shift: maximum translation in pixels (4 at 32x32 is the reference's random crop with padding 4).
        flip: random horizontal flips (off for digits, where a flip changes the class).
    """

    def __init__(self, shift: int = 4, flip: bool = True) -> None:
        super().__init__()
        if shift < 0:
            raise ValueError("shift must be >= 0")
        self.shift = shift
        self.flip = flip

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        s = self.shift
        if s > 0:
            offsets = torch.randint(0, 2 * s + 1, (2, b), device=x.device, generator=generator)
            padded = nn.functional.pad(x, (s, s, s, s))
            rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (b, h)
            cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (b, w)
            bi = torch.arange(b, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.flip:
            mask = torch.rand(b, device=x.device, generator=generator) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x.contiguous()

    @staticmethod
    def for_shape(shape: tuple[int, int, int]) -> DifferentiableAugment:
        """Reference defaults scaled to the image: shift = size/8 (4 at 32px), flips for colour images."""
        c, h, _ = shape
        return DifferentiableAugment(shift=max(1, h // 8), flip=c == 3)
