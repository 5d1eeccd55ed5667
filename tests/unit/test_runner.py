"""Trial runner and result-store claims: resume, no duplicates, dead claims taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poisonlab.errors import ConfigError
from poisonlab.experiments.results import flatten, query, to_csv
from poisonlab.experiments.runner import Trial, run_trials
from poisonlab.experiments.store import ResultStore
from poisonlab.experiments.sweep import parse_grid, point_key

FN = "poisonlab.experiments.runner:selftest_trial"


def _trials(n: int, chash: str = "h") -> list[Trial]:
    return [Trial("t", chash, f"x={i}", i, FN, {"x": i}) for i in range(n)]


def test_rows_and_resume(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    log = tmp_path / "log"
    rows = run_trials(_trials(4), store, log=log)
    assert {k: r["metrics"]["y"] for k, r in rows.items()} == {f"x={i}": float(i * i) for i in range(4)}
    again = run_trials(_trials(6), store, log=log)
    assert len(again) == 6
    started = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(started) == sorted(f"x={i}" for i in range(6))  # nothing computed twice
    assert store.claims() == []


def test_claims_exclusive_and_dead_claims_reclaimed(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    assert store.claim("k", "h", "a", "owner-1")
    assert not store.claim("k", "h", "a", "owner-2")  # held by a live process (this one)
    assert store.claim("k", "h", "a", "owner-1")  # the owner may re-claim
    # a claim held by a process that has exited is dead and can be taken over
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(proc.stdout)
    con = store._connect()
    con.execute("UPDATE claims SET pid=? WHERE trial_key='a'", (dead_pid,))
    con.close()
    assert store.claim("k", "h", "a", "owner-2")
    store.add("k", "h", "a", 0, {"v": 1.0}, {})
    assert not store.claim("k", "h", "a", "owner-3")  # recorded trials are never claimed again


def test_failed_trial_releases_claim(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    bad = Trial("t", "h", "bad", 0, "poisonlab.experiments.runner:no_such_function", {})
    with pytest.raises(AttributeError):
        run_trials([bad], store)
    assert store.claims() == []
    assert store.rows() == []


def test_duplicate_keys_and_bad_executor(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="duplicate"):
        run_trials(_trials(2) + _trials(1), store)
    with pytest.raises(ConfigError, match="executor"):
        run_trials(_trials(1), store, executor="threads")  # type: ignore[arg-type]


def test_local_pool_equals_sequential(tmp_path: Path) -> None:
    a = run_trials(_trials(3), ResultStore(tmp_path / "a.sqlite"))
    b = run_trials(_trials(3), ResultStore(tmp_path / "b.sqlite"), executor="local", workers=2)
    assert {k: r["metrics"] for k, r in a.items()} == {k: r["metrics"] for k, r in b.items()}
    assert {r["meta"]["pid"] for r in b.values()} != {os.getpid()}  # really ran in workers


def test_parse_grid() -> None:
    grid = parse_grid(["seed=0..2", "eps=8/255,16/255"])
    assert len(grid) == 6
    assert grid[0] == {"seed": "0", "poison.eps": "8/255"}
    assert point_key(grid[-1]) == "seed=2,poison.eps=16/255"
    for bad in (["seed"], ["seed=3..1"], ["seed=0,1", "seed=2"], ["=1"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_query_filter_group_csv(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    for probe, defense, seed, v in [("b", "none", 0, 1.0), ("b", "none", 1, 3.0), ("b", "mixup", 0, 0.5)]:
        store.add("audit", "h", f"{probe}/{defense}/seed={seed}", seed, {"rate": v}, {"note": "x"})
    flat = flatten(store.rows()[0])
    assert flat["probe"] == "b" and flat["defense"] == "none" and flat["metrics.rate"] == 1.0
    cols, rows = query(store, "audit", where=["defense=none"])
    assert len(rows) == 2
    cols, groups = query(store, group_by=["defense"])
    by = {g["defense"]: g for g in groups}
    assert by["none"]["n"] == 2 and by["none"]["metrics.rate.mean"] == pytest.approx(2.0)
    assert by["none"]["metrics.rate.lo"] < 2.0 < by["none"]["metrics.rate.hi"]
    text = to_csv(cols, groups)
    assert text.splitlines()[0].startswith("defense,n,metrics.rate.mean")
    with pytest.raises(ConfigError):
        query(store, where=["nonsense"])
