"""Independent poisoning trials end to end: ``run_trials(config, workdir, trials, victims)``.

Trial t uses the root seed ``config.seed + t``: a fresh random target and adversarial class (unless the
config fixes them), fresh surrogates, poison selection and crafting randomness. Each trial crafts in
``workdir/trial-<t>`` and retrains ``victims`` victims per arm (poisoned, random-noise control, clean); its
summary is one row of ``workdir/results.sqlite`` (kind ``poison-trial``). A rerun skips recorded trials
and resumes an interrupted one from its checkpoints. The report pools all trials: success with a Wilson
95% interval per arm, and the clean-accuracy drop with a t interval over trials.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from poisonlab.attacks.poisoning.config import PoisoningExperimentConfig
from poisonlab.attacks.poisoning.experiment import (
    PRETRAINED,
    craft_experiment,
    evaluate_poisons_experiment,
    victim_config,
)
from poisonlab.experiments.store import ResultStore
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.metrics.intervals import Proportion, t_interval
from poisonlab.report.html import image, page, table
from poisonlab.report.plots import paired_margins_png
from poisonlab.utils.progress import progress_bar

KIND = "poison-trial"
ARMS = ("poisoned", "control", "clean")


def trial_config(config: PoisoningExperimentConfig, t: int) -> PoisoningExperimentConfig:
    """The config of trial ``t``: the same recipe with root seed ``config.seed + t``."""
    return config.model_copy(update={"seed": config.seed + t})


def run_trials(
    config: PoisoningExperimentConfig,
    workdir: str | Path,
    trials: int,
    victims: int,
    control: bool = True,
    clean: bool = True,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    victim_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) ``trials`` independent trials with ``victims`` victims per arm; returns the summary.

    With ``victim_overrides`` (``train.*``/``model.*``), the victims train with that recipe/architecture
    while the attacker's surrogates keep the config's; a rerun with other overrides reuses the crafted
    poisons and records its rows separately."""
    if trials < 1 or victims < 1:
        raise ValueError("trials and victims must be positive")
    victim_config(config, victim_overrides)  # refuse bad overrides before any work
    workdir = Path(workdir)
    store = ResultStore(workdir / "results.sqlite")
    chash = trials_hash(config, victim_overrides)
    dumped = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    write_bytes_atomic(workdir / "config.yaml", dumped.encode())
    done = {r["trial_key"]: r for r in store.rows(KIND) if r["config_hash"] == chash}
    rows: list[dict[str, Any]] = []
    initial = sum(f"trial={t}" in done for t in range(trials))
    with progress_bar(trials, "trials", enabled=progress, initial=initial) as bar:
        for t in range(trials):
            key = f"trial={t}"
            if key in done:
                rows.append({"trial": t, **done[key]["metrics"], **done[key]["meta"]})
                continue
            row = _trial(config, workdir, t, victims, control, clean, should_stop, victim_overrides)
            metrics = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "trial"}
            meta = {k: v for k, v in row.items() if k not in metrics and k != "trial"}
            store.add(KIND, chash, key, config.seed + t, metrics, meta)
            rows.append(row)
            bar.update(1)
    summary = summarize_trials(rows)
    result = {
        "config_hash": chash,
        "config": config.model_dump(mode="json"),
        "victim_overrides": list(victim_overrides),
        "summary": summary,
        "trials": rows,
    }
    report = "report" if not victim_overrides else f"report-victims-{chash}"
    result["report"] = str(_write_report(workdir / report, result))
    return result


def trials_hash(config: PoisoningExperimentConfig, victim_overrides: Sequence[str] = ()) -> str:
    """The key of a run's trial rows: the config's hash, combined with the victims' overrides if any."""
    chash = config.config_hash()
    if not victim_overrides:
        return chash
    return hashlib.sha256(json.dumps([chash, list(victim_overrides)]).encode()).hexdigest()[:16]


