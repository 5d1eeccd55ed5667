"""The single chokepoint for reading tensors and manifests from disk. Nothing here can run code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from poisonlab.errors import CheckpointError

MAX_MANIFEST_BYTES = 64 * 2**20
MAX_TENSOR_FILE_BYTES = 16 * 2**30


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse a JSON file after checking its size; errors name the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise CheckpointError(f"{path}: missing") from None
    if size > max_bytes:
        raise CheckpointError(f"{path}: {size} bytes is larger than the {max_bytes}-byte limit for a manifest")
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not valid JSON (corrupt or not a poisonlab manifest)") from None


def read_safetensors(path: Path, sha256: str | None = None, size: int | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, first checking its size and sha256 against the manifest's record."""
    path = Path(path)
    try:
        actual = path.stat().st_size
    except OSError:
        raise CheckpointError(f"{path}: missing") from None
    if size is not None and actual != size:
        raise CheckpointError(f"{path}: {actual} bytes, manifest says {size} (truncated or replaced)")
    if actual > MAX_TENSOR_FILE_BYTES:
        raise CheckpointError(f"{path}: {actual} bytes exceeds the {MAX_TENSOR_FILE_BYTES}-byte limit")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path}: sha256 does not match the manifest (corrupt or tampered)")
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(err).splitlines()[0]})") from None


def torch_load_weights(path: Path) -> Any:
    """Load a third-party ``.pt`` file with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types; all mean "refused"
        raise CheckpointError(f"{path}: refused to load ({type(err).__name__}: {str(err).splitlines()[0]})") from None
