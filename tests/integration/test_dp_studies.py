"""DP studies end to end on digits with a small MLP: the disparate-impact experiment (store rows carry epsilon,
JSON/PNG written, rerun skips, bit-identical across workdirs), the CLI commands, and the privacy audit (a
non-private mechanism exceeds a small epsilon; DP-SGD stays below its accountant; the broken mechanism exceeds
the accountant's claim; determinism)."""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from poisonlab.cli import main
from poisonlab.data import load_dataset
from poisonlab.defenses.dp.audit import one_run_audit
from poisonlab.defenses.dp.audit_experiment import privacy_audit_experiment
from poisonlab.defenses.dp.canaries import canary_scores, insert_canaries, make_canaries
from poisonlab.defenses.dp.dp_sgd import DPSGD
from poisonlab.defenses.dp.impact_experiment import KIND, disparate_impact_experiment
from poisonlab.defenses.dp.private_run import planned_epsilon, resolve_noise, train_model
from poisonlab.defenses.dp.study_config import load_audit_config, load_impact_config
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.experiments.store import ResultStore
from poisonlab.rng import SeedTree

TINY = ["data.name=digits", "model.name=mlp", "model.width=32", "runtime.device=cpu", "train.batch_size=64"]


def _impact(tmp: Path, extra: list[str] = ()) -> dict:
    overrides = [
        *TINY,
        "train.epochs=1",
        "impact.seeds=2",
        "impact.keep_fraction=0.2",
        "impact.underrepresented_class=3",
    ]
    return disparate_impact_experiment(load_impact_config(overrides=overrides + list(extra)), tmp)


