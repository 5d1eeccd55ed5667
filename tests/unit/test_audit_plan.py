"""The audit's plan: --max-trials caps the seeds per probe and defense without changing the trials' identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from poisonlab.errors import ConfigError
from poisonlab.experiments.audit.config import load_audit_config
from poisonlab.experiments.audit.probes import load_probes
from poisonlab.experiments.audit.suite import plan_trials


def _plan(tmp_path: Path, *extra: str) -> list:
    load_probes()
    overrides = ["audit.budget=standard", "audit.attacks=[clean,backdoor]", "audit.defenses=[none,mixup]", *extra]
    return plan_trials(load_audit_config("default", None, overrides), tmp_path)


def test_max_trials_keeps_the_first_seeds_with_the_same_keys_and_hashes(tmp_path: Path) -> None:
    full = _plan(tmp_path)
    capped = _plan(tmp_path, "audit.max_trials=1")
    assert len(full) == 2 * 2 * 3  # standard: 3 seeds of each probe under each defense
    assert len(capped) == 2 * 2
    full_ids = {(t.key, t.config_hash) for _, _, t in full}
    capped_ids = {(t.key, t.config_hash) for _, _, t in capped}
    assert capped_ids <= full_ids  # a capped run's trials are the full run's first seeds, shared in the store
    assert {t.seed for _, _, t in capped} == {0}
    assert len(_plan(tmp_path, "audit.max_trials=10")) == len(full)


def test_max_trials_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_trials"):
        _plan(tmp_path, "audit.max_trials=0")


def test_targeted_probe_keeps_one_pretrained_model_per_model_variant() -> None:
    from poisonlab.experiments.audit.defenses import PRESETS
    from poisonlab.experiments.audit.probe_targeted import pretrained_folder

    assert pretrained_folder(PRESETS["none"].model) == pretrained_folder(PRESETS["mixup"].model) == "pretrained"
    assert pretrained_folder(PRESETS["dp-sgd"].model) == "pretrained-norm-group"  # group norm: its own public model
    assert pretrained_folder({"width": 8, "norm": "group"}) == "pretrained-norm-group-width-8"
