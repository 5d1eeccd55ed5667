"""Result store: one row per trial in an embedded SQLite database (safe for concurrent writers)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
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
);
CREATE TABLE IF NOT EXISTS claims (
    kind TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    trial_key TEXT NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (kind, config_hash, trial_key)
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
        con.executescript(_SCHEMA)
        return con

    def claim(self, kind: str, config_hash: str, trial_key: str, owner: str, stale_after: float = 3600.0) -> bool:
        """Claim a trial for ``owner`` so that no other process computes it at the same time.

        Succeeds when the trial is neither recorded nor claimed, or when its claim is dead: held by a process
        of this host that no longer exists (killed), or not refreshed for ``stale_after`` seconds (another
        host). The check and the write are one transaction, so two processes never both win.
        """
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            done = con.execute(
                "SELECT 1 FROM trials WHERE kind=? AND config_hash=? AND trial_key=?", (kind, config_hash, trial_key)
            ).fetchone()
            if done is not None:
                con.execute("COMMIT")
                return False
            held = con.execute(
                "SELECT owner, host, pid, heartbeat FROM claims WHERE kind=? AND config_hash=? AND trial_key=?",
                (kind, config_hash, trial_key),
            ).fetchone()
            if held is not None and held[0] != owner and not _dead(held[1], held[2], held[3], now, stale_after):
                con.execute("COMMIT")
                return False
            con.execute(
                "INSERT OR REPLACE INTO claims (kind, config_hash, trial_key, owner, host, pid, heartbeat) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, config_hash, trial_key, owner, host, pid, now),
            )
            con.execute("COMMIT")
            return True
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def release(self, kind: str, config_hash: str, trial_key: str, owner: str) -> None:
        """Drop ``owner``'s claim (after the row is written, or when giving the trial up)."""
        con = self._connect()
        try:
            con.execute(
                "DELETE FROM claims WHERE kind=? AND config_hash=? AND trial_key=? AND owner=?",
                (kind, config_hash, trial_key, owner),
            )
        finally:
            con.close()

    def claims(self) -> list[dict[str, Any]]:
        """Open claims (trials being computed, or left by a killed process)."""
        con = self._connect()
        try:
            cols = ("kind", "config_hash", "trial_key", "owner", "host", "pid", "heartbeat")
            return [dict(zip(cols, r)) for r in con.execute(f"SELECT {', '.join(cols)} FROM claims")]
        finally:
            con.close()

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


def _dead(host: str, pid: int, heartbeat: float, now: float, stale_after: float) -> bool:
    """Whether a claim's holder is gone: on this host, a process that no longer runs (or is a zombie);
    on another host, one whose claim is older than ``stale_after`` seconds."""
    if host != socket.gethostname():
        return now - heartbeat > stale_after
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def run_stored_trials(
    path: str | Path,
    kind: str,
    config_hash: str,
    seeds: list[int],
    run_trial: Callable[[int], dict[str, Any]],
    headline: Callable[[dict[str, Any]], dict[str, float]],
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Trial t (key ``trial=t``) of a sequential experiment is ``run_trial(t)``, stored in ``path`` with its
    ``headline`` metrics and seed ``seeds[t]``; trials already stored under ``config_hash`` are read back, not
    rerun. Returns every trial's row, in order."""
    from poisonlab.utils.progress import progress_bar

    store = ResultStore(path)
    done = {r["trial_key"]: r["meta"] for r in store.rows(kind) if r["config_hash"] == config_hash}
    rows: list[dict[str, Any]] = []
    with progress_bar(
        len(seeds), "trials", progress, initial=sum(f"trial={t}" in done for t in range(len(seeds)))
    ) as bar:
        for t, seed in enumerate(seeds):
            key = f"trial={t}"
            if key not in done:
                row = run_trial(t)
                store.add(kind, config_hash, key, seed, headline(row), row)
                done[key] = row
                bar.update(1)
            rows.append(done[key])
    return rows
