"""PoisonSet: the artifact of a clean-label poisoning attack (ids + l-inf bounded deltas in pixel01 units)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from poisonlab.budget import LinfBudget
from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.errors import CheckpointError, DataError
from poisonlab.io.artifact import load_artifact, save_artifact
from poisonlab.io.atomic import write_bytes_atomic

KIND = "poisons"
_TOL = 1e-6


@dataclass(frozen=True)
class PoisonSet:
    """Perturbations of some training images, meant to make ``target_ids`` be classified as ``adv_class``.

    Args:
        poison_ids: ids of the perturbed training samples, int64 (P,), unique.
        deltas: additive perturbations (P, C, H, W), float32, pixel01 units, ``|delta| <= eps``.
        target_ids: ids of the target (test) samples, int64 (T,).
        adv_class: the class the attacker wants the targets to be assigned.
        eps: the l-inf radius the deltas respect, pixel01 units.
        recipe: the crafting recipe's name, e.g. "gradient-matching".
        seeds: seed record of the run (``SeedTree.record()``).
        restart_losses: final alignment loss of each restart (the lowest one was kept).
        meta: other JSON-able facts (dataset, threat model, config hash, ...).
    """

    poison_ids: torch.Tensor
    deltas: torch.Tensor
    target_ids: torch.Tensor
    adv_class: int
    eps: float
    recipe: str
    seeds: dict[str, Any] = field(default_factory=dict)
    restart_losses: tuple[float, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.poison_ids.shape[0] if self.poison_ids.dim() == 1 else -1
        if self.poison_ids.dtype != torch.int64 or p < 0:
            raise DataError("poison_ids: expected an int64 vector")
        if self.deltas.dim() != 4 or self.deltas.shape[0] != p:
            raise DataError(f"deltas: expected shape ({p}, C, H, W), got {tuple(self.deltas.shape)}")
        if self.poison_ids.unique().numel() != p:
            raise DataError("poison_ids: ids must be unique")
        worst = float(self.deltas.abs().max()) if self.deltas.numel() else 0.0
        if worst > self.linf.eps + _TOL:
            raise DataError(f"deltas: perturbation {worst:.6g} exceeds eps {self.eps:.6g}")

    @property
    def linf(self) -> LinfBudget:
        return LinfBudget(float(self.eps))

    def __len__(self) -> int:
        return int(self.poison_ids.shape[0])

    # ------------------------------------------------------------------ views and checks
    def check(self, base: Dataset) -> None:
        """Raise DataError unless every poisoned image is within eps of its clean image and inside [0, 1]."""
        x = base.images[base.positions_of(self.poison_ids)].cpu()
        try:
            self.linf.check(x + self.deltas.cpu(), x)
        except ValueError as err:
            raise DataError(f"poisons: {err}") from None

    def to_view(self, base: Dataset) -> PoisonedDataset:
        """The poisoned training set: ``base`` with the deltas added at ``poison_ids``; labels unchanged."""
        self.check(base)
        return PoisonedDataset(base, delta_ids=self.poison_ids.to(base.device), deltas=self.deltas.to(base.device))

    def with_deltas(self, deltas: torch.Tensor, **meta: Any) -> PoisonSet:
        """The same poisons with other deltas (e.g. a random-noise control or quantised images)."""
        return PoisonSet(
            self.poison_ids,
            deltas.detach().cpu().float().contiguous(),
            self.target_ids,
            self.adv_class,
            self.eps,
            self.recipe,
            self.seeds,
            self.restart_losses,
            {**self.meta, **meta},
        )

    def quantized(self, base: Dataset) -> PoisonSet:
        """What survives an 8-bit image file: poisoned pixels rounded to k/255, then projected onto the
        budget again (clip to eps, keep [0, 1]) so the result still satisfies it."""
        x = base.images[base.positions_of(self.poison_ids)].cpu()
        levels = ((x + self.deltas).clamp(0, 1) * 255).round() / 255
        return self.with_deltas(self.linf.project(levels - x, x), quantized=True)

    # ------------------------------------------------------------------ artifact
    def save(self, path: str | Path) -> Path:
        """Write the artifact (kind "poisons") atomically: tensors + JSON manifest with sha256."""
        meta = {
            "adv_class": int(self.adv_class),
            "eps": float(self.eps),
            "space": "pixel01",
            "recipe": self.recipe,
            "seeds": self.seeds,
            "restart_losses": [float(v) for v in self.restart_losses],
            "meta": self.meta,
        }
        tensors = {"poison_ids": self.poison_ids, "deltas": self.deltas, "target_ids": self.target_ids}
        return save_artifact(path, KIND, tensors, meta)

    @staticmethod
    def load(path: str | Path, base: Dataset | None = None) -> PoisonSet:
        """Read and verify an artifact; re-checks the budget (against ``base`` when given, which also
        checks the [0, 1] box and that every id exists)."""
        tensors, meta = load_artifact(path, KIND)
        try:
            if meta.get("space") != "pixel01":
                raise ValueError(f"unit mismatch, expected space 'pixel01', got {meta.get('space')!r}")
            ps = PoisonSet(
                tensors["poison_ids"],
                tensors["deltas"],
                tensors["target_ids"],
                int(meta["adv_class"]),
                float(meta["eps"]),
                str(meta["recipe"]),
                dict(meta.get("seeds", {})),
                tuple(float(v) for v in meta.get("restart_losses", [])),
                dict(meta.get("meta", {})),
            )
            if base is not None:
                ps.check(base)
        except (KeyError, TypeError, ValueError, DataError) as err:
            raise CheckpointError(f"{path}: invalid poison set ({err})") from None
        return ps

    # ------------------------------------------------------------------ images
    def export_png(self, path: str | Path, base: Dataset, rows: int = 8) -> bytes:
        """Write :meth:`grid_png` to ``path`` (atomically) and return the PNG bytes."""
        png = self.grid_png(base, rows)
        write_bytes_atomic(Path(path), png)
        return png

    def grid_png(self, base: Dataset, rows: int = 8) -> bytes:
        """A grid of the first ``rows`` poisons: clean | poisoned | difference amplified to [-eps, eps] -> [0, 1]."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        n = max(1, min(rows, len(self)))
        x = base.images[base.positions_of(self.poison_ids[:n])].cpu()
        d = self.deltas[:n]
        cols = (x, (x + d).clamp(0, 1), (d / (2 * self.eps) + 0.5).clamp(0, 1))
        fig = Figure(figsize=(4.5, 1.5 * n), dpi=100)
        axes = fig.subplots(n, 3, squeeze=False)
        for i in range(n):
            for j, (col, title) in enumerate(zip(cols, ("clean", "poisoned", "difference (amplified)"))):
                ax = axes[i][j]
                ax.imshow(_hwc(col[i]), cmap="gray" if col.shape[1] == 1 else None, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=8)
            axes[i][0].set_ylabel(f"id {int(self.poison_ids[i])}", fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def export_images(self, directory: str | Path, base: Dataset) -> Path:
        """Write each poisoned training image as a lossless 8-bit ``<id>.png``."""
        directory = Path(directory)
        x = base.images[base.positions_of(self.poison_ids)].cpu()
        pixels = ((x + self.deltas).clamp(0, 1) * 255).round().to(torch.uint8)
        for pid, img in zip(self.poison_ids.tolist(), pixels):
            arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
            write_bytes_atomic(directory / f"{pid}.png", buf.getvalue())
        return directory

    def import_images(self, directory: str | Path, base: Dataset) -> PoisonSet:
        """Read ``<id>.png`` for every poison id (as written by :meth:`export_images`) and return the poison
        set they encode: deltas = image - clean image, projected onto the budget again."""
        directory = Path(directory)
        x = base.images[base.positions_of(self.poison_ids)].cpu()
        imgs = torch.stack([_read_png(directory / f"{pid}.png", base.shape) for pid in self.poison_ids.tolist()])
        return self.with_deltas(self.linf.project(imgs - x, x), quantized=True, imported_from=str(directory))


def _hwc(img: torch.Tensor) -> np.ndarray:
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def _read_png(path: Path, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    try:
        with Image.open(path) as im:
            if im.size != (w, h):
                raise DataError(f"{path}: image is {im.size[0]}x{im.size[1]}, expected {w}x{h}")
            arr = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read poison image ({err})") from None
    t = torch.from_numpy(arr.copy()).float() / 255
    return t[None] if c == 1 else t.permute(2, 0, 1)
