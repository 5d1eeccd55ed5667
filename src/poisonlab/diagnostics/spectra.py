"""Singular-value spectra of a network's weight matrices, effective rank and numerical rank.

Goldblum, Geiping, Schwarzschild, Moeller & Goldstein, "Truth or Backpropaganda? An Empirical Investigation of Deep
Learning Theory" (ICLR 2020, arXiv 1910.00359), section on rank. As in their reference code
(``goldblum/TruthOrBackpropaganda``, ``Rank_study/singular_values.py``), a convolution is taken as the linear
operator it applies to its input: for a stride-1 convolution with circular boundary conditions on an ``n x m``
input, the 2-D DFT block-diagonalises the operator (Sedghi, Gupta & Long, "The Singular Values of Convolutional
Layers", ICLR 2019), so its singular values are the union over the ``n * m`` frequencies of the singular values of
the ``c_out x c_in`` matrices of the kernel's DFT. The operator is ``(c_out n m) x (c_in n m)``. For zero padding
or strides this is the spectrum of the circular stride-1 operator of the same kernel (what the reference computes
for every ResNet layer). ``conv_mode="reshape"`` instead takes the kernel as a ``c_out x (c_in kh kw)`` matrix.

Effective rank (Roy & Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007):
``exp(H(p))`` with ``p_k = s_k / sum(s)`` and ``H`` the Shannon entropy (nats). Numerical rank: the number of singular
values above ``tol``, by default ``s_max * max(M, N) * eps(dtype)`` as ``numpy.linalg.matrix_rank``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

ConvMode = Literal["operator", "reshape"]


def effective_rank(singular_values: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank ``exp(-sum p log p)``, ``p = s / ||s||_1``; 0.0 for an all-zero spectrum."""
    s = singular_values.detach().double().abs().flatten()
    total = s.sum()
    if s.numel() == 0 or total <= 0:
        return 0.0
    p = s / total
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum()
    return float(entropy.exp())


def default_tolerance(singular_values: torch.Tensor, shape: tuple[int, int]) -> float:
    """``s_max * max(M, N) * eps``: numpy's ``matrix_rank`` default for an ``M x N`` matrix of this dtype."""
    if singular_values.numel() == 0:
        return 0.0
    eps = torch.finfo(singular_values.dtype).eps
    return float(singular_values.max()) * max(shape) * eps


def numerical_rank(singular_values: torch.Tensor, shape: tuple[int, int], tol: float | None = None) -> int:
    """The number of singular values strictly above ``tol`` (default :func:`default_tolerance`)."""
    tol = default_tolerance(singular_values, shape) if tol is None else tol
    return int((singular_values > tol).sum())


def _fft_size(weight: torch.Tensor, input_size: tuple[int, int]) -> tuple[int, int]:
    """The DFT size: the input's, or the kernel's where the kernel is larger (so no tap is cropped)."""
    return max(int(input_size[0]), weight.shape[-2]), max(int(input_size[1]), weight.shape[-1])


