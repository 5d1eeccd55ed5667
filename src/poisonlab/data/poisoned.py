"""PoisonedDataset: a view of a base dataset plus an attacker's changes. The base is never mutated."""

from __future__ import annotations

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.errors import DataError

_BOX_TOL = 1e-6


class PoisonedDataset:
    """Base dataset + perturbations (deltas) at some ids + label overrides + appended samples.

    Args:
        base: the clean dataset; its tensors are never written to.
        delta_ids: ids of base samples to perturb, unique, shape (P,).
        deltas: additive perturbations, shape (P, C, H, W); ``base + delta`` must stay in [0, 1].
        label_ids: ids of samples (base or appended) whose label is overridden.
        labels: the override labels, shape like ``label_ids``.
        extra_images / extra_labels: samples appended to the dataset; they get fresh ids after the
            base's largest id unless ``extra_ids`` is given.
    """

    def __init__(
        self,
        base: Dataset,
        delta_ids: torch.Tensor | None = None,
        deltas: torch.Tensor | None = None,
        label_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        extra_images: torch.Tensor | None = None,
        extra_labels: torch.Tensor | None = None,
        extra_ids: torch.Tensor | None = None,
    ) -> None:
        dev = base.device
        empty_ids = torch.zeros(0, dtype=torch.long, device=dev)
        self.base = base
        self.delta_ids = _ids(delta_ids, dev, empty_ids)
        self.deltas = torch.zeros((0, *base.shape), device=dev) if deltas is None else deltas.to(dev, torch.float32)
        if self.deltas.shape != (len(self.delta_ids), *base.shape):
            raise DataError(
                f"deltas: expected shape {(len(self.delta_ids), *base.shape)}, got {tuple(self.deltas.shape)}"
            )
        _check_unique(self.delta_ids, "delta_ids")
        self._delta_pos = base.positions_of(self.delta_ids)
        if len(self.delta_ids):
            perturbed = base.images[self._delta_pos] + self.deltas
            if float(perturbed.min()) < -_BOX_TOL or float(perturbed.max()) > 1 + _BOX_TOL:
                raise DataError("deltas: base image + delta must stay within [0, 1]")

        n_extra = 0 if extra_images is None else int(extra_images.shape[0])
        self.extra_images = torch.zeros((0, *base.shape), device=dev) if extra_images is None else extra_images.to(dev)
        if self.extra_images.shape[1:] != base.shape:
            raise DataError(f"extra_images: expected shape (M, {base.shape}), got {tuple(extra_images.shape)}")
        self.extra_labels = empty_ids if extra_labels is None else extra_labels.to(dev, torch.long)
        if self.extra_labels.shape != (n_extra,):
            raise DataError(f"extra_labels: expected shape ({n_extra},), got {tuple(self.extra_labels.shape)}")
        if extra_ids is None:
            start = int(base.ids.max()) + 1 if len(base) else 0
            extra_ids = torch.arange(start, start + n_extra, device=dev)
        self.extra_ids = extra_ids.to(dev, torch.long)
        if self.extra_ids.shape != (n_extra,):
            raise DataError(f"extra_ids: expected shape ({n_extra},)")
        if n_extra and bool(torch.isin(self.extra_ids, base.ids).any()):
            raise DataError("extra_ids: appended samples must not reuse base ids")

        self.label_ids = _ids(label_ids, dev, empty_ids)
        self.labels = empty_ids if labels is None else labels.to(dev, torch.long).reshape(-1)
        if self.labels.shape != self.label_ids.shape:
            raise DataError("labels: must have the same length as label_ids")
        _check_unique(self.label_ids, "label_ids")
        for name, lab in (("labels", self.labels), ("extra_labels", self.extra_labels)):
            if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= base.num_classes):
                raise DataError(f"{name}: must lie in [0, {base.num_classes})")

    def materialize(self) -> Dataset:
        """The poisoned dataset as a new Dataset (fresh tensors; the base is untouched)."""
        images = self.base.images.clone()
        if len(self.delta_ids):
            images[self._delta_pos] = (images[self._delta_pos] + self.deltas).clamp_(0.0, 1.0)
        images = torch.cat([images, self.extra_images])
        labels = torch.cat([self.base.labels, self.extra_labels])
        ids = torch.cat([self.base.ids, self.extra_ids])
        out = Dataset(self.base.name, images, labels, ids, self.base.classes)
        if len(self.label_ids):
            labels[out.positions_of(self.label_ids)] = self.labels
        return out

    def changed_ids(self) -> torch.Tensor:
        """Sorted ids that differ from the base: perturbed, relabelled or appended."""
        return torch.cat([self.delta_ids, self.label_ids, self.extra_ids]).unique()

    def __len__(self) -> int:
        return len(self.base) + len(self.extra_ids)


def _ids(ids: torch.Tensor | None, device: torch.device, empty: torch.Tensor) -> torch.Tensor:
    return empty if ids is None else torch.as_tensor(ids, dtype=torch.long).reshape(-1).to(device)


def _check_unique(ids: torch.Tensor, field: str) -> None:
    if ids.unique().numel() != ids.numel():
        raise DataError(f"{field}: ids must be unique")
