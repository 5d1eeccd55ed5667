"""The backdoor experiment: ``backdoor_experiment(config, workdir)`` attacks, trains, measures, stores, reports.

Per victim seed s it trains the attacked model (data poisoning: on the PoisonedDataset; blind: on the clean
data with the BlindBackdoor hook) and, unless disabled, a clean control with the same seed s (same init and
batch order). Each trial is a row in the result store; a rerun skips recorded trials. Controls are keyed by
the hash of the config without its ``backdoor`` section, so attacks that share a store share their controls.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from poisonlab.attacks.backdoor.blind import BlindBackdoor, LatentEvasion, forward_with_latent
from poisonlab.attacks.backdoor.config import BackdoorExperimentConfig
from poisonlab.attacks.backdoor.poisoning import DirtyLabelBackdoor
from poisonlab.attacks.backdoor.synthesizers import (
    SemanticTask,
    Synthesizer,
    TriggerTask,
    build_synthesizer,
    build_trigger,
    ink,
    top_within_class,
)
from poisonlab.attacks.backdoor.triggers import Trigger
from poisonlab.budget import PoisonBudget
from poisonlab.data.dataset import Splits
from poisonlab.data.registry import load_dataset
from poisonlab.experiments.job import environment, resolve_device, trainer_options
from poisonlab.experiments.store import ResultStore
from poisonlab.experiments.train import STORE, build_for
from poisonlab.io.artifact import load_artifact, save_artifact
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.metrics.backdoor import backdoor_accuracy, predict, spectral_signature_auc, summarize_trials
from poisonlab.report.html import image, page, table
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate
from poisonlab.training.trainer import Trainer

KIND, CONTROL = "backdoor", "backdoor-control"
DRYRUN_TRAIN, DRYRUN_TEST = 64, 100


def backdoor_experiment(
    config: BackdoorExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    store: str | Path | None = None,
    dryrun: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run the configured backdoor attack against ``backdoor.victims`` victims and report.

    Args:
        config: training sections + the ``backdoor`` section.
        workdir: receives config.yaml, checkpoints, victims/, trigger/ (artifact), report/ (HTML, PNG, JSON).
        progress: progress bars.
        store: result store file (default ``workdir/results.sqlite``); share one to share clean controls.
        dryrun: a tiny smoke run (first 64 training / 100 test samples, 1 epoch, 1 victim).
        should_stop: polled by the Trainer; it checkpoints and raises Interrupted (rerun to resume).

    Returns:
        The result: per-seed metrics of victims and controls, the summary with intervals, paths.
    """
    workdir = Path(workdir)
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)  # fails before anything is written
    if dryrun:
        config, splits = _dryrun(config, splits)
    cfg = config.backdoor
    trigger = build_trigger(cfg, splits.train.shape, SeedTree(config.seed).child("backdoor").generator("trigger"))
    build_synthesizer(cfg, trigger, splits.train.num_classes)  # validates target_class before any work
    results = ResultStore(store if store is not None else workdir / STORE)
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    suffix = "/dryrun" if dryrun else ""
    victims, controls = [], []
    for seed in range(config.seed, config.seed + cfg.victims):
        run = dict(config=config, splits=splits, trigger=trigger, device=device, workdir=workdir, store=results)
        if cfg.control:
            controls.append(_trial(CONTROL, seed, suffix, progress, should_stop, **run))
        victims.append(_trial(KIND, seed, suffix, progress, should_stop, **run))
    summary = summarize_trials(victims, controls)
    trigger_dir = trigger.save(workdir / "trigger", {"config_hash": config.config_hash(), "seed": config.seed})
    row = {
        "experiment": "backdoor",
        "config_hash": config.config_hash(),
        "control_config_hash": config.victim_config().config_hash(),
        "config": config.model_dump(mode="json"),
        "summary": summary,
        "victims": victims,
        "controls": controls,
        "trigger": str(trigger_dir),
    }
    model = _load_victim(
        workdir / "victims" / (f"seed{config.seed}" + suffix.replace("/", "-")), config, splits, device
    )
    row["report"] = str(_write_report(workdir / "report", row, _examples_png(model, splits, config, trigger)))
    return row


def _dryrun(config: BackdoorExperimentConfig, splits: Splits) -> tuple[BackdoorExperimentConfig, Splits]:
    small = Splits(
        splits.train.subset(torch.arange(min(DRYRUN_TRAIN, len(splits.train)))),
        splits.test.subset(torch.arange(min(DRYRUN_TEST, len(splits.test)))),
    )
    update = {
        "train": config.train.model_copy(update={"epochs": 1}),
        "backdoor": config.backdoor.model_copy(update={"victims": 1}),
    }
    return config.model_copy(update=update), small


