"""Natural colour photos as 32x32 crops: the two photographs shipped with scikit-learn, at three scales.

``sklearn.datasets.load_sample_images`` ships ``china.jpg`` (a temple) and ``flower.jpg`` (427x640 RGB).
Each is area-downsampled by 1, 2 and 4 and cut into non-overlapping 32x32 tiles (row-major, from the top
left corner), giving 670 crops of real photographic texture: edges, foliage, sky, petals. The class is
(photo, scale), six classes, so that a classifier head exists; it is a stand-in for CIFAR-like images when
no dataset is on disk, used by the gradient inversion experiments. Split 80/20 stratified, fixed seed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from poisonlab.data.dataset import Dataset, Splits, stratified_split
from poisonlab.data.registry import DatasetSpec, register_dataset

TILE = 32
SCALES = (1, 2, 4)
_SPLIT_SEED = 20201


@lru_cache(maxsize=1)
def _crops() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [Path(f).stem for f in bunch.filenames]
    crops, labels, classes = [], [], []
    for photo, name in zip(bunch.images, names):
        img = torch.from_numpy(np.array(photo, copy=True)).permute(2, 0, 1).double().div(255.0)[None]
        for scale in SCALES:
            small = F.avg_pool2d(img, scale) if scale > 1 else img
            h, w = small.shape[-2] // TILE, small.shape[-1] // TILE
            tiles = small[..., : h * TILE, : w * TILE].unfold(2, TILE, TILE).unfold(3, TILE, TILE)
            tiles = tiles[0].permute(1, 2, 0, 3, 4).reshape(h * w, 3, TILE, TILE)
            crops.append(tiles)
            labels += [len(classes)] * (h * w)
            classes.append(f"{name}/{scale}x")
    images = torch.cat(crops).float().clamp(0, 1).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), tuple(classes)


def load_photos(_root: Path | None = None) -> Splits:
    """670 32x32 colour crops of scikit-learn's two sample photos at 3 scales (6 classes), 80/20 split."""
    images, labels, classes = _crops()
    tr, te = stratified_split(labels.numpy(), 0.2, _SPLIT_SEED)
    ids = torch.arange(len(labels))
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return Splits(
        Dataset("photos", images[tr_t].contiguous(), labels[tr_t], ids[tr_t], classes),
        Dataset("photos", images[te_t].contiguous(), labels[te_t], ids[te_t], classes),
    )


register_dataset(DatasetSpec("photos", load_photos, load_photos.__doc__.splitlines()[0], embedded=True))
