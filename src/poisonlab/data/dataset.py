"""The one dataset type: image tensors in [0, 1], integer labels and stable integer ids."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from poisonlab.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """A labelled image dataset held as tensors.

    Args:
        name: dataset name, for messages and manifests.
        images: float32 tensor (N, C, H, W) with values in [0, 1] (pixel space "pixel01").
        labels: int64 tensor (N,).
        ids: int64 tensor (N,) of stable, unique sample ids.
        classes: class names; ``len(classes)`` is the number of classes.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    classes: tuple[str, ...]
    _id_index: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4:
            raise DataError(f"{self.name}: images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise DataError(f"{self.name}: images must be float32, got {self.images.dtype}")
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise DataError(
                f"{self.name}: labels and ids must have shape ({n},), got "
                f"{tuple(self.labels.shape)} and {tuple(self.ids.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.ids.dtype != torch.int64:
            raise DataError(f"{self.name}: labels and ids must be int64")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(f"{self.name}: labels must lie in [0, {len(self.classes)})")

    @staticmethod
    def from_numpy(
        name: str,
        images: np.ndarray,
        labels: np.ndarray,
        classes: tuple[str, ...] | list[str],
        ids: np.ndarray | None = None,
        scale: float = 255.0,
    ) -> Dataset:
        """Build from arrays shaped (N, H, W), (N, H, W, C) channels-last, or (N, C, H, W).

        Integer-valued images are divided by ``scale``; float images are taken as already in [0, 1].
        3-d arrays get a channel axis; 4-d arrays whose last axis is 1 or 3 are treated as channels-last.
        """
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[:, None]
        elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.ndim != 4:
            raise DataError(f"{name}: expected 3-d or 4-d image array, got shape {arr.shape}")
        x = arr.astype(np.float32)
        if np.issubdtype(arr.dtype, np.integer) or scale != 1.0 and float(x.max(initial=0.0)) > 1.0:
            x = x / np.float32(scale)
        if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise DataError(f"{name}: pixel values must lie in [0, {scale}]")
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        idx = np.arange(len(y), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        return Dataset(
            name=name,
            images=torch.from_numpy(np.ascontiguousarray(x)),
            labels=torch.from_numpy(y),
            ids=torch.from_numpy(idx),
            classes=tuple(str(c) for c in classes),
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> Dataset:
        """A copy on ``device`` (the same object when already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return Dataset(self.name, self.images.to(device), self.labels.to(device), self.ids.to(device), self.classes)

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> Dataset:
        """Rows at positions ``index`` (not ids), keeping their ids."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.images.device)
        return Dataset(self.name, self.images[index], self.labels[index], self.ids[index], self.classes)

    def positions_of(self, ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Row positions of the given sample ids; raises DataError naming any unknown id."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1).cpu()
        order = torch.argsort(self.ids.cpu())
        sorted_ids = self.ids.cpu()[order]
        pos = torch.searchsorted(sorted_ids, ids).clamp(max=max(len(self) - 1, 0))
        found = sorted_ids[pos] == ids if len(self) else torch.zeros_like(ids, dtype=torch.bool)
        if not bool(found.all()):
            missing = ids[~found][:5].tolist()
            raise DataError(f"{self.name}: unknown sample ids {missing}")
        return order[pos].to(self.images.device)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation, used by the models' input normalisation."""
        x = self.images.double()
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


@dataclass(frozen=True)
class Splits:
    """A dataset's fixed train/test split. Ids are unique across both parts."""

    train: Dataset
    test: Dataset

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise DataError(f"{self.train.name}: train and test splits have different classes")
        if self.train.shape != self.test.shape:
            raise DataError(f"{self.train.name}: train and test images have different shapes")
        both = torch.cat([self.train.ids.cpu(), self.test.ids.cpu()])
        if both.unique().numel() != both.numel():
            raise DataError(f"{self.train.name}: sample ids are not unique across train and test")

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.train.to(device), self.test.to(device))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of positions into (train, test), each sorted; same inputs, same split."""
    labels = np.asarray(labels)
    rng = np.random.Generator(np.random.PCG64(seed))
    train, test = [], []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        pos = pos[rng.permutation(len(pos))]
        k = int(round(len(pos) * test_fraction))
        test.append(pos[:k])
        train.append(pos[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