def test_disparate_impact_end_to_end_resume_and_determinism(tmp_path: Path) -> None:
    out = _impact(tmp_path / "a")
    rows = ResultStore(tmp_path / "a" / "results.sqlite").rows(KIND)
    assert len(rows) == 4 and {r["trial_key"] for r in rows} == {
        f"seed={s}/arm={a}" for s in (0, 1) for a in ("non-private", "dp-sgd")
    }
    p = out["privacy"]
    for r in rows:  # every row carries the DP run's (epsilon, delta)
        assert r["metrics"]["dp_epsilon"] == pytest.approx(p["epsilon"]) and r["metrics"]["dp_delta"] == 1e-5
        assert sum(r["metrics"]["per_class_total"]) == 359
        if r["trial_key"].endswith("dp-sgd"):
            assert r["metrics"]["epsilon"] == pytest.approx(p["epsilon"], rel=1e-12)
            assert r["metrics"]["steps"] == p["steps"]
            assert len(r["metrics"]["clipping"]["fraction_clipped"]) == 10
        else:
            assert r["metrics"]["epsilon"] is None
    assert p["small_class_train_size"] == round(0.2 * 146)
    saved = json.loads(Path(out["json"]).read_text())
    assert saved["summary"]["seeds"] == [0, 1] and "drop_small" in saved["summary"]["drop"]
    assert Path(out["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = _impact(tmp_path / "a")  # rerun: read from the store, nothing retrained or added
    assert again["rows"] == out["rows"] and len(ResultStore(tmp_path / "a" / "results.sqlite").rows(KIND)) == 4
    fresh = _impact(tmp_path / "b")
    assert fresh["rows"] == out["rows"]  # bit-identical metrics from the same seeds
    other = _impact(tmp_path / "c", ["seed=5", "impact.seeds=1"])
    assert other["rows"] != out["rows"][:2]


def test_disparate_impact_resumes_bit_identically_after_a_stop(tmp_path: Path) -> None:
    """Stop inside the DP arm (checkpoint + Interrupted), rerun: same rows as an uninterrupted run (the DP hook's
    generator and ledger and the clipping statistics come back from the checkpoint)."""
    overrides = [*TINY, "train.epochs=2", "impact.seeds=1", "impact.keep_fraction=0.2", "runtime.checkpoint_every=1"]
    config = load_impact_config(overrides=overrides)
    calls = {"n": 0}

    def stop_in_dp_arm() -> bool:  # the non-private arm takes 2 * 21 steps, then DP-SGD starts
        calls["n"] += 1
        return calls["n"] == 60

    with pytest.raises(Interrupted):
        disparate_impact_experiment(config, tmp_path / "a", should_stop=stop_in_dp_arm)
    resumed = disparate_impact_experiment(config, tmp_path / "a")
    straight = disparate_impact_experiment(config, tmp_path / "b")
    assert resumed["rows"] == straight["rows"]


def test_disparate_impact_target_epsilon_and_bad_config(tmp_path: Path) -> None:
    cfg = load_impact_config(overrides=[*TINY, "train.epochs=2", "impact.dp.target_epsilon=3", "impact.seeds=1"])
    n = 1438 - 146 + round(0.1 * 146)
    z = resolve_noise(0.8, 3.0, cfg.train, n, 1e-5, "rdp")
    assert planned_epsilon(z, cfg.train, n, 1e-5, "rdp") <= 3.0
    assert planned_epsilon(z * 0.98, cfg.train, n, 1e-5, "rdp") > 3.0
    with pytest.raises(ConfigError, match="impact.keep_fraction"):
        load_impact_config(overrides=["impact.keep_fraction=0"])
    with pytest.raises(ConfigError, match="impact.unknown"):
        load_impact_config(overrides=["impact.unknown=1"])
    assert (
        main(["disparate-impact", "--dataset", "digits", "--keep-fraction", "0.001", "--workdir", str(tmp_path)]) == 2
    )
    assert main(["privacy-audit", "--noise-levels", "0.8,-1", "--workdir", str(tmp_path)]) == 2


def test_audit_of_a_non_private_mechanism_exceeds_a_small_epsilon() -> None:
    """Noise 0 and no clipping: the model memorises the included mislabeled canaries, so the one-run audit
    rejects (1, 1e-5)-DP at 95% confidence (and stays reproducible bit for bit)."""
    splits = load_dataset("digits")
    cfg = load_audit_config(overrides=[*TINY, "train.epochs=40", "train.lr=0.5", "model.width=64"])

    def run() -> tuple[torch.Tensor, float]:
        tree = SeedTree(0)
        base = splits.train.subset(torch.arange(200))
        canaries = make_canaries(splits.test, 200, "mislabeled", tree.generator("canaries"))
        train = insert_canaries(base, canaries).materialize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dp = DPSGD(10, tree.generator("dp-sgd"), noise_multiplier=0.0, max_grad_norm=math.inf)
        with tempfile.TemporaryDirectory() as ckpt:
            model, _ = train_model(cfg, train, splits.train.channel_stats(), tree, Path(ckpt), torch.device("cpu"), dp)
        scores = canary_scores(model, canaries)
        return scores, one_run_audit(scores.numpy(), canaries.included.numpy(), 1e-5, 0.05).epsilon_lb

    scores, lb = run()
    assert lb > 1.0
    again, lb2 = run()
    assert torch.equal(scores, again) and lb == lb2


@pytest.mark.slow
def test_audit_experiment_dp_below_accountant_broken_above(tmp_path: Path) -> None:
    """The cross-check of B.2 item 12: DP-SGD's empirical lower bound stays below the accountant's epsilon,
    while the same pipeline without noise and clipping exceeds the epsilon the accountant claims for z = 8."""
    overrides = [
        *TINY,
        "model.width=64",
        "train.epochs=40",
        "train.lr=0.5",
        "audit.train_size=200",
        "audit.canaries=200",
        "audit.noise_levels=[8]",
    ]
    out = privacy_audit_experiment(load_audit_config(overrides=overrides), tmp_path / "a")
    dp, broken = out["runs"]
    assert dp["below_accountant"] and dp["epsilon_lb"] <= dp["accountant_epsilon"]
    assert dp["run_epsilon"] == pytest.approx(dp["accountant_epsilon"], rel=1e-12)
    assert broken["epsilon_lb"] > broken["accountant_epsilon"] and not broken["below_accountant"]
    again = privacy_audit_experiment(load_audit_config(overrides=overrides), tmp_path / "b")
    assert again["runs"] == out["runs"]
