"""``audit_experiment(config, workdir)``: every probe under every defense, as resumable trials, then a report.

The trials are rows of kind ``audit`` in the result store, keyed ``<probe>/<defense>/seed=<s>`` under a hash
of (the user's recipe, the probe's parameters, the defense); so a killed audit resumes, a larger budget reuses
the trials a smaller one finished, and two audits sharing a store share their work.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from poisonlab.errors import ConfigError
from poisonlab.experiments.audit.config import AuditConfig
from poisonlab.experiments.audit.defenses import DefensePreset, preset
from poisonlab.experiments.audit.probes import PROBES, Probe, load_probes
from poisonlab.experiments.runner import Trial, run_trials
from poisonlab.experiments.store import ResultStore
from poisonlab.io.atomic import write_bytes_atomic

KIND = "audit"


def select_probes(config: AuditConfig) -> tuple[list[Probe], dict[str, str]]:
    """The probes to run and, for those that cannot run here, why."""
    load_probes()
    names = list(config.audit.attacks) or PROBES.names()
    probes, skipped = [], {}
    for n in names:
        probe = PROBES.get(n, "audit.attacks")
        why = probe.available()
        if why is None:
            probes.append(probe)
        else:
            skipped[n] = why
    if "clean" not in [p.name for p in probes]:  # every defense's cost is measured
        probes.insert(0, PROBES.get("clean"))
    return probes, skipped


def plan_trials(config: AuditConfig, workdir: Path) -> list[tuple[Probe, DefensePreset, Trial]]:
    """Every (probe, defense, seed) trial of the audit, in a stable order."""
    probes, _ = select_probes(config)
    defenses = [preset(n) for n in config.audit.defense_names()]
    if len({d.name for d in defenses}) != len(defenses):
        raise ConfigError("audit.defenses: a defense is listed twice")
    victim = config.victim_config().model_dump(mode="json")
    out = []
    for probe in probes:
        plan = probe.plan(config.audit.budget)
        n = int(plan.pop("trials"))
        if config.audit.max_trials is not None:
            n = min(n, config.audit.max_trials)
        only = plan.pop("defenses", None)  # a budget may measure a probe under some defenses only
        params = plan
        for defense in defenses:
            if not probe.supports(defense) or (only is not None and defense.name not in only):
                continue
            blob = json.dumps([victim, probe.name, params, defense.as_dict()], sort_keys=True)
            chash = hashlib.sha256(blob.encode()).hexdigest()[:16]
            for t in range(n):
                seed = config.seed + t
                spec = {
                    "config": victim,
                    "defense": defense.name,
                    "seed": seed,
                    "params": params,
                    "workdir": str(workdir),
                }
                out.append(
                    (
                        probe,
                        defense,
                        Trial(KIND, chash, f"{probe.name}/{defense.name}/seed={seed}", seed, probe.fn, spec),
                    )
                )
    return out


def estimate_seconds(config: AuditConfig, planned: list[tuple[Probe, DefensePreset, Trial]], done: set[str]) -> float:
    """A rough wall time for the trials not yet done (per-trial estimates x the defense's training cost, over
    the parallel workers). Probes that train no victim under the defense (``defended = False``) cost 1x."""
    import os

    total = sum(
        p.seconds.get(config.audit.budget, 60.0) * (d.cost if p.defended else 1.0)
        for p, d, t in planned
        if t.key not in done
    )
    workers = 1 if config.audit.executor == "sequential" else (config.audit.workers or os.cpu_count() or 1)
    return total / max(1, workers)


def audit_experiment(
    config: AuditConfig,
    workdir: str | Path,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the audit in ``workdir`` and write ``report/index.html`` and ``report/audit.json``."""
    workdir = Path(workdir)
    say = echo or (lambda _: None)
    planned = plan_trials(config, workdir)
    _, skipped = select_probes(config)
    store = ResultStore(config.audit.store or workdir / "results.sqlite")
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    ids = {(t.config_hash, t.key) for _, _, t in planned}
    done = {r["trial_key"] for r in store.rows(KIND) if (r["config_hash"], r["trial_key"]) in ids}
    eta = estimate_seconds(config, planned, done)
    probes = sorted({p.name for p, _, _ in planned})
    defenses = list(dict.fromkeys(d.name for _, d, _ in planned))
    say(
        f"poisonlab audit: budget {config.audit.budget}, {len(planned)} trials ({len(done)} already done), "
        f"probes {', '.join(probes)}; defenses {', '.join(defenses)}; ETA ~{eta / 60:.0f} min "
        f"on this machine ({config.audit.executor} executor)"
    )
    for name, why in skipped.items():
        say(f"  skipped probe {name}: {why}")
    t0 = time.perf_counter()

    def on_row(trial: Trial, row: dict[str, Any]) -> None:
        m = row["metrics"]
        shown = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float) and k != "seconds")
        say(f"  done {trial.key}: {shown}")

    rows = run_trials(
        [t for _, _, t in planned],
        store,
        config.audit.executor,
        config.audit.workers,
        progress,
        log=workdir / "audit.log",
        on_row=on_row,
    )
    result = summarize_audit(config, planned, rows, skipped)
    result["wall_seconds_this_process"] = time.perf_counter() - t0
    from poisonlab.experiments.audit.report import write_audit_report

    result["report"] = str(write_audit_report(workdir / "report", result))
    return result


def summarize_audit(
    config: AuditConfig,
    planned: list[tuple[Probe, DefensePreset, Trial]],
    rows: dict[str, dict[str, Any]],
    skipped: dict[str, str],
) -> dict[str, Any]:
    """Per probe and defense: the probe's summary with intervals, and the trial rows behind it."""
    probes: dict[str, Any] = {}
    for probe, defense, trial in planned:
        entry = probes.setdefault(
            probe.name,
            {
                "title": probe.title,
                "threat": probe.threat,
                "doc": (probe.__class__.__doc__ or "").strip(),
                "headline": {
                    "metric": probe.headline.metric,
                    "label": probe.headline.label,
                    "rate": probe.headline.rate,
                },
                "defenses": {},
            },
        )
        d = entry["defenses"].setdefault(defense.name, {"describe": defense.describe, "rows": []})
        row = rows[trial.key]
        d["rows"].append({"key": trial.key, "seed": trial.seed, "metrics": row["metrics"], "meta": row["meta"]})
    for name, entry in probes.items():
        probe = PROBES.get(name)
        for d in entry["defenses"].values():
            d["summary"] = probe.summarize(d["rows"])
    return {
        "experiment": "audit",
        "budget": config.audit.budget,
        "config": config.model_dump(mode="json"),
        "victim_config_hash": config.victim_config().config_hash(),
        "defenses": {n: preset(n).describe for n in config.audit.defense_names()},
        "probes": probes,
        "skipped": skipped,
    }