def _trial(
    config: PoisoningExperimentConfig,
    workdir: Path,
    t: int,
    victims: int,
    control: bool,
    clean: bool,
    should_stop: Callable[[], bool] | None,
    victim_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    t0 = time.perf_counter()
    tconf = trial_config(config, t)
    folder = workdir / f"trial-{t:03d}"
    shared = workdir / PRETRAINED
    crafted = craft_experiment(tconf, folder, should_stop=should_stop, pretrained_dir=shared)
    evaluated = evaluate_poisons_experiment(
        folder, victims, control, clean=clean, pretrained_dir=shared, victim_overrides=victim_overrides
    )
    row: dict[str, Any] = {
        "trial": t,
        "seed": tconf.seed,
        "target_ids": crafted["target_ids"],
        "adv_class": crafted["metrics"]["adv_class"],
        "craft_loss": crafted["metrics"]["best_loss"],
        "surrogate_target_predictions": [s["target_predictions"] for s in crafted["surrogates"]],
    }
    for arm, v in evaluated["summary"].items():
        row[f"{arm}_successes"] = v["success"]["successes"]
        row[f"{arm}_n"] = v["success"]["n"]
        row[f"{arm}_accuracy"] = v["clean_accuracy"]
        if v.get("mean_adv_margin") is not None:
            row[f"{arm}_margin"] = v["mean_adv_margin"]
    row["wall_seconds"] = time.perf_counter() - t0  # this session's share if the trial was resumed
    return row


def summarize_trials(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: pooled success (Wilson 95%) and mean clean accuracy; trials with any success; the clean-accuracy
    drop (clean - poisoned, t interval over trials) and the final crafting loss per trial.

    ``margin_shift_vs_control``: the target's adversarial logit margin (``z_adv - max other``, mean over a trial's
    victims) on the poisoned victims minus that on the noise-control victims with the same seeds, with a paired t
    interval over trials. It shows whether the poisons move the target at all where too few targets flip for the
    success rate to tell poisons from noise; > 0 is towards the adversarial class."""
    out: dict[str, Any] = {"trials": len(rows)}
    for arm in ARMS:
        if not rows or f"{arm}_n" not in rows[0]:
            continue
        total = Proportion(0, 0)
        for r in rows:
            total = total + Proportion(int(r[f"{arm}_successes"]), int(r[f"{arm}_n"]))
        mean, lo, hi = t_interval([float(r[f"{arm}_accuracy"]) for r in rows])
        margins = [float(r[f"{arm}_margin"]) for r in rows if f"{arm}_margin" in r]
        out[arm] = {
            "mean_adv_margin": sum(margins) / len(margins) if margins else None,
            "success": total.as_dict(),
            "trials_with_success": sum(int(r[f"{arm}_successes"]) > 0 for r in rows),
            "clean_accuracy": {"mean": mean, "lo": lo, "hi": hi},
        }
    if rows and "clean_accuracy" in out.get("clean", {}) and "poisoned" in out:
        mean, lo, hi = t_interval([float(r["clean_accuracy"]) - float(r["poisoned_accuracy"]) for r in rows])
        out["accuracy_drop"] = {"mean": mean, "lo": lo, "hi": hi}
    if rows and "control" in out and "poisoned" in out:  # same victim seeds, noise instead of poisons
        mean, lo, hi = t_interval([float(r["control_accuracy"]) - float(r["poisoned_accuracy"]) for r in rows])
        out["accuracy_drop_vs_control"] = {"mean": mean, "lo": lo, "hi": hi}
    paired = _paired_margins(rows)
    if paired:  # same victim seeds on both arms: how far the poisons move the target past same-budget noise
        mean, lo, hi = t_interval([float(r["poisoned_margin"]) - float(r["control_margin"]) for r in paired])
        out["margin_shift_vs_control"] = {"mean": mean, "lo": lo, "hi": hi, "trials": len(paired)}
    if rows:
        # final crafting objective: 1 - cosine (gradient matching), adversarial loss (MetaPoison), feature
        # distance (feature collision); rows written before the rename call it matching_loss
        out["craft_loss"] = [float(r.get("craft_loss", r.get("matching_loss", float("nan")))) for r in rows]
    return out


def _write_report(directory: Path, result: dict[str, Any]) -> Path:
    s = result["summary"]
    lines = []
    for arm in ARMS:
        if arm in s:
            p, a = s[arm]["success"], s[arm]["clean_accuracy"]
            lines.append(
                (
                    arm,
                    f"{p['rate']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]",
                    f"{p['successes']}/{p['n']}",
                    f"{s[arm]['trials_with_success']}/{s['trials']}",
                    f"{a['mean']:.4f} [{a['lo']:.4f}, {a['hi']:.4f}]",
                )
            )
    keys = ["trial", "seed", "target_ids", "adv_class", "craft_loss"]
    arms = [a for a in ARMS if a in s]
    margin_arms = [a for a in arms if all(f"{a}_margin" in r for r in result["trials"])]
    per_trial = [
        [r.get(k, r.get("matching_loss")) for k in keys]
        + [f"{r[f'{a}_successes']}/{r[f'{a}_n']}" for a in arms]
        + [f"{r[f'{a}_margin']:.2f}" for a in margin_arms]
        for r in result["trials"]
    ]
    p = result["config"]["poison"]
    drop = s.get("accuracy_drop")
    body = page(
        f"poisonlab trials: {p['recipe']} ({p['scenario']}), eps {p['eps'] * 255:.3g}/255",
        [
            (
                "Success over all trials and victims",
                table(lines, ["arm", "success (Wilson 95%)", "hits", "trials with a hit", "clean accuracy (t 95%)"]),
            ),
            (
                "Clean-accuracy drop (clean - poisoned, t 95% over trials)",
                "<p>-</p>" if drop is None else f"<p>{drop['mean']:.4f} [{drop['lo']:.4f}, {drop['hi']:.4f}]</p>",
            ),
            ("Per trial", table(per_trial, [*keys, *arms, *(f"{a} margin" for a in margin_arms)])),
            ("Target margin: poisons against the noise control", _margin_section(result)),
            ("Victims' recipe", _victim_text(result.get("victim_overrides", []))),
        ],
    )
    write_bytes_atomic(directory / "result.json", json.dumps(result, indent=1).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"


def _paired_margins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials whose poisoned and noise-control victims both recorded the target's margin."""
    return [r for r in rows if "poisoned_margin" in r and "control_margin" in r]


def _margin_section(result: dict[str, Any]) -> str:
    shift = result["summary"].get("margin_shift_vs_control")
    if shift is None:
        return "<p>-</p>"
    paired = _paired_margins(result["trials"])
    png = paired_margins_png(
        [float(r["control_margin"]) for r in paired],
        [float(r["poisoned_margin"]) for r in paired],
        [str(r["trial"]) for r in paired],
    )
    text = (
        f"<p>The target's adversarial margin (z_adv - max other, logits; &gt; 0 is flipped) moves {shift['mean']:.2f} "
        f"[{shift['lo']:.2f}, {shift['hi']:.2f}] (paired t 95% over {shift['trials']} trials) further towards the "
        "adversarial class on the poisoned victims than on the noise-control victims with the same seeds.</p>"
    )
    return text + image(png, "target margin per trial, poisoned against noise-control victims")


def _victim_text(overrides: list[str]) -> str:
    if not overrides:
        return "<p>the surrogates' recipe and architecture</p>"
    return "<p>differs from the surrogates': " + ", ".join(html.escape(o) for o in overrides) + "</p>"
