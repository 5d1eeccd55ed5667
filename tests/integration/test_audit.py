"""The audit end to end on tiny data: trials, resume, JSON, and the report rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from poisonlab.experiments.audit.config import load_audit_config
from poisonlab.experiments.audit.probe_targeted import TargetedProbe
from poisonlab.experiments.audit.probes import PROBES, load_probes
from poisonlab.experiments.audit.suite import audit_experiment, plan_trials

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
OVERRIDES = [
    "data.name=digits",
    "model.name=mlp",
    "model.width=32",
    "train.epochs=2",
    "train.lr=0.05",
    "runtime.device=cpu",
    "audit.attacks=[clean,backdoor,targeted]",
    "audit.defenses=[none,mixup,spectral]",
    "audit.executor=sequential",
]


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    load_probes()
    tiny = {"trials": 1, "victims": 1, "recipe": "feature-collision", "scenario": "transfer", "steps": 5}
    old = TargetedProbe.plans
    PROBES.get("targeted").plans = {"quick": tiny}  # type: ignore[misc]
    try:
        work = tmp_path_factory.mktemp("audit")
        result = audit_experiment(load_audit_config("default", None, OVERRIDES), work)
    finally:
        PROBES.get("targeted").plans = old  # type: ignore[misc]
    return work, result


def test_audit_rows_and_summary(audited: tuple[Path, dict]) -> None:
    work, result = audited
    probes = result["probes"]
    assert set(probes) == {"clean", "backdoor", "targeted"}
    assert set(probes["clean"]["defenses"]) == {"none", "mixup", "spectral"}
    assert set(probes["targeted"]["defenses"]) == {"none", "mixup"}  # filters are not measured on it
    bd = probes["backdoor"]["defenses"]["none"]
    m = bd["rows"][0]["metrics"]
    assert 0 <= m["backdoor_rate"] <= 1 and m["backdoor_n"] > 0 and m["poisons"] > 0
    assert bd["summary"]["backdoor_rate"]["lo"] <= bd["summary"]["backdoor_rate"]["mean"]
    spectral = probes["backdoor"]["defenses"]["spectral"]["rows"][0]["metrics"]
    assert 0 <= spectral["filter_recall"] <= 1 and spectral["removed"] > 0
    text = (work / "report" / "audit.json").read_text()
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in audit.json"))
    assert parsed["probes"]["clean"]["defenses"]["none"]["rows"][0]["metrics"]["clean_accuracy"] > 0.3


def test_audit_resumes_without_recomputing(audited: tuple[Path, dict]) -> None:
    work, first = audited
    log_before = (work / "audit.log").read_text()
    load_probes()
    tiny = {"trials": 1, "victims": 1, "recipe": "feature-collision", "scenario": "transfer", "steps": 5}
    old = TargetedProbe.plans
    PROBES.get("targeted").plans = {"quick": tiny}  # type: ignore[misc]
    try:
        config = load_audit_config("default", None, OVERRIDES)
        again = audit_experiment(config, work)
        assert len(plan_trials(config, work)) == len(log_before.splitlines())
    finally:
        PROBES.get("targeted").plans = old  # type: ignore[misc]
    assert (work / "audit.log").read_text() == log_before
    for name, entry in first["probes"].items():
        for defense, d in entry["defenses"].items():
            assert again["probes"][name]["defenses"][defense]["rows"] == d["rows"]


def test_report_renders_in_headless_chromium(audited: tuple[Path, dict]) -> None:
    """Tables and images render with no console errors; a screenshot is kept in test-artifacts/."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    work, _ = audited
    page_path = work / "report" / "index.html"
    errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            assert page.title() == "poisonlab audit"
            assert page.locator("table").count() >= 4
            headers = page.locator("table").first.locator("th").all_inner_texts()
            assert headers[:2] == ["defense", "clean accuracy"]
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) >= 2 and all(w > 0 for w in widths), widths
            link = page.locator("table").first.locator("a").first
            target = link.get_attribute("href")
            assert target and page.locator(target).count() == 1  # numbers link to their trial rows
            page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []


def test_membership_probe_trains_every_model_under_the_defense(tmp_path: Path) -> None:
    """Target and shadow models train with the defense's hooks (their own saved set per defense); DP-SGD rows
    carry epsilon."""
    load_probes()
    probe = PROBES.get("membership")
    tiny = {"trials": 1, "shadows": 4, "targets": 10, "replicas": 2, "width": 16}
    old = probe.plans
    probe.plans = {"quick": tiny}  # type: ignore[misc]
    overrides = [o for o in OVERRIDES if not o.startswith("audit.")] + [
        "audit.attacks=[membership]",
        "audit.defenses=[none,mixup,dp-sgd]",
        "audit.executor=sequential",
    ]
    try:
        result = audit_experiment(load_audit_config("default", None, overrides), tmp_path)
    finally:
        probe.plans = old  # type: ignore[misc]
    rows = {d: e["rows"][0]["metrics"] for d, e in result["probes"]["membership"]["defenses"].items()}
    assert set(rows) == {"none", "mixup", "dp-sgd"}
    for m in rows.values():
        assert 0 <= m["poisoned_tpr_1pct"] <= 1 and 0 <= m["all_auc"] <= 1
    assert rows["mixup"]["all_auc"] != rows["none"]["all_auc"]  # other models, not the undefended ones reused
    assert {p.name for p in (tmp_path / "membership").iterdir()} == {"seed0", "mixup-seed0", "dp-sgd-seed0"}
    assert 0 < rows["dp-sgd"]["epsilon"] < float("inf") and rows["dp-sgd"]["delta"] == 1e-5
    assert "epsilon" not in rows["none"]


def test_federated_probe_replaces_the_model_and_shares_pretraining(tmp_path: Path) -> None:
    """Model replacement in a federated version of the recipe: FedAvg and clipping arms on one pretrained
    global model; not part of the quick budget."""
    load_probes()
    probe = PROBES.get("federated")
    base = [o for o in OVERRIDES if not o.startswith("audit.")] + ["audit.defenses=[none]", "audit.executor=sequential"]
    quick = load_audit_config("default", None, [*base, "audit.attacks=[federated]"])
    assert [p.name for p, _, _ in plan_trials(quick, tmp_path)] == ["clean"]  # minutes per trial: not in quick
    old = probe.plans
    probe.plans = {"quick": {"trials": 1, "clients": 6, "per_round": 3, "pretrain_rounds": 2}}  # type: ignore[misc]
    try:
        result = audit_experiment(quick, tmp_path)
    finally:
        probe.plans = old  # type: ignore[misc]
    row = result["probes"]["federated"]["defenses"]["none"]["rows"][0]
    m = row["metrics"]
    assert 0 <= m["backdoor_rate"] <= 1 and m["backdoor_n"] > 0 and 0 <= m["backdoor_rate_clipped"] <= 1
    assert m["backdoor_successes"] == round(m["backdoor_rate"] * m["backdoor_n"])
    assert len(list((tmp_path / "federated" / "seed0" / "pretrain").iterdir())) == 1  # both arms, one pretraining
    assert Path(row["meta"]["curves_png"]).is_file()
    assert (tmp_path / "report" / "index.html").read_text().count("model replacement") >= 1
