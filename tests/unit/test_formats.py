"""On-disk dataset formats: tiny IDX, CIFAR and image-folder files written, loaded back and broken."""

from __future__ import annotations

import gzip
import pathlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poisonlab.data import load_dataset
from poisonlab.data.dataset import Splits, stratified_split
from poisonlab.data.formats.cifar import load_cifar
from poisonlab.data.formats.idx import FASHION_CLASSES, load_mnist_like, read_idx
from poisonlab.data.formats.imagefolder import load_image_folder
from poisonlab.errors import DataError

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    header = bytes([0, 0, _CODES[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _pixels(x: torch.Tensor) -> np.ndarray:
    return x.numpy()


def _assert_split(s: Splits, x_tr, y_tr, x_te, y_te) -> None:
    """Exact round trip; ``x_*`` are the uint8 arrays written, shaped (N, C, H, W) or (N, H, W)."""
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[:, None], x_te[:, None]
    assert tuple(s.train.images.shape) == x_tr.shape and tuple(s.test.images.shape) == x_te.shape
    np.testing.assert_array_equal(_pixels(s.train.images), x_tr.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(_pixels(s.test.images), x_te.astype(np.float32) / np.float32(255))
    assert s.train.labels.tolist() == list(y_tr) and s.test.labels.tolist() == list(y_te)
    n = len(y_tr)
    assert s.train.ids.tolist() == list(range(n))
    assert s.test.ids.tolist() == list(range(n, n + len(y_te)))


# ---------------------------------------------------------------- IDX / MNIST


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = _rng()
    return (
        rng.integers(0, 256, (6, 4, 5), dtype=np.uint8),
        np.array([0, 9, 3, 3, 1, 7], dtype=np.uint8),
        rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        np.array([5, 2, 8], dtype=np.uint8),
    )


def write_mnist(folder: Path, gz: bool = False, dot: bool = False) -> tuple[np.ndarray, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = _mnist_arrays()
    stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    for stem, arr in zip(stems, arrays):
        name = stem.replace("-idx", ".idx") if dot else stem
        write_idx(folder / (name + (".gz" if gz else "")), arr, gz=gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(_CODES))
def test_read_idx_round_trip(tmp_path: Path, dtype: type, gz: bool) -> None:
    arr = _rng().integers(-100, 100, (2, 3, 4)) if dtype != np.uint8 else np.arange(24).reshape(2, 3, 4)
    arr = arr.astype(dtype)
    out = read_idx(write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), arr, gz=gz))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_magic(tmp_path: Path) -> None:
    arr = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "labels-idx1-ubyte", arr, gz=True)), arr)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    for splits in (load_mnist_like(tmp_path, name), load_dataset(name, tmp_path)):
        _assert_split(splits, *arrays)
        assert splits.train.shape == (1, 4, 5) and splits.train.name == name
        expected = FASHION_CLASSES if name == "fashion-mnist" else tuple("0123456789")
        assert splits.train.classes == expected and len(expected) == 10


def test_mnist_raw_subfolder_and_dot_names(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "raw", gz=True, dot=True)
    _assert_split(load_dataset("mnist", tmp_path), *arrays)


