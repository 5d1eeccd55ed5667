"""Shared fixtures: tiny datasets and configs that train in well under a second."""

from __future__ import annotations

import pytest
import torch

from poisonlab.config import ExperimentConfig, TrainConfig, load_config
from poisonlab.data import Dataset, load_dataset


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models run fastest on one thread, and a second thread only adds spin-wait contention on a
    # busy 2-core machine. Benchmarks, not tests, measure multi-threaded speed.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_small() -> Dataset:
    """240 training digits (8x8), for MLP tests."""
    return load_dataset("digits").train.subset(torch.arange(240))


@pytest.fixture(scope="session")
def colour_small() -> Dataset:
    """96 synthetic colour images (3x32x32), for ConvNet tests."""
    return load_dataset("synthetic").train.subset(torch.arange(96))


@pytest.fixture
def tiny_recipe() -> TrainConfig:
    return TrainConfig(epochs=3, batch_size=32, lr=0.05)


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    """An end-to-end config on digits with an MLP: trains in about a second."""
    return load_config(
        overrides=[
            "data.name=digits",
            "model.name=mlp",
            "model.width=32",
            "train.epochs=3",
            "train.lr=0.05",
            "train.batch_size=64",
            "runtime.device=cpu",
        ]
    )
