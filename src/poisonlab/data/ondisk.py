"""Datasets a user already has on disk (never downloaded): MNIST, Fashion-MNIST, CIFAR-10/100, image folders."""

from __future__ import annotations

from pathlib import Path

from poisonlab.data.dataset import Splits
from poisonlab.data.registry import DatasetSpec, register_dataset

_IDX_FILES = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)"
)


def _mnist(root: Path | None) -> Splits:
    from poisonlab.data.formats.idx import load_mnist_like

    return load_mnist_like(root, "mnist")


def _fashion(root: Path | None) -> Splits:
    from poisonlab.data.formats.idx import load_mnist_like

    return load_mnist_like(root, "fashion-mnist")


def _cifar10(root: Path | None) -> Splits:
    from poisonlab.data.formats.cifar import load_cifar

    return load_cifar(root, 10)


def _cifar100(root: Path | None) -> Splits:
    from poisonlab.data.formats.cifar import load_cifar

    return load_cifar(root, 100)


def _folder(root: Path | None) -> Splits:
    from poisonlab.data.formats.imagefolder import load_image_folder

    return load_image_folder(root)


register_dataset(DatasetSpec("mnist", _mnist, "MNIST, 60,000 train / 10,000 test (IDX files)", False, _IDX_FILES))
register_dataset(
    DatasetSpec("fashion-mnist", _fashion, "Fashion-MNIST, 60,000 / 10,000 (IDX files)", False, _IDX_FILES)
)
register_dataset(
    DatasetSpec(
        "cifar10",
        _cifar10,
        "CIFAR-10, 50,000 / 10,000 colour 32x32",
        False,
        "data_batch_1.bin .. data_batch_5.bin and test_batch.bin (binary version), "
        "or data_batch_1 .. data_batch_5 and test_batch (python version)",
    )
)
register_dataset(
    DatasetSpec(
        "cifar100",
        _cifar100,
        "CIFAR-100 (fine labels), 50,000 / 10,000 colour 32x32",
        False,
        "train.bin and test.bin (binary version), or train and test (python version)",
    )
)
register_dataset(
    DatasetSpec(
        "imagefolder",
        _folder,
        "your images, one folder per class",
        False,
        "train/<class>/*.png|jpg and test/<class>/*.png|jpg, or <class>/*.png|jpg (split 80/20)",
    )
)
