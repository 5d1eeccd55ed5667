"""One gradient inversion experiment: ``run(config, workdir)`` for the CLI and the tests.

Draw private batches, let honest clients compute their updates against the server's model, hand only
(payload, update) to the attack, then score the reconstructions against the batches and write
artifacts (one per update), a PNG grid, ``results.json`` and a row in the result store.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from poisonlab.attacks.federated.inversion.analytic import AnalyticFCInversion
from poisonlab.attacks.federated.inversion.base import GradientInversion
from poisonlab.attacks.federated.inversion.client import client_update
from poisonlab.attacks.federated.inversion.config import InvertExperimentConfig
from poisonlab.attacks.federated.inversion.dlg import DeepLeakage
from poisonlab.attacks.federated.inversion.evaluate import score_reconstruction
from poisonlab.attacks.federated.inversion.grid import reconstruction_grid_png
from poisonlab.attacks.federated.inversion.inverting import InvertingGradients
from poisonlab.attacks.federated.inversion.messages import ServerPayload
from poisonlab.data import Dataset, load_dataset
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.store import ResultStore
from poisonlab.io import Checkpointer
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.metrics.intervals import t_interval
from poisonlab.models import build_model
from poisonlab.rng import SeedTree


def make_attack(
    config: InvertExperimentConfig,
    checkpointer: Checkpointer | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
) -> GradientInversion:
    """The attack named by ``config.invert.attack``, seeded from the root seed's "attack" child."""
    inv = config.invert
    seed = SeedTree(config.seed).seed("attack")
    if inv.attack == "inverting-gradients":
        return InvertingGradients(inv, seed, checkpointer, should_stop, progress)
    if inv.attack in ("dlg", "idlg"):
        return DeepLeakage(inv, optimize_labels=inv.attack == "dlg", seed=seed)
    return AnalyticFCInversion(label_strategy=inv.labels)


def select_batches(pool: Dataset, trials: int, batch: int, unique: bool, gen: torch.Generator) -> torch.Tensor:
    """(trials, batch) row positions in ``pool``, disjoint across trials; within a batch the labels are
    distinct when ``unique`` and the classes allow it (the reference draws batches of distinct labels)."""
    if trials * batch > len(pool):
        raise ValueError(f"invert: {trials} x {batch} images requested, the split has {len(pool)}")
    order = torch.randperm(len(pool), generator=gen)
    if not unique or batch > pool.num_classes:
        return order[: trials * batch].reshape(trials, batch)
    labels = pool.labels[order]
    # rank of each image among the earlier images of its class: batch t takes ranks t, so labels are distinct
    ranks = torch.zeros(len(order), dtype=torch.long)
    for c in range(pool.num_classes):
        members = (labels == c).nonzero().flatten()
        ranks[members] = torch.arange(len(members))
    rows = []
    for t in range(trials):
        cand = order[ranks == t]
        if len(cand) < batch:
            raise ValueError(f"invert: not enough images for {trials} batches of {batch} distinct labels")
        rows.append(cand[:batch])
    return torch.stack(rows)


def invert_experiment(
    config: InvertExperimentConfig,
    workdir: str | Path,
    progress: bool = True,
    force_new: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run the configured inversion on ``trials`` client batches; returns the result row."""
    inv, workdir = config.invert, Path(workdir)
    device = resolve_device(config.runtime)
    seeds = SeedTree(config.seed)
    splits = load_dataset(config.data.name, config.data.root)
    pool = splits.test if inv.split == "test" else splits.train
    mean, std = splits.train.channel_stats()
    model = build_model(
        config.model.name,
        pool.shape,
        pool.num_classes,
        seeds.generator("init"),
        width=config.model.width,
        norm=config.model.norm,
        mean=mean,
        std=std,
        device=device,
    ).eval()
    payload = ServerPayload.from_model(model, pool.shape, pool.num_classes)
    index = select_batches(pool, inv.trials, inv.batch_size, inv.unique_labels, seeds.generator("targets"))
    truth = pool.images[index].to(device)  # (T, B, C, H, W): the evaluator keeps it; the attack never sees it
    truth_labels = pool.labels[index].to(device)
    updates = [
        client_update(
            payload, truth[t], truth_labels[t], inv.local_steps, inv.local_lr, inv.images_per_step, inv.share_labels
        )
        for t in range(inv.trials)
    ]
    ckpt = Checkpointer(workdir / "checkpoints", config.config_hash())
    if force_new:
        ckpt.clear()
    attack = make_attack(config, ckpt, should_stop, progress)
    t0 = time.perf_counter()
    recs = attack.reconstruct_many(payload, updates)
    seconds = time.perf_counter() - t0
    scores = [score_reconstruction(r, truth[t], truth_labels[t]) for t, r in enumerate(recs)]
    for t, r in enumerate(recs):
        r.meta["sample_ids"] = pool.ids[index[t]].tolist()
        r.save(workdir / "reconstructions" / f"update-{t:03d}")
    row = _summary(config, scores, seconds, device, index, pool)
    _write_outputs(workdir, row, recs, scores, truth)
    meta = {k: v for k, v in row.items() if k not in ("metrics", "per_update")}
    ResultStore(workdir / "results.sqlite").add(
        "invert", config.config_hash(), "all", config.seed, row["metrics"], meta
    )
    return row


def _summary(
    config: InvertExperimentConfig,
    scores: list[dict[str, Any]],
    seconds: float,
    device: torch.device,
    index: torch.Tensor,
    pool: Dataset,
) -> dict[str, Any]:
    psnr = [v for s in scores for v in s["psnr"]]
    ssim = [v for s in scores for v in s["ssim"]]
    mse = [v for s in scores for v in s["mse"]]
    metrics: dict[str, Any] = {
        "psnr_mean": statistics.fmean(psnr),
        "ssim_mean": statistics.fmean(ssim),
        "mse_mean": statistics.fmean(mse),
        "label_accuracy": statistics.fmean(s["label_accuracy"] for s in scores),
        "images": len(psnr),
        "seconds": seconds,
        "seconds_per_image": seconds / len(psnr),
    }
    if len(psnr) > 1:
        m, lo, hi = t_interval(psnr)
        metrics["psnr_ci95"] = [lo, hi]
        m, lo, hi = t_interval(ssim)
        metrics["ssim_ci95"] = [lo, hi]
    return {
        "kind": "invert",
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "dataset": pool.name,
        "sample_ids": pool.ids[index].tolist(),
        "metrics": metrics,
        "per_update": [{k: v for k, v in s.items()} for s in scores],
        "environment": environment(device),
    }


def _write_outputs(
    workdir: Path, row: dict[str, Any], recs: list, scores: list[dict[str, Any]], truth: torch.Tensor
) -> None:
    shown_truth, shown_rec, captions = [], [], []
    for t, (r, s) in enumerate(zip(recs, scores)):
        order = torch.as_tensor(s["order"])
        rec_imgs = r.images[order] if r.images.shape[0] == truth.shape[1] else r.images.expand_as(truth[t])
        shown_truth.append(truth[t].cpu())
        shown_rec.append(rec_imgs.cpu())
        captions += [f"{p:.1f} dB" for p in s["psnr"]]
    png = reconstruction_grid_png(torch.cat(shown_truth)[:32], torch.cat(shown_rec)[:32], captions[:32])
    report = workdir / "report"
    report.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(report / "grid.png", png)
    write_bytes_atomic(workdir / "results.json", json.dumps(row, indent=1).encode())
    row["grid"] = str(report / "grid.png")