def conv_transform(weight: torch.Tensor, input_size: tuple[int, int], groups: int = 1) -> torch.Tensor:
    """The kernel's 2-D DFT at ``input_size`` as ``(groups, n, m, c_out/g, c_in/g)`` complex matrices."""
    out, cin_g = weight.shape[:2]
    w = weight.reshape(groups, out // groups, cin_g, *weight.shape[-2:])
    t = torch.fft.fft2(w, s=_fft_size(weight, input_size))  # (g, out/g, in/g, n, m)
    return t.permute(0, 3, 4, 1, 2)


def conv_singular_values(weight: torch.Tensor, input_size: tuple[int, int], groups: int = 1) -> torch.Tensor:
    """All singular values of the circular stride-1 convolution operator of ``weight`` on ``input_size`` inputs,
    sorted in decreasing order (``groups * n * m * min(c_out, c_in) / groups`` of them).

    Args:
        weight: ``(c_out, c_in / groups, kh, kw)`` kernel.
        input_size: ``(n, m)`` spatial size of the layer's input.
        groups: the convolution's groups (the operator is block-diagonal over groups).
    """
    t = conv_transform(weight.detach(), input_size, groups)
    s = torch.linalg.svdvals(t).flatten()
    return s.sort(descending=True).values


def matrix_singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D matrix, decreasing."""
    return torch.linalg.svdvals(matrix.detach())


@dataclass(frozen=True)
class LayerSpectrum:
    """The spectrum of one weight matrix (or convolution operator).

    Attributes:
        name: the module's name in the model.
        kind: ``"conv"`` or ``"linear"``.
        weight_shape: the parameter's shape.
        operator_shape: ``(M, N)`` of the matrix whose singular values these are.
        input_size: spatial input size used for a convolution operator (None otherwise).
        singular_values: decreasing, float tensor on the CPU.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    operator_shape: tuple[int, int]
    input_size: tuple[int, int] | None
    singular_values: torch.Tensor

    @property
    def max_rank(self) -> int:
        """The largest rank the operator can have (the number of singular values; block-diagonal for groups)."""
        return int(self.singular_values.numel())

    def effective_rank(self) -> float:
        return effective_rank(self.singular_values)

    def numerical_rank(self, tol: float | None = None) -> int:
        return numerical_rank(self.singular_values, self.operator_shape, tol)

    def summary(self, tol: float | None = None) -> dict[str, object]:
        """JSON-able numbers: ranks, extreme singular values, stable rank ``||A||_F^2 / ||A||_2^2``."""
        s = self.singular_values.double()
        top = float(s[0]) if s.numel() else 0.0
        erank = self.effective_rank()
        return {
            "name": self.name,
            "kind": self.kind,
            "weight_shape": list(self.weight_shape),
            "operator_shape": list(self.operator_shape),
            "input_size": list(self.input_size) if self.input_size else None,
            "max_rank": self.max_rank,
            "effective_rank": erank,
            "effective_rank_ratio": erank / self.max_rank if self.max_rank else math.nan,
            "numerical_rank": self.numerical_rank(tol),
            "spectral_norm": top,
            "smallest_singular_value": float(s[-1]) if s.numel() else 0.0,
            "stable_rank": float((s**2).sum() / top**2) if top > 0 else 0.0,
        }


def conv_input_sizes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, int]]:
    """Spatial input size of every ``Conv2d`` in ``model``, from one forward pass of a zero image (eval mode,
    no grad; the model's mode is restored)."""
    sizes: dict[str, tuple[int, int]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):

            def pre(mod: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                sizes[name] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

            handles.append(m.register_forward_pre_hook(pre))
    was = model.training
    model.eval()
    try:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return sizes


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv2d and Linear, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def layer_spectra(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, conv_mode: ConvMode = "operator"
) -> list[LayerSpectrum]:
    """Spectra of every Conv2d and Linear weight of ``model``.

    Args:
        model: the network.
        input_shape: ``(C, H, W)`` of one input; needed for ``conv_mode="operator"`` when the model has convolutions.
        conv_mode: ``"operator"`` (the paper's: the convolution as a linear map of its input, via the DFT) or
            ``"reshape"`` (the kernel as a ``c_out x c_in kh kw`` matrix).
    """
    if conv_mode not in ("operator", "reshape"):
        raise ValueError(f"conv_mode: expected 'operator' or 'reshape', got {conv_mode!r}")
    layers = weight_layers(model)
    sizes: dict[str, tuple[int, int]] = {}
    if conv_mode == "operator" and any(isinstance(m, nn.Conv2d) for _, m in layers):
        if input_shape is None:
            raise ValueError("layer_spectra: input_shape is needed for convolution operators")
        sizes = conv_input_sizes(model, input_shape)
    out = []
    for name, m in layers:
        w = m.weight.detach().float().cpu()
        if isinstance(m, nn.Conv2d) and conv_mode == "operator" and name in sizes:
            n, k = _fft_size(w, sizes[name])
            s = conv_singular_values(w, sizes[name], m.groups)
            shape = (w.shape[0] * n * k, w.shape[1] * m.groups * n * k)
            out.append(LayerSpectrum(name, "conv", tuple(w.shape), shape, sizes[name], s))
        elif isinstance(m, nn.Conv2d):
            mat = w.reshape(w.shape[0], -1)
            out.append(LayerSpectrum(name, "conv", tuple(w.shape), tuple(mat.shape), None, matrix_singular_values(mat)))
        else:
            out.append(LayerSpectrum(name, "linear", tuple(w.shape), tuple(w.shape), None, matrix_singular_values(w)))
    return out
