"""Find and load the model a ``poisonlab diagnose --checkpoint`` argument points at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from poisonlab.config import ExperimentConfig, build, load_yaml
from poisonlab.data.dataset import Splits
from poisonlab.errors import CheckpointError, ConfigError
from poisonlab.experiments.train import build_for
from poisonlab.io.artifact import MANIFEST, load_artifact
from poisonlab.rng import SeedTree


@dataclass(frozen=True)
class LoadedModel:
    """A model with the config and seed it was built from and a short description of where it came from."""

    model: nn.Module
    config: ExperimentConfig
    seed: int
    source: str


def resolve_artifact(path: str | Path) -> tuple[Path, str]:
    """The model artifact directory for ``path`` and a note on how it was chosen.

    Accepts an artifact directory (``manifest.json`` of kind "model"), a ``poisonlab train`` workdir (``model/``),
    or a workdir holding several models (``victims/`` of the backdoor experiment, ``models/`` of a diagnostics
    study): then the first one in name order is taken and the note says so.
    """
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p, str(p)
    if (p / "model" / MANIFEST).is_file():
        return p / "model", str(p / "model")
    for sub in ("victims", "models"):
        found = sorted(d for d in (p / sub).glob("*") if (d / MANIFEST).is_file()) if (p / sub).is_dir() else []
        if found:
            note = f"{found[0]} (first of {len(found)} in {p / sub})" if len(found) > 1 else str(found[0])
            return found[0], note
    raise CheckpointError(f"{p}: not a model artifact or a workdir with model/, victims/ or models/")


def _config_for(artifact: Path, meta: dict[str, Any]) -> ExperimentConfig:
    """The training config: the manifest's, else the nearest ``config.yaml`` above the artifact (its extra
    sections, such as ``backdoor``, are ignored)."""
    if isinstance(meta.get("config"), dict):
        data = meta["config"]
    else:
        for d in list(artifact.parents)[:3]:
            if (d / "config.yaml").is_file():
                data = load_yaml(d / "config.yaml")
                break
        else:
            raise CheckpointError(f"{artifact}: the manifest has no config and no config.yaml was found above it")
    keep = {k: v for k, v in data.items() if k in ExperimentConfig.model_fields}
    try:
        return build(ExperimentConfig, keep)
    except ConfigError as err:
        raise CheckpointError(f"{artifact}: its config does not load ({err})") from None


def load_model(path: str | Path, splits: Splits | None = None, device: torch.device | None = None) -> LoadedModel:
    """Load the model ``path`` points at (see :func:`resolve_artifact`) on ``device`` (default CPU)."""
    from poisonlab.data.registry import load_dataset

    artifact, note = resolve_artifact(path)
    tensors, meta = load_artifact(artifact, "model")
    config = _config_for(artifact, meta)
    seed = int(meta.get("seed", config.seed))
    splits = splits or load_dataset(config.data.name, config.data.root)
    model = build_for(config, splits, SeedTree(seed), device or torch.device("cpu"))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{artifact}: weights do not fit the model ({str(err).splitlines()[0]})") from None
    return LoadedModel(model.eval(), config, seed, note)


def initialisation_of(loaded: LoadedModel, splits: Splits, device: torch.device | None = None) -> LoadedModel:
    """The same architecture at its initialisation: rebuilt from the recorded config and seed (the "init"
    generator of the seed tree is the only randomness in model construction, so this is bit-exact)."""
    model = build_for(loaded.config, splits, SeedTree(loaded.seed), device or torch.device("cpu"))
    return LoadedModel(
        model.eval(), loaded.config, loaded.seed, f"initialisation of {loaded.source} (seed {loaded.seed})"
    )
