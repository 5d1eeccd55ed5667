"""SeedTree: one root seed -> named, independent torch.Generators. No global RNG is ever touched."""

from __future__ import annotations

import hashlib

import torch


class SeedTree:
    """Derive named child seeds from one root seed by hashing the path of names.

    ``SeedTree(0).generator("init")`` always yields the same stream, independent of which other
    names were used and in which order. ``child("victim/3")`` gives a sub-tree. Every name used is
    recorded in :meth:`record` so results can store the seeds behind them.

    Args:
        root: the root seed (a non-negative int).
        path: names leading to this node (use :meth:`child` rather than passing it).
    """

    def __init__(self, root: int, path: tuple[str, ...] = ()) -> None:
        if not isinstance(root, int) or root < 0:
            raise ValueError(f"seed: expected a non-negative int, got {root!r}")
        self.root = root
        self.path = path
        self._used: dict[str, int] = {}

    def seed(self, name: str) -> int:
        """The 63-bit seed for ``name`` under this node."""
        full = "/".join((*self.path, name))
        digest = hashlib.sha256(f"{self.root}:{full}".encode()).digest()
        value = int.from_bytes(digest[:8], "little") & (2**63 - 1)
        self._used[full] = value
        return value

    def generator(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh generator seeded for ``name`` on ``device``."""
        g = torch.Generator(device=device)
        g.manual_seed(self.seed(name))
        return g

    def child(self, name: str) -> SeedTree:
        sub = SeedTree(self.root, (*self.path, name))
        sub._used = self._used  # children share the record
        return sub

    def record(self) -> dict[str, object]:
        """Root seed and every derived seed used so far, for result rows."""
        return {"root": self.root, "derived": dict(sorted(self._used.items()))}