def _trial(
    kind: str,
    seed: int,
    suffix: str,
    progress: bool,
    should_stop: Callable[[], bool] | None,
    *,
    config: BackdoorExperimentConfig,
    splits: Splits,
    trigger: Trigger,
    device: torch.device,
    workdir: Path,
    store: ResultStore,
) -> dict[str, Any]:
    """Train and measure one victim (or clean control) with root seed ``seed``, or return its recorded row."""
    cfg, attack = config.backdoor, kind == KIND
    chash = config.config_hash() if attack else config.victim_config().config_hash()
    key = f"seed={seed}{suffix}"
    for r in store.rows(kind):
        if r["config_hash"] == chash and r["trial_key"] == key:
            return {"seed": seed, **r["metrics"], "blind_history": r["meta"].get("blind_history", [])}
    seeds = SeedTree(seed)
    atk = seeds.child("backdoor")
    model = build_for(config, splits, seeds, device)
    train, hooks, extra = splits.train, [], {}
    if attack and cfg.mode == "data":
        budget = PoisonBudget(fraction=cfg.poison_fraction)
        poisoned = DirtyLabelBackdoor(trigger, cfg.target_class, budget).apply(train, atk.generator("poison"))
        train, extra["poison_ids"] = poisoned.materialize(), poisoned.delta_ids.tolist()
    elif attack:
        evasion = LatentEvasion(splits.train.num_classes) if cfg.evasion != "none" else None
        synth = build_synthesizer(cfg, trigger, splits.train.num_classes)
        weights = cfg.fixed_weights
        hook = BlindBackdoor(
            synth, atk.generator("synth"), cfg.balance, cfg.mgda_normalize, weights, evasion, cfg.norm_mode
        )
        hooks = [hook]
    name = f"seed{seed}" + ("-dryrun" if suffix else "")
    ckpt_dir = workdir / "checkpoints" / f"{kind}-{name}-{chash}"  # per config: a changed config starts afresh
    ckpt = Checkpointer(ckpt_dir, chash, keep=config.runtime.keep_checkpoints)
    trainer = Trainer(
        model,
        train,
        config.train,
        seeds,
        hooks=hooks,
        checkpointer=ckpt,
        should_stop=should_stop,
        **trainer_options(config.runtime),
        progress=progress,
    )
    history = trainer.fit()
    metrics = measure(model, splits, build_synthesizer(cfg, trigger, splits.train.num_classes), atk.generator("eval"))
    if attack:
        extra["blind_history"] = hooks[0].history if hooks else []
        info = {"config_hash": chash, "seed": seed}
        save_artifact(workdir / "victims" / name, "model", dict(model.state_dict()), info)
    meta = {"seeds": seeds.record(), "history": history, "environment": environment(device), **extra}
    meta["train_seconds"] = sum(h["seconds"] for h in history)
    store.add(kind, chash, key, seed, metrics, meta)
    return {"seed": seed, **metrics, "blind_history": extra.get("blind_history", [])}


def measure(model: nn.Module, splits: Splits, synth: Synthesizer, generator: torch.Generator) -> dict[str, float]:
    """Clean test accuracy, the backdoor task's success on its test inputs, the spectral-signature AUC (trigger
    backdoors) and, for a semantic backdoor, the accuracy on test inputs without the feature."""
    test = splits.test
    x, y_star, eligible = synth.test_inputs(test.images, test.labels, generator)
    hit = backdoor_accuracy(model, x, y_star, eligible)
    out = {"clean_accuracy": evaluate(model, test)["accuracy"], "backdoor_successes": hit.successes}
    out.update(backdoor_n=hit.n, backdoor_rate=hit.rate, spectral_auc=float("nan"))
    if isinstance(synth, SemanticTask):  # the main task proper: inputs without the natural feature
        feature = top_within_class(ink(test.images), test.labels, test.num_classes, synth.fraction)
        out["clean_accuracy_no_feature"] = evaluate(model, test.subset((~feature).nonzero().flatten()))["accuracy"]
    if isinstance(synth, TriggerTask):
        clean = test.images[test.labels == synth.target]
        was = model.training
        model.eval()
        with torch.no_grad():
            both = torch.cat([clean, x[eligible]]).to(next(model.parameters()).device)
            lat = forward_with_latent(model, both)[1].cpu()
        model.train(was)
        out["spectral_auc"] = spectral_signature_auc(lat[: len(clean)], lat[len(clean) :])
    return out


def _load_victim(
    path: Path, config: BackdoorExperimentConfig, splits: Splits, device: torch.device
) -> nn.Module | None:
    if not path.is_dir():
        return None
    tensors, meta = load_artifact(path, "model")
    model = build_for(config, splits, SeedTree(int(meta["seed"])), device)
    model.load_state_dict(tensors)
    return model


