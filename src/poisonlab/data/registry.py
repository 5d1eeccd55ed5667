"""Dataset registry: name -> loader, with where-to-put-the-files hints for on-disk datasets."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from poisonlab.data.dataset import Splits
from poisonlab.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """How to obtain one dataset.

    Args:
        name: registry name.
        loader: ``loader(root) -> Splits``; ``root`` is None for embedded datasets.
        description: one line for ``poisonlab datasets``.
        embedded: True when the data ships inside an installed package (always available).
        files: for on-disk datasets, which files to put in the dataset's folder.
    """

    name: str
    loader: Callable[[Path | None], Splits]
    description: str
    embedded: bool
    files: str = ""


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    _ensure_builtin()
    return sorted(DATASETS)


def default_root(name: str) -> Path:
    """Where an on-disk dataset is looked for when no root is given: $POISONLAB_DATA/<name> or ./data/<name>."""
    base = os.environ.get("POISONLAB_DATA", "data")
    return Path(base) / name


def load_dataset(name: str, root: str | Path | None = None) -> Splits:
    """Load a registered dataset's fixed train/test split on the CPU."""
    _ensure_builtin()
    if name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    if spec.embedded:
        return spec.loader(None)
    return spec.loader(Path(root) if root is not None else default_root(name))


def _ensure_builtin() -> None:
    # always import (a no-op once imported): a module imported on its own must not hide the others
    from poisonlab.data import embedded, ondisk, photos, tabular  # noqa: F401  (registration by import)
