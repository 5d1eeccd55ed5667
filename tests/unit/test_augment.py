"""Differentiable augmentation: a pure shift/flip, differentiable, reproducible from its generator."""

from __future__ import annotations

import torch

from poisonlab.training import DifferentiableAugment


def test_shift_moves_pixels_by_at_most_shift_and_fills_zeros() -> None:
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = DifferentiableAugment(shift=2, flip=False)(x, torch.Generator().manual_seed(0))
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert (out.sum(dim=(1, 2, 3)) == 1).all()  # nothing lost, nothing invented
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # shifts actually vary


def test_flip_and_determinism_and_gradient() -> None:
    x = torch.rand(16, 3, 8, 8, requires_grad=True)
    aug = DifferentiableAugment(shift=0, flip=True)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    flipped = [(torch.equal(a[i], x[i].flip(-1)) and not torch.equal(a[i], x[i])) for i in range(16)]
    same = [torch.equal(a[i], x[i]) for i in range(16)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)
    full = DifferentiableAugment(shift=2, flip=True)(x, torch.Generator().manual_seed(1))
    full.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_for_shape_defaults() -> None:
    assert DifferentiableAugment.for_shape((3, 32, 32)).shift == 4
    assert DifferentiableAugment.for_shape((3, 32, 32)).flip is True
    assert DifferentiableAugment.for_shape((1, 28, 28)).flip is False