def _examples_png(model: nn.Module | None, splits: Splits, config: BackdoorExperimentConfig, trigger: Trigger) -> bytes:
    """Eight test inputs (clean row, backdoor row) tiled into one image, with labels and the victim's predictions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    synth = build_synthesizer(config.backdoor, trigger, splits.test.num_classes)
    gen = SeedTree(config.seed).child("backdoor").generator("examples")
    x, y_star, eligible = synth.test_inputs(splits.test.images, splits.test.labels, gen)
    idx = eligible.nonzero().flatten()[:8]
    rows = [("clean", splits.test.images[idx], splits.test.labels[idx]), ("backdoor", x[idx], y_star[idx])]
    c, h, w = splits.test.shape
    k, gap, vgap = max(len(idx), 1), 2, max(2, h // 3)  # room for a caption above each row of tiles
    canvas = torch.full((c, 2 * (h + vgap), k * (w + gap)), 1.0)
    for r, (_, imgs, _) in enumerate(rows):  # two rows of eight tiles
        tiles = torch.nn.functional.pad(imgs.cpu(), (0, gap), value=1.0)  # (k, C, h, w + gap)
        top = r * (h + vgap) + vgap
        canvas[:, top : top + h, : len(idx) * (w + gap)] = torch.cat(list(tiles), dim=2)
    fig = Figure(figsize=(1.1 * k, 3.0), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, aspect="auto")
    ax.axis("off")
    for r, (name, imgs, labels) in enumerate(rows):
        preds = predict(model, imgs) if model is not None else None
        for i in range(len(idx)):
            text = f"{name} y={int(labels[i])}" + ("" if preds is None else f" pred {int(preds[i])}")
            ax.text(i * (w + gap), r * (h + vgap) + vgap - 0.8, text, fontsize=6, va="bottom", color="black")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _write_report(directory: Path, row: dict[str, Any], png: bytes) -> Path:
    """Write ``index.html`` (self-contained), ``triggered.png`` and ``result.json``; returns the page."""
    s, bd = row["summary"], row["config"]["backdoor"]

    def iv(d: dict[str, float] | None) -> str:
        return "-" if d is None else f"{d['mean']:.4f} [{d['lo']:.4f}, {d['hi']:.4f}]"

    pooled = s["backdoor_pooled"]
    ctrl = s.get("control_backdoor_pooled")
    summary = [
        ("clean accuracy (victim)", iv(s["clean_accuracy"])),
        ("clean accuracy (control)", iv(s.get("control_accuracy"))),
        ("accuracy drop (control - victim)", iv(s.get("accuracy_drop"))),
        ("backdoor task success, per-seed mean", iv(s["backdoor_rate"])),
        (
            "backdoor task success, pooled (Wilson 95%)",
            f"{pooled['rate']:.4f} [{pooled['lo']:.4f}, {pooled['hi']:.4f}]",
        ),
        (
            "backdoor base rate on controls",
            "-" if ctrl is None else f"{ctrl['rate']:.4f} ({ctrl['successes']}/{ctrl['n']})",
        ),
        ("seeds", ", ".join(str(v) for v in s["seeds"])),
    ]
    keys = ["seed", "clean_accuracy", "backdoor_rate", "backdoor_successes", "backdoor_n", "spectral_auc"]
    per_seed = [[r[k] for k in keys] for r in row["victims"]] + [
        ["control " + str(r["seed"])] + [r[k] for k in keys[1:]] for r in row["controls"]
    ]
    title = f"poisonlab backdoor: {bd['mode']} {bd['task'] if bd['mode'] == 'blind' else bd['trigger']}"
    sections = [
        ("Result (95% intervals: t over seeds; Wilson for pooled proportions)", table(summary, ["metric", "value"])),
        ("Per seed", table(per_seed, keys)),
    ]
    hist = row["victims"][0].get("blind_history") if row["victims"] else None
    if hist:
        cols = [k for k in hist[0] if k != "epoch"]
        sections.append(
            (
                "Blind loss: mean task weights and losses per epoch (first victim)",
                table([[int(h["epoch"])] + [h[k] for k in cols] for h in hist], ["epoch", *cols]),
            )
        )
    body = page(
        title,
        [
            *sections,
            ("Backdoor inputs", image(png, "clean and backdoor test inputs with the victim's predictions")),
            (
                "Configuration",
                f"<p>config hash <code>{row['config_hash']}</code></p><pre>"
                + html.escape(json.dumps(row["config"], indent=2))
                + "</pre>",
            ),
        ],
    )
    directory = Path(directory)
    write_bytes_atomic(directory / "triggered.png", png)
    write_bytes_atomic(directory / "result.json", json.dumps(row, indent=1).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"
