"""Sweeps end to end: kill -9 mid-sweep then resume; two processes on one store; Ray equals local."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from poisonlab.experiments.store import ResultStore
from poisonlab.experiments.sweep import run_sweep

SWEEP = [
    sys.executable, "-m", "poisonlab", "train", "--dataset", "digits", "--model", "mlp", "--epochs", "2",
    "--set", "model.width=16", "--set", "runtime.device=cpu", "--set", "runtime.threads=1", "--quiet",
    "--sweep", "seed=0..5",
]  # fmt: skip


def _rows(store: Path) -> list[dict]:
    return ResultStore(store).rows("sweep-train") if store.exists() else []


def test_kill_9_mid_sweep_then_resume(tmp_path: Path) -> None:
    work = tmp_path / "w"
    proc = subprocess.Popen([*SWEEP, "--workdir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while len(_rows(work / "results.sqlite")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["trial_key"]: (r["id"], r["created"]) for r in _rows(work / "results.sqlite")}
    assert 2 <= len(before) < 6
    subprocess.run([*SWEEP, "--workdir", str(work)], check=True, capture_output=True, timeout=300)
    after = _rows(work / "results.sqlite")
    assert sorted(r["trial_key"] for r in after) == sorted(f"seed={i}" for i in range(6))  # nothing lost
    for r in after:  # nothing finished before the kill was recomputed
        if r["trial_key"] in before:
            assert (r["id"], r["created"]) == before[r["trial_key"]]
    starts = Counter(line.split()[0] for line in (work / "sweep.log").read_text().splitlines())
    assert all(starts[k] == 1 for k in before)
    assert all(n <= 2 for n in starts.values())  # at most the killed in-flight point ran twice
    assert ResultStore(work / "results.sqlite").claims() == []


def test_two_processes_share_one_store(tmp_path: Path) -> None:
    work = tmp_path / "w"
    procs = [subprocess.Popen([*SWEEP, "--workdir", str(work)], stdout=subprocess.DEVNULL) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    rows = _rows(work / "results.sqlite")
    assert sorted(r["trial_key"] for r in rows) == sorted(f"seed={i}" for i in range(6))
    starts = Counter(line.split()[0] for line in (work / "sweep.log").read_text().splitlines())
    assert set(starts.values()) == {1}, starts  # no point computed twice


def test_ray_executor_matches_local(tmp_path: Path) -> None:
    """A small sweep on a local Ray instance gives the same rows as the local process pool."""
    ray = pytest.importorskip("ray")
    args = (
        "train",
        None,
        ["data.name=digits", "model.name=mlp", "model.width=16", "train.epochs=1", "runtime.device=cpu"],
        ["seed=0..1"],
    )
    local = run_sweep(*args, tmp_path / "local", executor="local", workers=os.cpu_count())
    os.environ.pop("RAY_ADDRESS", None)
    if ray.is_initialized():  # another test (Flower's simulation) may have left a Ray instance running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(*args, tmp_path / "ray", executor="ray")
    finally:
        ray.shutdown()
    assert local["points"] == remote["points"] == ["seed=0", "seed=1"]
    for key in local["points"]:
        assert local["rows"][key]["metrics"] == remote["rows"][key]["metrics"]
    assert {r["meta"]["executor"] for r in remote["rows"].values()} == {"ray"}


@pytest.mark.parametrize(
    ("experiment", "flags", "metric"),
    [
        ("mia", ["--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "1", "--shadows", "4",
                 "--poison-targets", "5", "--replicas", "2", "--n-boot", "20"], "amplification.lira-online-fixed.auc"),
        ("invert", ["--dataset", "digits", "--model", "mlp", "--width", "16", "--batch-size", "1", "--trials", "1",
                    "--iterations", "5"], "psnr_mean"),
        ("fl", ["--dataset", "digits", "--model", "mlp", "--set", "model.width=16", "--clients", "6",
                "--per-round", "3", "--rounds", "2", "--pretrain-rounds", "1", "--attack", "model-replacement",
                "--set", "attack.epochs=1"], "backdoor_after.rate"),
    ],
)  # fmt: skip
def test_more_experiments_sweep_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture, experiment: str, flags: list[str], metric: str
) -> None:
    """mia, invert and fl take --sweep: one row per point, each with the experiment's numbers; a rerun
    recomputes nothing."""
    from poisonlab.cli import main

    argv = [
        experiment,
        *flags,
        "--set",
        "runtime.device=cpu",
        "--quiet",
        "--workdir",
        str(tmp_path),
        "--sweep",
        "seed=0..1",
    ]
    assert main(argv) == 0
    rows = ResultStore(tmp_path / "results.sqlite").rows(f"sweep-{experiment}")
    assert sorted(r["trial_key"] for r in rows) == ["seed=0", "seed=1"]
    assert all(metric in r["metrics"] and isinstance(r["metrics"][metric], float) for r in rows), rows[0]["metrics"]
    assert rows[0]["metrics"] != rows[1]["metrics"]  # each point ran with its own seed
    log = (tmp_path / "sweep.log").read_text()
    assert main(argv) == 0
    assert (tmp_path / "sweep.log").read_text() == log
    assert f"poisonlab {experiment} sweep: 2 points" in capsys.readouterr().out
