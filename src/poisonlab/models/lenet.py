"""LeNet-5 (modern variant: ReLU and max-pooling)."""

from __future__ import annotations

from torch import nn


class LeNet5(nn.Module):
    """conv5(6) -> pool -> conv5(16) -> pool -> 120 -> 84 -> classes.

    28x28 inputs are padded by 2 in the first convolution, as in the original 32x32 design.

    Args:
        in_channels: image channels.
        num_classes: output logits.
        size: input height/width (28 or 32).
        width: multiplier on the 6/16 conv channels (default 1).
    """

    def __init__(self, in_channels: int, num_classes: int, size: int = 32, width: int = 1) -> None:
        super().__init__()
        if size not in (28, 32):
            raise ValueError("LeNet-5 expects 28x28 or 32x32 images")
        pad = 2 if size == 28 else 0
        c1, c2 = 6 * width, 16 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 25, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):  # noqa: D102
        return self.head(self.features(x))
