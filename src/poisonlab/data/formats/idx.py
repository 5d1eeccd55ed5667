"""IDX files (MNIST, Fashion-MNIST): a validated reader and the MNIST-style train/test loader."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from poisonlab.data.dataset import Dataset, Splits
from poisonlab.data.registry import default_root
from poisonlab.errors import DataError

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_ELEMENTS = 2**31
_GZIP_MAGIC = b"\x1f\x8b"

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _is_gzip(path: Path) -> bool:
    if path.suffix.lower() == ".gz":
        return True
    with path.open("rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated IDX file: expected {n} bytes of {what}, found {len(data)}")
    return data


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file, raw or gzip-compressed, validating its header against its payload.

    The header's declared size is checked before any payload is read, and the payload must match it exactly.

    Args:
        path: the IDX file; gzip is detected by a ``.gz`` suffix or the gzip magic bytes.

    Returns:
        The array, shaped as the header declares, in native byte order.

    Raises:
        DataError: the file is unreadable, has a bad magic or dtype code, an absurd size, or a payload
            that is shorter or longer than the header declares. The message names the file.
    """
    path = Path(path)
    try:
        compressed = _is_gzip(path)
        with gzip.open(path, "rb") if compressed else path.open("rb") as f:
            magic = _read_exact(f, 4, path, "header")
            if magic[:2] != b"\x00\x00":
                raise DataError(f"{path}: not an IDX file: expected magic 00 00, found {magic[:2].hex(' ')}")
            code, ndim = magic[2], magic[3]
            if code not in _DTYPES:
                raise DataError(
                    f"{path}: unknown IDX dtype code 0x{code:02X}; expected one of "
                    + ", ".join(f"0x{c:02X}" for c in _DTYPES)
                )
            dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "dimensions"))
            count = int(np.prod(dims, dtype=object)) if dims else 1
            if count > MAX_ELEMENTS:
                raise DataError(f"{path}: IDX header declares {count} elements {dims}, more than {MAX_ELEMENTS}")
            dtype = _DTYPES[code]
            nbytes = count * dtype.itemsize
            if not compressed:
                actual = path.stat().st_size - 4 - 4 * ndim
                if actual != nbytes:
                    state = "truncated" if actual < nbytes else "has trailing data"
                    raise DataError(
                        f"{path}: IDX file {state}: header declares shape {dims} ({nbytes} payload bytes), "
                        f"the file holds {actual}"
                    )
            payload = f.read(nbytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(payload) != nbytes:
        state = "truncated" if len(payload) < nbytes else "has trailing data"
        raise DataError(
            f"{path}: IDX file {state}: header declares shape {dims} ({nbytes} payload bytes), "
            f"found {len(payload) if len(payload) < nbytes else 'more'}"
        )
    arr = np.frombuffer(payload, dtype=dtype, count=count).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path | None:
    """The first existing variant of an MNIST file name in ``root`` or ``root/raw``."""
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in (root, root / "raw"):
        for base in names:
            for name in (base, base + ".gz"):
                candidate = folder / name
                if candidate.is_file():
                    return candidate
    return None


def _part(name: str, images_path: Path, labels_path: Path, classes: tuple[str, ...], first_id: int) -> Dataset:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected unsigned-byte images shaped (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{labels_path}: expected integer labels shaped (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise DataError(f"{labels_path}: labels must lie in [0, {len(classes)})")
    ids = np.arange(first_id, first_id + len(labels), dtype=np.int64)
    return Dataset.from_numpy(name, images, labels, classes, ids=ids)


def load_mnist_like(root: Path | None, name: str) -> Splits:
    """Load MNIST or Fashion-MNIST from the four standard IDX files.

    Args:
        root: the folder holding the files (directly or in ``raw/``), each raw or ``.gz``; the hyphen
            or dot variant (``train-images.idx3-ubyte``) is accepted. None means the default data folder.
        name: ``"mnist"`` or ``"fashion-mnist"``; sets the dataset name and class names.

    Returns:
        The fixed split; train ids are ``0..N-1`` and test ids ``N..N+M-1``.

    Raises:
        DataError: a file is missing or corrupt, or image and label counts differ.
    """
    root = Path(root) if root is not None else default_root(name)
    found = {stem: _find(root, stem) for stem in _MNIST_FILES}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"dataset {name!r} not found: put {', '.join(_MNIST_FILES)} (raw or .gz) in {root}/ "
            f"(or set data.root); missing {', '.join(missing)}"
        )
    paths = [p for p in found.values() if p is not None]
    classes = FASHION_CLASSES if name == "fashion-mnist" else tuple(str(d) for d in range(10))
    train = _part(name, paths[0], paths[1], classes, 0)
    test = _part(name, paths[2], paths[3], classes, len(train))
    if train.shape != test.shape:
        raise DataError(f"{paths[2]}: test images are {test.shape[1:]}, train images {train.shape[1:]}")
    return Splits(train, test)
