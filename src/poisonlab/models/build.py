"""Model registry and construction with explicit-generator initialisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.convnet import ConvNet
from poisonlab.models.layers import Normalize
from poisonlab.models.lenet import LeNet5
from poisonlab.models.mlp import MLP
from poisonlab.models.resnet import ResNet18
from poisonlab.registry import Registry

Shape = tuple[int, int, int]
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


@MODELS.register("convnet")
def _convnet(shape: Shape, num_classes: int, width: int | None, norm: str) -> nn.Module:
    c, h, w = shape
    if not (9 <= h <= 35 and 9 <= w <= 35):
        raise ConfigError(f"model.name: convnet needs images of 9..35 pixels, got {h}x{w}; use mlp")
    return ConvNet(c, num_classes, width or 32, norm)


@MODELS.register("mlp")
def _mlp(shape: Shape, num_classes: int, width: int | None, norm: str) -> nn.Module:
    return MLP(math.prod(shape), num_classes, width or 256)


@MODELS.register("lenet")
def _lenet(shape: Shape, num_classes: int, width: int | None, norm: str) -> nn.Module:
    c, h, w = shape
    if h != w or h not in (28, 32):
        raise ConfigError(f"model.name: lenet needs 28x28 or 32x32 images, got {h}x{w}")
    return LeNet5(c, num_classes, h, width or 1)


@MODELS.register("resnet18")
def _resnet18(shape: Shape, num_classes: int, width: int | None, norm: str) -> nn.Module:
    return ResNet18(shape[0], num_classes, width or 64, norm)


def build_model(
    name: str,
    shape: Shape,
    num_classes: int,
    generator: torch.Generator,
    width: int | None = None,
    norm: str = "batch",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    device: torch.device | str = "cpu",
) -> nn.Sequential:
    """Build ``Normalize -> architecture`` on ``device``, initialised only from ``generator``.

    The module is constructed on the meta device (consuming no random numbers) and then initialised
    with PyTorch's default schemes drawn from ``generator``, so the global RNG is never touched.

    Returns:
        ``nn.Sequential(Normalize(mean, std), net)``; inputs are images in [0, 1].
    """
    factory = MODELS.get(name, "model.name")
    c = shape[0]
    mean = mean or (0.5,) * c
    std = std or (0.25,) * c
    with torch.device("meta"):
        model = nn.Sequential(Normalize(mean, std), factory(shape, num_classes, width, norm))
    model = model.to_empty(device=device)
    init_parameters(model, generator)
    return model


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter and buffer with PyTorch's default schemes, drawing from ``generator``.

    Conv/Linear: weight ~ kaiming_uniform(a=sqrt(5)), bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Norm layers: weight 1, bias 0, running statistics reset. Modules are visited in registration order.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                g = generator if m.weight.device.type == generator.device.type else None
                _default_init(m, g, generator)
            else:
                if hasattr(m, "reset_parameters") and m is not model:
                    m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()


def _default_init(m: nn.Module, g: torch.Generator | None, generator: torch.Generator) -> None:
    fan_in = m.weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    # kaiming_uniform(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as well.
    if g is None:  # parameters on another device: draw on the generator's device, then copy
        m.weight.copy_(_uniform(m.weight.shape, bound, generator))
        if m.bias is not None:
            m.bias.copy_(_uniform(m.bias.shape, bound, generator))
        return
    m.weight.uniform_(-bound, bound, generator=g)
    if m.bias is not None:
        m.bias.uniform_(-bound, bound, generator=g)


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(shape, device=generator.device).uniform_(-bound, bound, generator=generator)
