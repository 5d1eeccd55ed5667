"""Result store: one row per trial in an embedded SQLite database (safe for concurrent writers)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    trial_key TEXT NOT NULL,
    seed INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    meta TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (kind, config_hash, trial_key)
)
"""


class ResultStore:
    """Rows keyed by (kind, config hash, trial key); writing a finished trial again is refused.

    Args:
        path: the SQLite file (created on first use).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(_SCHEMA)
        return con

    def add(
        self, kind: str, config_hash: str, trial_key: str, seed: int, metrics: dict[str, Any], meta: dict[str, Any]
    ) -> bool:
        """Insert a row; returns False (and writes nothing) when this trial is already recorded."""
        con = self._connect()
        try:
            cur = con.execute(
                "INSERT OR IGNORE INTO trials (kind, config_hash, trial_key, seed, metrics, meta, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    config_hash,
                    trial_key,
                    seed,
                    json.dumps(metrics),
                    json.dumps(meta),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                ),
            )
            return cur.rowcount == 1
        finally:
            con.close()

    def has(self, kind: str, config_hash: str, trial_key: str) -> bool:
        con = self._connect()
        try:
            row = con.execute(
                "SELECT 1 FROM trials WHERE kind=? AND config_hash=? AND trial_key=?", (kind, config_hash, trial_key)
            ).fetchone()
            return row is not None
        finally:
            con.close()

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        con = self._connect()
        try:
            query = "SELECT id, kind, config_hash, trial_key, seed, metrics, meta, created FROM trials"
            args: tuple[Any, ...] = ()
            if kind is not None:
                query += " WHERE kind=?"
                args = (kind,)
            out = []
            for r in con.execute(query + " ORDER BY id", args):
                out.append(
                    {
                        "id": r[0],
                        "kind": r[1],
                        "config_hash": r[2],
                        "trial_key": r[3],
                        "seed": r[4],
                        "metrics": json.loads(r[5]),
                        "meta": json.loads(r[6]),
                        "created": r[7],
                    }
                )
            return out
        finally:
            con.close()
