"""Image folders: ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` split 80/20."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from poisonlab.data.dataset import Dataset, Splits, stratified_split
from poisonlab.data.registry import default_root
from poisonlab.errors import DataError

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
SPLIT_SEED = 20201
TEST_FRACTION = 0.2
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_HINT = "train/<class>/*.png|jpg and test/<class>/*.png|jpg, or <class>/*.png|jpg (split 80/20)"


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: class folder holds no images ({', '.join(sorted(EXTENSIONS))})")
    return files


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """Pixels of one image as (H, W) grayscale or (H, W, 3) colour uint8, and whether it is colour."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _GRAY_MODES:
                return np.asarray(im.convert("L")), False
            rgb = np.asarray(im.convert("RGB"))
            if im.mode in ("P", "PA") and (rgb == rgb[..., :1]).all():
                return rgb[..., 0].copy(), False  # palette image whose palette is gray
            return rgb, True
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large, refusing to decode ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc


def _read_split(
    folders: list[Path], ref: list[tuple[tuple[int, ...], Path]]
) -> tuple[list[np.ndarray], list[bool], np.ndarray]:
    """Decode every image below the class folders, checking all share the (size, file) held in ``ref``."""
    images: list[np.ndarray] = []
    colour: list[bool] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        for path in _image_files(folder):
            pixels, is_colour = _decode(path)
            size = pixels.shape[:2]
            if not ref:
                ref.append((size, path))
            elif size != ref[0][0]:
                (h, w), first = ref[0]
                raise DataError(
                    f"{path}: image is {size[1]}x{size[0]} (WxH) but {first} is {w}x{h}; "
                    "all images must have the same size"
                )
            images.append(pixels)
            colour.append(is_colour)
            labels.append(label)
    return images, colour, np.asarray(labels, dtype=np.int64)


def _stack(images: list[np.ndarray], rgb: bool) -> np.ndarray:
    """Stack into (N, C, H, W), replicating grayscale into three channels when the dataset is colour."""
    if rgb:
        arr = np.stack([im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2) for im in images])
        return arr.transpose(0, 3, 1, 2)
    return np.stack(images)[:, None]


def load_image_folder(root: Path | None, name: str = "imagefolder") -> Splits:
    """Load images arranged one folder per class.

    Layouts: ``root/train/<class>/*`` with ``root/test/<class>/*`` (same class folders), or
    ``root/<class>/*``, split 80/20 per class with a fixed seed. Files with extension png, jpg, jpeg, bmp
    or gif are read in sorted order; classes are the sorted folder names. Images are converted to RGB if
    any of them is colour, else to grayscale, and must all have the same size.

    Args:
        root: the dataset folder; None means the default data folder.
        name: dataset name for messages.

    Returns:
        The train/test split. With train/test folders, train ids are ``0..N-1`` and test ids
        ``N..N+M-1``; otherwise ids are positions in the sorted (class, file) listing.

    Raises:
        DataError: the folder or a class is missing or empty, class sets differ, an image is unreadable,
            too large, or of a different size. The message names the file or folder.
    """
    root = Path(root) if root is not None else default_root(name)
    if not root.is_dir():
        raise DataError(f"dataset {name!r} not found: put {_HINT} in {root}/ (or set data.root)")
    train_dir, test_dir = root / "train", root / "test"
    ref: list[tuple[tuple[int, ...], Path]] = []
    if train_dir.is_dir() or test_dir.is_dir():
        for d in (train_dir, test_dir):
            if not d.is_dir():
                raise DataError(
                    f"dataset {name!r}: {root}/ has {'test' if d is train_dir else 'train'}/ "
                    f"but no {d.name}/; put {_HINT} in {root}/"
                )
        train_classes, test_classes = _class_dirs(train_dir), _class_dirs(test_dir)
        if not train_classes:
            raise DataError(f"dataset {name!r}: {train_dir}/ has no class folders; put {_HINT} in {root}/")
        classes = tuple(p.name for p in train_classes)
        if tuple(p.name for p in test_classes) != classes:
            raise DataError(
                f"{test_dir}: class folders {[p.name for p in test_classes]} differ from {train_dir}: {list(classes)}"
            )
        x_tr, c_tr, y_tr = _read_split(train_classes, ref)
        x_te, c_te, y_te = _read_split(test_classes, ref)
        rgb = any(c_tr) or any(c_te)
        n = len(y_tr)
        return Splits(
            Dataset.from_numpy(name, _stack(x_tr, rgb), y_tr, classes, ids=np.arange(n, dtype=np.int64)),
            Dataset.from_numpy(name, _stack(x_te, rgb), y_te, classes, ids=np.arange(n, n + len(y_te), dtype=np.int64)),
        )
    class_dirs = _class_dirs(root)
    if not class_dirs:
        raise DataError(f"dataset {name!r} not found: put {_HINT} in {root}/ (or set data.root)")
    classes = tuple(p.name for p in class_dirs)
    images, colour, labels = _read_split(class_dirs, ref)
    x = _stack(images, any(colour))
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, seed=SPLIT_SEED)
    return Splits(
        Dataset.from_numpy(name, x[train_idx], labels[train_idx], classes, ids=train_idx.astype(np.int64)),
        Dataset.from_numpy(name, x[test_idx], labels[test_idx], classes, ids=test_idx.astype(np.int64)),
    )
