"""The attack's artifact: reconstructed images (pixel space [0, 1]) and labels, with a JSON manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from poisonlab.errors import CheckpointError
from poisonlab.io import load_artifact, save_artifact

KIND = "reconstruction"


@dataclass
class Reconstruction:
    """What a gradient inversion attack returns.

    Args:
        images: (B, C, H, W) reconstructed images in [0, 1] (the attacker's order; match before scoring).
        labels: (B,) labels used (given by the update or recovered).
        label_source: ``"shared"`` or ``"recovered:<rule>"``.
        score: gradient-matching cost of the chosen restart (lower is better).
        restart_scores: (R,) the cost of every restart.
        meta: attack name, settings, iterations run, timings.
    """

    images: torch.Tensor
    labels: torch.Tensor
    label_source: str
    score: float
    restart_scores: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the artifact directory (tensors + manifest with sha256) atomically."""
        meta = {**self.meta, "label_source": self.label_source, "score": self.score, "space": "pixel01"}
        tensors = {"images": self.images, "labels": self.labels, "restart_scores": self.restart_scores}
        return save_artifact(path, KIND, tensors, meta)

    @staticmethod
    def load(path: str | Path) -> Reconstruction:
        """Read an artifact written by :meth:`save`; checks checksum, shapes and the pixel range."""
        tensors, meta = load_artifact(path, KIND)
        if set(tensors) != {"images", "labels", "restart_scores"}:
            raise CheckpointError(f"{path}: a reconstruction holds images, labels and restart_scores")
        images = tensors["images"]
        if images.dim() != 4 or tensors["labels"].shape != (images.shape[0],):
            raise CheckpointError(f"{path}: images must be (B, C, H, W) with B labels")
        if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            raise CheckpointError(f"{path}: images outside [0, 1]")
        meta = dict(meta)
        source, score = str(meta.pop("label_source", "")), float(meta.pop("score", float("nan")))
        meta.pop("space", None)
        return Reconstruction(images, tensors["labels"], source, score, tensors["restart_scores"], meta)