def test_mnist_missing_files_names_folder(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "t10k-labels-idx1-ubyte" in msg
    assert msg.startswith("dataset 'mnist' not found")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_raw_and_gz(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    path.write_bytes(gzip.compress(data[:-7]) if gz else data[:-7])
    with pytest.raises(DataError, match="truncated") as err:
        load_mnist_like(tmp_path, "mnist")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_trailing_data(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / "x"
    data = write_idx(path, np.arange(6, dtype=np.uint8)).read_bytes() + b"\x00"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="6 payload bytes") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_bad_magic_and_dtype(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.arange(6, dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(b"\x01" + data[1:])
    with pytest.raises(DataError, match="magic") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    path.write_bytes(data[:2] + b"\x07" + data[3:])
    with pytest.raises(DataError, match="dtype code 0x07"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_absurd_header_rejected_before_reading(tmp_path: Path, gz: bool) -> None:
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**16, 2**16, 2**16) + b"\x00" * 8
    path = tmp_path / ("huge.gz" if gz else "huge")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="more than") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_mnist_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="6 images but") as err:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "train-labels-idx1-ubyte") in str(err.value)


# ---------------------------------------------------------------- CIFAR


def _cifar_parts(num_classes: int, sizes: list[int], seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = _rng(seed)
    return [
        (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, num_classes, n).astype(np.uint8))
        for n in sizes
    ]


def _write_cifar_bin(folder: Path, num_classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    if num_classes == 10:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        parts = _cifar_parts(10, [2, 1, 2, 1, 2, 3])
    else:
        names, parts = ["train.bin", "test.bin"], _cifar_parts(100, [4, 3])
    for name, (x, y) in zip(names, parts):
        head = y[:, None] if num_classes == 10 else np.stack([(y + 7) % 20, y], axis=1)  # coarse != fine
        (folder / name).write_bytes(np.concatenate([head.astype(np.uint8), x], axis=1).tobytes())
    return parts


def _write_cifar_py(folder: Path, num_classes: int, protocol: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    if num_classes == 10:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        parts, key, meta = _cifar_parts(10, [1, 2, 1, 2, 1, 2]), b"labels", ("batches.meta", b"label_names")
    else:
        names, key, meta = ["train", "test"], b"fine_labels", ("meta", b"fine_label_names")
        parts = _cifar_parts(100, [3, 2])
    for name, (x, y) in zip(names, parts):
        d = {b"data": x, key: [int(v) for v in y], b"coarse_labels": [0] * len(y), b"batch_label": b"b"}
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
    class_names = {meta[1]: [f"class{i}".encode() for i in range(num_classes)]}
    (folder / meta[0]).write_bytes(pickle.dumps(class_names, protocol=protocol))
    return parts


def _expected(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    train, test = parts[:-1], parts[-1]
    x_tr = np.concatenate([x for x, _ in train]).reshape(-1, 3, 32, 32)
    y_tr = np.concatenate([y for _, y in train])
    return x_tr, y_tr, test[0].reshape(-1, 3, 32, 32), test[1]


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("sub", [False, True])
def test_cifar_binary_round_trip(tmp_path: Path, num_classes: int, sub: bool) -> None:
    folder = tmp_path / ("cifar-10-batches-bin" if num_classes == 10 else "cifar-100-binary") if sub else tmp_path
    parts = _write_cifar_bin(folder, num_classes)
    name = f"cifar{num_classes}"
    for splits in (load_cifar(tmp_path, num_classes), load_dataset(name, tmp_path)):
        _assert_split(splits, *_expected(parts))
        assert splits.train.classes == tuple(str(i) for i in range(num_classes))
        assert splits.train.shape == (3, 32, 32) and splits.train.name == name


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_python_round_trip(tmp_path: Path, num_classes: int, protocol: int) -> None:
    sub = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    parts = _write_cifar_py(tmp_path / sub, num_classes, protocol)
    for splits in (load_cifar(tmp_path, num_classes), load_dataset(f"cifar{num_classes}", tmp_path)):
        _assert_split(splits, *_expected(parts))
        assert splits.train.classes == tuple(f"class{i}" for i in range(num_classes))


def test_cifar_missing_names_files_and_folder(tmp_path: Path) -> None:
    _write_cifar_bin(tmp_path, 10)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "test_batch.bin" in msg and "data_batch_1" in msg


def test_cifar_size_not_multiple_of_record(tmp_path: Path) -> None:
    _write_cifar_bin(tmp_path, 100)
    with (tmp_path / "test.bin").open("ab") as f:
        f.write(b"\x00" * 5)
    with pytest.raises(DataError, match="3074-byte record") as err:
        load_dataset("cifar100", tmp_path)
    assert str(tmp_path / "test.bin") in str(err.value)


def test_cifar_python_count_mismatch(tmp_path: Path) -> None:
    _write_cifar_py(tmp_path, 10)
    x, _ = _cifar_parts(10, [3])[0]
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": x, b"labels": [1, 2]}))
    with pytest.raises(DataError, match="3 images but 2 labels") as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "data_batch_3") in str(err.value)


class _Payload:
    """Unpickling this runs ``Path.touch(sentinel)``: a stand-in for arbitrary code execution."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204
        return (pathlib.Path.touch, (pathlib.Path(self.sentinel),))


class _OpenPayload(_Payload):
    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.sentinel), "w"))


def test_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()


@pytest.mark.parametrize("target", ["data_batch_1", "test_batch", "batches.meta"])
@pytest.mark.parametrize("payload", [_Payload, _OpenPayload])
def test_cifar_refuses_malicious_pickle(tmp_path: Path, target: str, payload: type[_Payload]) -> None:
    _write_cifar_py(tmp_path, 10)
    sentinel = tmp_path / "pwned"
    evil = {b"data": payload(sentinel), b"labels": [0]}
    (tmp_path / target).write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match="refusing to unpickle") as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / target) in str(err.value)
    assert not sentinel.exists()


# ---------------------------------------------------------------- image folders


def _save(path: Path, arr: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def test_image_folder_train_test_grayscale(tmp_path: Path) -> None:
    rng = _rng(2)
    imgs = rng.integers(0, 256, (5, 3, 4), dtype=np.uint8)
    layout = [
        ("train", "cat", "b.png"),
        ("train", "cat", "a.PNG"),
        ("train", "dog", "x.bmp"),
        ("test", "cat", "t.png"),
        ("test", "dog", "u.gif"),
    ]
    for (part, cls, fname), im in zip(layout, imgs):
        _save(tmp_path / part / cls / fname, im)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored")
    x_tr, y_tr = imgs[[1, 0, 2]], [0, 0, 1]  # sorted: a.PNG before b.png
    for splits in (load_image_folder(tmp_path), load_dataset("imagefolder", tmp_path)):
        _assert_split(splits, x_tr[:, None], y_tr, imgs[3:, None], [0, 1])
        assert splits.train.classes == ("cat", "dog") and splits.train.shape == (1, 3, 4)


def test_image_folder_flat_colour_split(tmp_path: Path) -> None:
    rng = _rng(3)
    imgs = rng.integers(0, 256, (10, 4, 3, 3), dtype=np.uint8)  # H=4, W=3, RGB
    for i, im in enumerate(imgs):
        _save(tmp_path / ("b" if i < 5 else "a") / f"{i:02d}.png", im)
    order = list(range(5, 10)) + list(range(5))  # class "a" sorts first
    x = imgs[order].transpose(0, 3, 1, 2)
    labels = np.array([0] * 5 + [1] * 5)
    train_idx, test_idx = stratified_split(labels, 0.2, seed=20201)
    for splits in (load_image_folder(tmp_path, "mine"), load_dataset("imagefolder", tmp_path)):
        assert len(splits.train) == 8 and len(splits.test) == 2
        np.testing.assert_array_equal(_pixels(splits.train.images), x[train_idx].astype(np.float32) / 255)
        np.testing.assert_array_equal(_pixels(splits.test.images), x[test_idx].astype(np.float32) / 255)
        assert splits.train.labels.tolist() == labels[train_idx].tolist()
        assert splits.train.ids.tolist() == train_idx.tolist() and splits.test.ids.tolist() == test_idx.tolist()
    assert load_image_folder(tmp_path, "mine").train.name == "mine"


def test_image_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    gray = np.full((2, 2), 77, dtype=np.uint8)
    colour = np.array([[[255, 0, 0]] * 2] * 2, dtype=np.uint8)
    _save(tmp_path / "a" / "g.png", gray)
    _save(tmp_path / "b" / "c.jpg", colour)
    for cls in "ab":  # one more each, so the split keeps both classes in train
        _save(tmp_path / cls / "z.png", gray)
    s = load_dataset("imagefolder", tmp_path)
    assert s.train.shape == (3, 2, 2)
    first = _pixels(s.train.images)[0]
    np.testing.assert_array_equal(first, np.full((3, 2, 2), 77 / 255, dtype=np.float32))


def test_image_folder_size_mismatch(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "b" / "2.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match="5x4") as err:
        load_dataset("imagefolder", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "b" / "2.png") in msg and "4x4" in msg


@pytest.mark.parametrize("content", [b"not an image at all", b"truncated"])
def test_image_folder_corrupt_image(tmp_path: Path, content: bytes) -> None:
    _save(tmp_path / "a" / "1.png", np.zeros((4, 4), np.uint8))
    bad = tmp_path / "a" / "2.png"
    if content == b"truncated":
        _save(bad, _rng().integers(0, 256, (16, 16), dtype=np.uint8))
        content = bad.read_bytes()[:60]
    bad.write_bytes(content)
    with pytest.raises(DataError, match="cannot read image") as err:
        load_dataset("imagefolder", tmp_path)
    assert str(bad) in str(err.value)


def test_image_folder_missing_and_mismatched_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        load_dataset("imagefolder", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    _save(tmp_path / "train" / "a" / "1.png", np.zeros((2, 2), np.uint8))
    _save(tmp_path / "test" / "b" / "1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="differ") as err:
        load_image_folder(tmp_path)
    assert str(tmp_path / "test") in str(err.value)
