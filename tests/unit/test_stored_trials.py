"""run_stored_trials: each trial runs once, its headline metrics and seed are stored, a rerun reads rows back."""

from __future__ import annotations

from poisonlab.experiments.store import ResultStore, run_stored_trials


def test_trials_run_once_and_come_back_in_order(tmp_path) -> None:
    calls: list[int] = []

    def trial(t: int) -> dict:
        calls.append(t)
        return {"t": t, "value": 10 * t}

    path = tmp_path / "results.sqlite"
    first = run_stored_trials(path, "demo", "h1", [7, 8, 9], trial, lambda r: {"value": r["value"]})
    assert calls == [0, 1, 2]
    assert [r["value"] for r in first] == [0, 10, 20]
    again = run_stored_trials(path, "demo", "h1", [7, 8, 9, 10], trial, lambda r: {"value": r["value"]})
    assert calls == [0, 1, 2, 3]  # only the new trial ran
    assert again[:3] == first
    rows = sorted(ResultStore(path).rows("demo"), key=lambda r: r["trial_key"])
    assert [r["seed"] for r in rows] == [7, 8, 9, 10]
    assert [r["metrics"]["value"] for r in rows] == [0, 10, 20, 30]
    other = run_stored_trials(path, "demo", "h2", [7], trial, lambda r: {})
    assert calls[-1] == 0 and other[0]["t"] == 0  # another config hash is another experiment
