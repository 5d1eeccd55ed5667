"""Query a result store: flatten rows, filter, group with intervals, export CSV or Parquet."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.experiments.audit.summary import mean_interval
from poisonlab.experiments.store import ResultStore


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One store row as flat columns: kind, config_hash, trial_key, seed, created, ``metrics.*``, scalar
    ``meta.*``; audit keys add ``probe``/``defense``, sweep keys add ``point.<field>``."""
    out: dict[str, Any] = {k: row[k] for k in ("id", "kind", "config_hash", "trial_key", "seed", "created")}
    for k, v in row["metrics"].items():
        out[f"metrics.{k}"] = v
    for k, v in row["meta"].items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[f"meta.{k}"] = v
    key = row["trial_key"]
    if row["kind"] == "audit" and key.count("/") == 2:
        out["probe"], out["defense"], _ = key.split("/")
    elif "=" in key:
        for part in key.split(","):
            name, _, value = part.partition("=")
            out[f"point.{name}"] = value
    return out


def _match(value: Any, wanted: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    if isinstance(value, (int, float)):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    return str(value) == wanted


def query(
    store: ResultStore, kind: str | None = None, where: Sequence[str] = (), group_by: Sequence[str] = ()
) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows (flattened) matching every ``field=value`` in ``where``; grouped by ``group_by`` when given
    (then one row per group: the count and every metric's mean and 95% t interval)."""
    rows = [flatten(r) for r in store.rows(kind)]
    for cond in where:
        field, sep, value = cond.partition("=")
        if not sep or not field:
            raise ConfigError(f"--where {cond!r}: expected field=value")
        rows = [r for r in rows if _match(r.get(field), value)]
    if not group_by:
        columns = sorted({k for r in rows for k in r}, key=_column_order)
        return columns, rows
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(g) for g in group_by), []).append(r)
    metric_cols = sorted({k for r in rows for k, v in r.items() if k.startswith("metrics.") and _number(v)})
    out = []
    for key, members in groups.items():
        g: dict[str, Any] = dict(zip(group_by, key))
        g["n"] = len(members)
        for m in metric_cols:
            iv = mean_interval([r[m] for r in members if _number(r.get(m))])
            if iv is not None:
                g[f"{m}.mean"], g[f"{m}.lo"], g[f"{m}.hi"] = iv["mean"], iv["lo"], iv["hi"]
        out.append(g)
    columns = list(group_by) + ["n"] + [f"{m}.{s}" for m in metric_cols for s in ("mean", "lo", "hi")]
    return columns, out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _column_order(c: str) -> tuple[int, str]:
    first = ["id", "kind", "probe", "defense", "trial_key", "seed", "config_hash", "created"]
    if c in first:
        return (first.index(c), c)
    return (len(first) + (0 if c.startswith("point.") else 1 if c.startswith("metrics.") else 2), c)


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def write_parquet(columns: list[str], rows: list[dict[str, Any]], path: str | Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PoisonlabError("--parquet needs the pyarrow package (pip install pyarrow)") from None
    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    from poisonlab.io.atomic import write_bytes_atomic

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes_atomic(Path(path), sink.getvalue().to_pybytes())
