"""The trial records kept in benchmarks/trials (issue 3): each is a trials result that ``trials-curve`` pools, so the
numbers in RESULTS.md can be recomputed in a later session."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.attacks.poisoning import budget_curve

RECORDS = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "trials").glob("*.json"))


def test_records_are_kept() -> None:
    assert RECORDS, "benchmarks/trials holds no trial records"


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_record_is_a_poolable_trials_result(path: Path) -> None:
    (result,) = budget_curve.load_results([path])
    rows = result["trials"]
    seeds = [r["seed"] for r in rows]
    assert len(set(seeds)) == len(seeds) and seeds == sorted(seeds)
    assert seeds[0] == result["config"]["seed"]  # trial t ran with root seed + t
    for r in rows:
        assert 0 <= r["poisoned_successes"] <= r["poisoned_n"]
        assert 0 <= r["control_successes"] <= r["control_n"]
        assert len(r["target_ids"]) == 1 and 0 <= r["adv_class"] < 10
    (curve,) = budget_curve.budget_curves([result])
    (point,) = curve["points"]
    assert point["seeds"] == seeds
    assert point["summary"]["poisoned"]["success"]["successes"] == sum(r["poisoned_successes"] for r in rows)
