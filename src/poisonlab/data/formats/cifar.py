"""CIFAR-10 and CIFAR-100 from their binary or python distributions, with a restricted unpickler."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from poisonlab.data.dataset import Dataset, Splits
from poisonlab.data.registry import default_root
from poisonlab.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

_PIXELS = 3 * 32 * 32


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode`` that only turns latin1 text back into bytes (how py3 pickles bytes)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed for latin1 text, got {encoding!r}")
    return text.encode("latin1")


# Exactly what numpy needs to rebuild a plain ndarray (protocols 0-5), and nothing else.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build dicts, lists, strings, numbers and plain numpy arrays, and no other object."""

    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise DataError(f"refusing to unpickle {module}.{name} from {self._source}")
        return obj


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        with path.open("rb") as f:
            # Safe: _RestrictedUnpickler.find_class resolves only numpy array/dtype rebuilders.
            obj = _RestrictedUnpickler(f, path).load()  # noqa: S301
    except DataError:
        raise
    except Exception as exc:  # untrusted input: any failure to parse is a data error
        raise DataError(f"{path}: not a valid CIFAR python-version pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(d: dict[Any, Any], key: str) -> Any:
    return d.get(key.encode(), d.get(key))


def _load_python_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data, labels = _get(d, "data"), _get(d, label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array shaped (N, {_PIXELS}), got {desc}")
    if not isinstance(labels, list | np.ndarray):
        raise DataError(f"{path}: {label_key!r} must be a list of integers, got {type(labels).__name__}")
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {label_key!r} must be a flat list of integers, got {y.dtype} {y.shape}")
    if len(y) != len(data):
        raise DataError(f"{path}: holds {len(data)} images but {len(y)} labels")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _load_binary_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    head = 1 if num_classes == 10 else 2
    record = head + _PIXELS
    size = path.stat().st_size
    if size == 0 or size % record:
        raise DataError(f"{path}: size {size} bytes is not a positive multiple of the {record}-byte record")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    return raw[:, head:].reshape(-1, 3, 32, 32), raw[:, head - 1].astype(np.int64)  # fine label for 100


def _class_names(folder: Path, num_classes: int, binary: bool) -> tuple[str, ...]:
    default = tuple(str(i) for i in range(num_classes))
    if binary:
        txt = folder / ("batches.meta.txt" if num_classes == 10 else "fine_label_names.txt")
        if not txt.is_file():
            return default
        names = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        meta = folder / ("batches.meta" if num_classes == 10 else "meta")
        if not meta.is_file():
            return default
        key = "label_names" if num_classes == 10 else "fine_label_names"
        raw = _get(_unpickle(meta), key)
        if not isinstance(raw, list) or not all(isinstance(n, bytes | str) for n in raw):
            raise DataError(f"{meta}: {key!r} must be a list of strings")
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in raw]
        txt = meta
    if len(names) != num_classes:
        raise DataError(f"{txt}: expected {num_classes} class names, found {len(names)}")
    return tuple(names)


def _layout(num_classes: int) -> list[tuple[bool, str, list[str], list[str]]]:
    """(binary, subfolder, train files, test files) for each distribution, binary first."""
    if num_classes == 10:
        batches = [f"data_batch_{i}" for i in range(1, 6)]
        return [
            (True, "cifar-10-batches-bin", [b + ".bin" for b in batches], ["test_batch.bin"]),
            (False, "cifar-10-batches-py", batches, ["test_batch"]),
        ]
    return [
        (True, "cifar-100-binary", ["train.bin"], ["test.bin"]),
        (False, "cifar-100-python", ["train"], ["test"]),
    ]


def load_cifar(root: Path | None, num_classes: int) -> Splits:
    """Load CIFAR-10 or CIFAR-100 (fine labels) from the binary or the python distribution.

    The binary version is preferred; each is looked for in ``root`` and in its usual subfolder
    (``cifar-10-batches-bin``, ``cifar-10-batches-py``, ``cifar-100-binary``, ``cifar-100-python``).
    Python-version pickles are read with an unpickler that can only rebuild plain numpy arrays.

    Args:
        root: the dataset folder; None means the default data folder.
        num_classes: 10 or 100.

    Returns:
        The fixed split; train ids are ``0..N-1`` and test ids ``N..N+M-1``.

    Raises:
        DataError: files are missing, have the wrong size, hold unexpected contents, or a pickle
            references anything but numpy arrays. The message names the file or folder.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100, got {num_classes}")
    name = f"cifar{num_classes}"
    root = Path(root) if root is not None else default_root(name)
    best: tuple[int, Path, list[str]] | None = None
    for binary, sub, train_files, test_files in _layout(num_classes):
        for folder in (root, root / sub):
            missing = [f for f in train_files + test_files if not (folder / f).is_file()]
            if not missing:
                return _load(name, folder, num_classes, binary, train_files, test_files)
            if best is None or len(missing) < best[0]:
                best = (len(missing), folder, missing)
    assert best is not None
    bits = _layout(num_classes)
    hint = (
        f"{', '.join(bits[0][2] + bits[0][3])} (binary version), "
        f"or {', '.join(bits[1][2] + bits[1][3])} (python version)"
    )
    partial = ""
    if best[0] < len(bits[0][2]) + len(bits[0][3]):
        partial = f"; {best[1]}/ lacks {', '.join(best[2])}"
    raise DataError(f"dataset {name!r} not found: put {hint} in {root}/ (or set data.root){partial}")


def _load(
    name: str, folder: Path, num_classes: int, binary: bool, train_files: list[str], test_files: list[str]
) -> Splits:
    label_key = "labels" if num_classes == 10 else "fine_labels"

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [
            _load_binary_batch(folder / f, num_classes) if binary else _load_python_batch(folder / f, label_key)
            for f in files
        ]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            raise DataError(f"{folder}: labels must lie in [0, {num_classes}), found {int(y[bad][0])}")
        return x, y

    classes = _class_names(folder, num_classes, binary)
    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    n = len(y_train)
    train = Dataset.from_numpy(name, x_train, y_train, classes, ids=np.arange(n, dtype=np.int64))
    test_ids = np.arange(n, n + len(y_test), dtype=np.int64)
    return Splits(train, Dataset.from_numpy(name, x_test, y_test, classes, ids=test_ids))
