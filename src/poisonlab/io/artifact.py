"""Artifacts: named tensors + a JSON manifest (kind, metadata, sha256) that round-trip exactly."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

import poisonlab
from poisonlab.errors import CheckpointError
from poisonlab.io.atomic import atomic_directory
from poisonlab.io.safe_load import read_json, read_safetensors

TENSORS = "tensors.safetensors"
MANIFEST = "manifest.json"
FORMAT = "poisonlab-artifact"


def save_artifact(path: str | Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``path/`` atomically with ``tensors.safetensors`` and ``manifest.json``."""
    blob = st_save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    path = Path(path)
    with atomic_directory(path) as tmp:
        (tmp / TENSORS).write_bytes(blob)
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "poisonlab": poisonlab.__version__,
            "torch": torch.__version__,
            "files": {TENSORS: {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}},
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "meta": meta,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path


def load_artifact(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact of the given kind, verifying format, size, sha256 and the recorded shapes."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such artifact directory")
    manifest = read_json(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a poisonlab artifact")
    if manifest.get("kind") != kind:
        raise CheckpointError(f"{path}: is a {manifest.get('kind')!r} artifact, expected {kind!r}")
    info = manifest.get("files", {}).get(TENSORS)
    if not isinstance(info, dict):
        raise CheckpointError(f"{path / MANIFEST}: no entry for {TENSORS}")
    tensors = read_safetensors(path / TENSORS, sha256=info.get("sha256"), size=info.get("bytes"))
    shapes = manifest.get("shapes", {})
    if {k: list(v.shape) for k, v in tensors.items()} != shapes:
        raise CheckpointError(f"{path}: tensor shapes differ from the manifest")
    return tensors, manifest.get("meta", {})
