"""The small ConvNet of the data-poisoning literature (forest ``convnet``)."""

from __future__ import annotations

from torch import nn

from poisonlab.models.layers import norm_layer


class ConvNet(nn.Module):
    """Five 3x3 conv layers of widths w, 2w, 2w, 4w, 4w with ReLU, two 3x3 max-pools and a linear head.

    ``norm="none"`` is exactly the reference layout; ``"batch"``/``"group"`` add a norm layer after each
    convolution. Works for inputs of 9x9 up to 35x35 pixels (28x28 and 32x32 both end at 3x3).

    Args:
        in_channels: image channels.
        num_classes: output logits.
        width: base width w (reference default 32).
        norm: "batch", "group" or "none".
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, norm: str = "batch") -> None:
        super().__init__()
        widths = [width, 2 * width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), norm_layer(norm, c_out), nn.ReLU()]
            if i >= 3:
                layers.append(nn.MaxPool2d(3))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(36 * width, num_classes)

    def forward(self, x):  # noqa: D102
        return self.head(self.features(x).flatten(1))
