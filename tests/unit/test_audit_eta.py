"""The audit's ETA weighs each trial by its defense's training cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.experiments.audit.config import load_audit_config
from poisonlab.experiments.audit.defenses import PRESETS
from poisonlab.experiments.audit.probes import PROBES, load_probes
from poisonlab.experiments.audit.suite import estimate_seconds, plan_trials


def test_eta_scales_each_trial_by_its_defense_cost(tmp_path: Path) -> None:
    load_probes()
    overrides = ["audit.attacks=[clean]", "audit.defenses=[none,adversarial,spectral]", "audit.executor=sequential"]
    config = load_audit_config("default", None, overrides)
    planned = plan_trials(config, tmp_path)
    per_trial = PROBES.get("clean").seconds["quick"]
    assert len(planned) == 3
    expected = per_trial * (1.0 + PRESETS["adversarial"].cost + PRESETS["spectral"].cost)
    assert estimate_seconds(config, planned, set()) == pytest.approx(expected)
    done = {t.key for _, d, t in planned if d.name == "adversarial"}
    assert estimate_seconds(config, planned, done) == pytest.approx(per_trial * (1.0 + PRESETS["spectral"].cost))
    assert PRESETS["adversarial"].cost > PRESETS["mixup"].cost == 1.0
