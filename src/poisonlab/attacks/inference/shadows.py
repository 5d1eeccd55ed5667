"""Shadow models on random halves of a data universe, as LiRA trains them (Carlini et al., S&P 2022,
reference ``tensorflow/privacy:research/mi_lira_2021/train.py``).

Every model trains on a random half of the universe (plus any appended attacker samples, which every model
sees). The keep-mask is drawn the reference's way: for each point an independent random ranking of the
models, IN for the first ``N // 2`` of them, so each point is IN for exactly half of the models (model sizes
vary around half the universe). Models are trained ``k_at_once`` at a time through
:func:`poisonlab.training.many.train_many` and each finished model is saved atomically as an artifact
(weights + its keep-mask row + the shadow-set hash), so a killed run resumes at the first missing model and
other attacks can reuse the models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.errors import CheckpointError, ConfigError, Interrupted
from poisonlab.io import load_artifact, save_artifact
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.many import HookFactory, Strategy, train_many
from poisonlab.utils.progress import progress_bar

MODEL_KIND = "shadow-model"


def keep_masks(n_models: int, n_points: int, generator: torch.Generator) -> torch.Tensor:
    """(n_models, n_points) bool: point j is IN model i. Each column has exactly ``n_models // 2`` Trues
    (the reference's ``argsort`` of uniform draws over the models, per point)."""
    if n_models < 2:
        raise ConfigError(f"mia.shadows: expected at least 2 models, got {n_models}")
    u = torch.rand((n_models, n_points), generator=generator, dtype=torch.float64)
    rank = u.argsort(0).argsort(0)
    return rank < n_models // 2


@dataclass(frozen=True)
class ShadowSpec:
    """Everything that determines the shadow models (its hash names their artifacts).

    Args:
        model: architecture.
        recipe: training recipe.
        keep: (N, n) keep-mask over the universe.
        seed: root seed; model i uses ``SeedTree(seed).child("shadow-<i>")``.
        tag: free text folded into the hash (e.g. the poison set's hash).
        defense: names the training hooks (folded into the hash when not empty, so an undefended set's
            models are never reused for a defended one).
        hooks: the training defense's hook factory (see :data:`poisonlab.training.many.HookFactory`).
    """

    model: ModelConfig
    recipe: TrainConfig
    keep: torch.Tensor
    seed: int
    tag: str = ""
    defense: str = ""
    hooks: HookFactory | None = None

    @property
    def n_models(self) -> int:
        return int(self.keep.shape[0])

    def model_seeds(self, i: int) -> SeedTree:
        return SeedTree(self.seed).child(f"shadow-{i}")

    def spec_hash(self, universe: Dataset, extra: PoisonedDataset | None) -> str:
        h = hashlib.sha256()
        payload = {"model": self.model.model_dump(), "recipe": self.recipe.model_dump(), "seed": self.seed}
        if self.hooks is not None and not self.defense:
            raise ConfigError("shadow models: training hooks need a defense name (it keys the saved models)")
        if self.defense:
            payload["defense"] = self.defense
        h.update(json.dumps({**payload, "tag": self.tag}, sort_keys=True).encode())
        h.update(self.keep.to(torch.uint8).numpy().tobytes())
        h.update(universe.ids.numpy().tobytes())
        if extra is not None:
            h.update(extra.extra_images.numpy().tobytes())
            h.update(extra.extra_labels.numpy().tobytes())
        return h.hexdigest()[:16]


def training_sets(universe: Dataset, keep: torch.Tensor, extra: PoisonedDataset | None = None) -> list[Dataset]:
    """Model i's training set: the universe points IN model i, then every appended attacker sample.

    ``extra`` is a :class:`PoisonedDataset` over ``universe`` holding only appended samples; the universe
    itself is never modified.
    """
    if keep.shape[1] != len(universe):
        raise ConfigError(f"keep: expected {len(universe)} columns (universe size), got {keep.shape[1]}")
    if extra is None:
        return [universe.subset(torch.nonzero(row).flatten()) for row in keep]
    if extra.base is not universe or len(extra.delta_ids) or len(extra.label_ids):
        raise ConfigError("poisons: expected appended samples over this universe only (no edits)")
    full = extra.materialize()
    appended = torch.arange(len(universe), len(full))
    return [full.subset(torch.cat([torch.nonzero(row).flatten(), appended])) for row in keep]


def train_shadows(
    universe: Dataset,
    spec: ShadowSpec,
    root: str | Path,
    extra: PoisonedDataset | None = None,
    k_at_once: int = 2,
    strategy: Strategy = "auto",
    device: torch.device | str = "cpu",
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> list[nn.Sequential]:
    """Train (or load) the N shadow models of ``spec``, ``k_at_once`` per :func:`train_many` call.

    Finished models live in ``root/model-<i>`` (artifact kind ``shadow-model``); existing ones written
    under the same spec hash are loaded, one under another hash raises CheckpointError (use a fresh root).
    ``should_stop`` is polled between groups: the finished models stay saved and Interrupted is raised.

    Returns:
        The N models in eval mode, ``Sequential(Normalize, net)`` with the universe's channel statistics.
    """
    root = Path(root)
    key = spec.spec_hash(universe, extra)
    sets = training_sets(universe, spec.keep, extra)
    mean, std = universe.channel_stats()
    models: list[nn.Sequential | None] = [
        load_shadow(root / f"model-{i:03d}", key, spec, universe, mean, std, device) for i in range(spec.n_models)
    ]
    todo = [i for i, m in enumerate(models) if m is None]
    k = max(1, k_at_once)
    with progress_bar(len(todo), "shadow models", enabled=progress) as bar:
        for start in range(0, len(todo), k):
            group = todo[start : start + k]
            nets = train_many(
                spec.model, universe.shape, universe.num_classes, mean, std, [sets[i] for i in group], spec.recipe,
                [spec.model_seeds(i) for i in group], device=device, strategy=strategy, hooks=spec.hooks,
            )  # fmt: skip
            for i, net in zip(group, nets):
                save_artifact(
                    root / f"model-{i:03d}",
                    MODEL_KIND,
                    {**{f"state.{k}": v for k, v in net.state_dict().items()}, "keep": spec.keep[i]},
                    {"spec_hash": key, "index": i, "n_models": spec.n_models, "train_size": len(sets[i])},
                )
                models[i] = net.eval()
            bar.update(len(group))
            if should_stop is not None and should_stop() and start + k < len(todo):
                raise Interrupted(f"stopped after {start + k} of {len(todo)} shadow models; rerun to resume")
    return [m for m in models if m is not None]


def load_shadow(
    path: Path,
    key: str,
    spec: ShadowSpec,
    universe: Dataset,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | str = "cpu",
) -> nn.Sequential | None:
    """The saved model at ``path`` (eval mode), or None if there is none; refuses another spec's model."""
    if not path.is_dir():
        return None
    tensors, meta = load_artifact(path, MODEL_KIND)
    if meta.get("spec_hash") != key:
        raise CheckpointError(f"{path}: written for shadow set {meta.get('spec_hash')}, this run is {key}")
    net = build_model(
        spec.model.name, universe.shape, universe.num_classes, torch.Generator().manual_seed(0),
        spec.model.width, spec.model.norm, mean, std, device,
    )  # fmt: skip
    net.load_state_dict({k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")})
    return net.eval()


def shadow_metadata(root: str | Path, n_models: int) -> list[dict[str, Any]]:
    """The manifests' metadata of the saved models (for reports)."""
    out = []
    for i in range(n_models):
        path = Path(root) / f"model-{i:03d}"
        if path.is_dir():
            out.append(load_artifact(path, MODEL_KIND)[1])
    return out
