"""Run many independent trials through an executor, one result-store row each, resumable and safe to share.

A :class:`Trial` names an importable function (``"module:function"``) and its JSON arguments, so the same
trial runs in this process, in a local process pool or on a Ray cluster and returns the same row. The
coordinator (this process) is the only writer: before a trial starts it *claims* the trial in the store,
after it finishes it writes the row and releases the claim. Hence:

- a rerun skips every recorded trial (nothing finished is recomputed);
- a killed run (even ``kill -9``) leaves claims held by a dead process, which the next run takes over
  (nothing is lost);
- two coordinators on the same store never compute the same trial at once; each waits for the trials the
  other one holds and reads their rows when they land.

Every start is appended to an optional log file (``key pid``), which is how tests prove the above.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.experiments.store import ResultStore
from poisonlab.utils.progress import progress_bar

Executor = Literal["sequential", "local", "ray"]
EXECUTORS: tuple[str, ...] = ("sequential", "local", "ray")


@dataclass(frozen=True)
class Trial:
    """One unit of work and its place in the result store.

    Args:
        kind: the store's row kind (e.g. ``"audit"``, ``"sweep-train"``).
        config_hash: hash of the configuration the trial belongs to.
        key: the trial's key within (kind, config_hash), e.g. ``"backdoor/none/t=0"``.
        seed: the trial's root seed (recorded in the row).
        fn: ``"package.module:function"``; called as ``fn(spec)`` and returning
            ``{"metrics": {...numbers...}, "meta": {...json...}}``.
        spec: JSON-serialisable arguments of ``fn``.
    """

    kind: str
    config_hash: str
    key: str
    seed: int
    fn: str
    spec: dict[str, Any] = field(default_factory=dict)


def call_trial(fn: str, spec: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Import and call a trial function (the body that every executor runs)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    module, _, name = fn.partition(":")
    func: Callable[[dict[str, Any]], dict[str, Any]] = getattr(importlib.import_module(module), name)
    out = func(spec)
    json.dumps(out)  # a row must be JSON: fail here, in the worker, with the trial's own traceback
    return out


def run_trials(
    trials: Sequence[Trial],
    store: ResultStore,
    executor: Executor = "sequential",
    workers: int | None = None,
    progress: bool = False,
    log: Path | None = None,
    poll: float = 0.5,
    on_row: Callable[[Trial, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Compute every trial not yet in ``store``; return ``{trial.key: row}`` for all of them.

    Args:
        trials: the work; keys must be unique within (kind, config_hash).
        store: where rows go (and claims live).
        executor: "sequential" (this process), "local" (a spawn process pool of ``workers``, each trial on
            one torch thread, so rows do not depend on the pool size) or "ray" (``ray.init()``: the cluster
            in ``RAY_ADDRESS`` or a local one started for the run; one CPU per trial).
        workers: parallel trials (default: the number of cores for "local", 1 otherwise).
        progress: a progress bar over trials.
        log: append ``"<key> <pid>"`` to this file whenever a trial starts.
        poll: seconds between looks at trials another process holds.
        on_row: called with each row this process writes.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor: expected one of {list(EXECUTORS)}, got {executor!r}")
    seen: set[tuple[str, str, str]] = set()
    for t in trials:
        ident = (t.kind, t.config_hash, t.key)
        if ident in seen:
            raise ValueError(f"duplicate trial key {t.key!r}")
        seen.add(ident)
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    pool = _Pool(executor, workers)
    pending = list(trials)
    running: dict[Future[Any], Trial] = {}
    rows: dict[str, dict[str, Any]] = {}
    try:
        with progress_bar(len(trials), "trials", enabled=progress) as bar:
            while pending or running:
                _collect_recorded(pending, store, rows, bar)
                for t in list(pending):
                    if len(running) >= pool.capacity:
                        break
                    if store.claim(t.kind, t.config_hash, t.key, owner):
                        pending.remove(t)
                        if log is not None:
                            with open(log, "a", encoding="utf-8") as f:
                                f.write(f"{t.key} {os.getpid()}\n")
                        running[pool.submit(t)] = t
                if not running:
                    if pending:  # all held by another live process: wait for their rows
                        time.sleep(poll)
                    continue
                done, _ = wait(list(running), timeout=poll, return_when=FIRST_COMPLETED)
                for fut in done:
                    t = running.pop(fut)
                    try:
                        out = fut.result()
                    except BaseException:
                        store.release(t.kind, t.config_hash, t.key, owner)
                        raise
                    meta = {**out.get("meta", {}), "executor": executor}
                    store.add(t.kind, t.config_hash, t.key, t.seed, out["metrics"], meta)
                    store.release(t.kind, t.config_hash, t.key, owner)
                    rows[t.key] = {"metrics": out["metrics"], "meta": meta, "seed": t.seed}
                    if on_row is not None:
                        on_row(t, rows[t.key])
                    bar.update(1)
    finally:
        for fut, t in running.items():  # interrupted: give the in-flight trials back
            fut.cancel()
            store.release(t.kind, t.config_hash, t.key, owner)
        pool.shutdown()
    return rows


def _collect_recorded(pending: list[Trial], store: ResultStore, rows: dict[str, dict[str, Any]], bar: Any) -> None:
    if not pending:
        return
    recorded = {}
    for kind in {t.kind for t in pending}:
        for r in store.rows(kind):
            recorded[(r["kind"], r["config_hash"], r["trial_key"])] = r
    for t in list(pending):
        r = recorded.get((t.kind, t.config_hash, t.key))
        if r is not None:
            pending.remove(t)
            rows[t.key] = {"metrics": r["metrics"], "meta": r["meta"], "seed": r["seed"]}
            bar.update(1)


class _Done(Future):  # type: ignore[type-arg]
    """A future already resolved (the sequential executor)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        try:
            self.set_result(fn())
        except BaseException as err:  # re-raised by result(), in the coordinator
            self.set_exception(err)


class _Pool:
    def __init__(self, executor: str, workers: int | None) -> None:
        self.executor = executor
        cores = os.cpu_count() or 1
        if workers is not None and workers < 1:
            raise ConfigError(f"workers: expected >= 1, got {workers}")
        self.capacity = workers or (cores if executor != "sequential" else 1)
        # one torch thread per trial whatever the pool size: results then do not depend on the worker count
        # (oneDNN sums some reductions in a thread-count dependent order)
        self.threads = 1 if executor != "sequential" else None
        self._pool: Any = None
        if executor == "local":
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.capacity, mp_context=mp.get_context("spawn"))
        elif executor == "ray":
            try:
                import ray
            except ImportError:
                raise PoisonlabError(
                    "executor ray: the ray package is not installed (pip install 'poisonlab[ray]')"
                ) from None
            if not ray.is_initialized():
                ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
            self._remote = ray.remote(num_cpus=1)(call_trial)

    def submit(self, t: Trial) -> Future[Any]:
        if self.executor == "sequential":
            return _Done(lambda: call_trial(t.fn, t.spec))
        if self.executor == "local":
            return self._pool.submit(call_trial, t.fn, t.spec, self.threads)
        return self._remote.remote(t.fn, t.spec, 1).future()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def selftest_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """A trivial trial for checking an executor (and for tests): ``x**2`` and where it ran."""
    import socket

    x = float(spec["x"])
    return {"metrics": {"y": x * x}, "meta": {"pid": os.getpid(), "host": socket.gethostname()}}
