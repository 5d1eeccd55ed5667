"""Atomic, verified checkpoint directories with resume refusal on a changed configuration."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

import poisonlab
from poisonlab.errors import CheckpointError
from poisonlab.io.atomic import TMP_PREFIX, atomic_directory
from poisonlab.io.safe_load import read_json, read_safetensors, sha256_file
from poisonlab.io.tree import flatten_state, unflatten_state

FORMAT = "poisonlab-checkpoint"
STATE_FILE = "state.safetensors"
MANIFEST = "manifest.json"


class Checkpointer:
    """Save and load the state of a long job as ``<root>/step-<n>/{state.safetensors, manifest.json}``.

    Each save is a new directory written atomically (temp dir, fsync, rename); the last ``keep`` are
    kept. A half-written save never becomes visible, so the previous checkpoint stays loadable.
    Loading checks the manifest format, the config hash and each file's size and sha256.

    Args:
        root: directory holding the checkpoints.
        config_hash: hash of the configuration that produced the state; loading refuses a mismatch.
        keep: number of checkpoints to keep.
    """

    def __init__(self, root: str | Path, config_hash: str, keep: int = 2) -> None:
        self.root = Path(root)
        self.config_hash = config_hash
        self.keep = keep

    def save(self, step: int, state: Any) -> Path:
        """Write ``state`` (nested dicts/lists of tensors and plain values) as checkpoint ``step``."""
        tensors, tree = flatten_state(state)
        blob = st_save(tensors)
        final = self.root / f"step-{step:010d}"
        with atomic_directory(final) as tmp:
            (tmp / STATE_FILE).write_bytes(blob)
            manifest = {
                "format": FORMAT,
                "version": 1,
                "step": step,
                "config_hash": self.config_hash,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "poisonlab": poisonlab.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "files": {STATE_FILE: {"sha256": sha256_file(tmp / STATE_FILE), "bytes": len(blob)}},
                "tree": tree,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest))
        self._prune()
        return final

    def list(self) -> list[Path]:
        """Completed checkpoint directories, oldest first (temporary directories are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("step-"))

    def load_latest(self, force_new: bool = False) -> Any | None:
        """State of the newest checkpoint, or None when there is none.

        Raises:
            CheckpointError: the newest checkpoint is corrupt, or was written under another
                configuration (unless ``force_new``, in which case old checkpoints are removed).
        """
        dirs = self.list()
        if not dirs:
            return None
        if force_new:
            self.clear()
            return None
        return self.load(dirs[-1])

    def load(self, path: Path) -> Any:
        manifest = read_json(path / MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a poisonlab checkpoint")
        if manifest.get("config_hash") != self.config_hash:
            raise CheckpointError(
                f"{path}: written under config {manifest.get('config_hash')}, this run is {self.config_hash}; "
                "use the same config to resume, or --force-new to start over"
            )
        info = manifest.get("files", {}).get(STATE_FILE)
        if not isinstance(info, dict):
            raise CheckpointError(f"{path / MANIFEST}: no entry for {STATE_FILE}")
        tensors = read_safetensors(path / STATE_FILE, sha256=info.get("sha256"), size=info.get("bytes"))
        try:
            return unflatten_state(tensors, manifest["tree"])
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{path / MANIFEST}: malformed state tree ({err})") from None

    def clear(self) -> None:
        for p in self.list():
            shutil.rmtree(p, ignore_errors=True)

    def _prune(self) -> None:
        for p in self.list()[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(TMP_PREFIX + "*"):
            if p.is_dir() and time.time() - p.stat().st_mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
