"""Typed, frozen configuration of a federated experiment (sections ``fl``, ``attack``, ``aggregator``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from poisonlab.config import DataConfig, Frozen, ModelConfig, Ratio, RuntimeConfig, apply_overrides, build, load_yaml


class LocalConfig(Frozen):
    """Honest clients' local SGD (reference ``utils/params.yaml``)."""

    epochs: int = Field(2, ge=1, le=1000, description="local epochs (retrain_no_times)")
    batch_size: int = Field(64, ge=1)
    lr: Ratio = Field(0.05, gt=0, description="reference 0.1 (CIFAR ResNet); LeNet on mnist5k oscillates at 0.1")
    momentum: Ratio = Field(0.9, ge=0, lt=1)
    weight_decay: Ratio = Field(5e-4, ge=0)


class FLSection(Frozen):
    """The federation: clients, sampling, partition, rounds and the server's global learning rate."""

    clients: int = Field(100, ge=1, le=100_000, description="N, total participants")
    per_round: int = Field(10, ge=1, description="n, participants per round (expected n under Poisson sampling)")
    rounds: int = Field(20, ge=1, le=100_000, description="rounds of the experiment after pretraining")
    pretrain_rounds: int = Field(200, ge=0, le=100_000, description="clean FedAvg rounds before the experiment")
    eta: Ratio = Field(1.0, gt=0, description="global learning rate")
    algorithm: Literal["fedavg", "fedsgd"] = "fedavg"
    partition: Literal["dirichlet", "iid"] = "dirichlet"
    alpha: Ratio = Field(0.9, gt=0, description="Dirichlet concentration (reference 0.9)")
    sampling: Literal["fixed", "poisson"] = Field("fixed", description="n without replacement, or each w.p. n/N")
    engine: Literal["auto", "vmap", "sequential", "flower"] = Field(
        "auto",
        description="honest clients' local training: auto (sequential on CPU, see fl.local), vmap, sequential, flower",
    )
    local: LocalConfig = LocalConfig()

    @model_validator(mode="after")
    def _fits(self) -> FLSection:
        if self.per_round > self.clients:
            raise ValueError(f"per_round ({self.per_round}) exceeds clients ({self.clients})")
        return self


class AttackSection(Frozen):
    """The single compromised participant (client 0, never sampled in other rounds, as the reference)."""

    kind: Literal["none", "model-replacement", "constrain-and-scale"] = "none"
    task: Literal["pattern", "semantic"] = "pattern"
    round: int = Field(1, ge=1, description="experiment round (after pretraining) in which the attacker takes part")
    target_class: int = Field(2, ge=0, description="backdoor label (reference poison_label_swap 2)")
    semantic_source: int = Field(7, ge=0, description="class whose thick-stroke digits carry the semantic feature")
    semantic_fraction: Ratio = Field(0.2, gt=0, le=0.5)
    noise: Ratio = Field(0.01, ge=0, description="pixel noise on semantic backdoor images (noise_level)")
    samples: int = Field(1000, ge=1, description="clean training images the attacker holds (reference: a secret set)")
    gamma: Ratio | None = Field(None, gt=0, description="scale; None = n / eta")
    alpha: Ratio | None = Field(None, ge=0, le=1, description="class-loss weight; None = 1 (MR) or 0.7 (C&S)")
    norm_bound: Ratio | None = Field(None, gt=0, description="C&S bound S; None = the server's bound")
    epochs: int = Field(15, ge=1)
    lr: Ratio = Field(0.05, gt=0)
    per_batch: int = Field(20, ge=1, description="backdoor inputs per batch of 64")
    adaptive_lr: bool = True


class AggregatorSection(Frozen):
    """The server's aggregation rule and its parameters."""

    name: Literal["fedavg", "clip", "dp", "median", "trimmed-mean", "krum", "multi-krum", "norm-detector"] = "fedavg"
    norm_bound: Ratio | None = Field(
        None, gt=0, description="S; None = the largest benign norm in the last 10 pretraining rounds"
    )
    noise_multiplier: Ratio = Field(0.01, ge=0, description="DP-FedAvg z (noise std / S on the sum)")
    delta: Ratio = Field(1e-5, gt=0, lt=1, description="DP delta for the reported epsilon")
    trim: Ratio = Field(0.1, ge=0, lt=0.5)
    byzantine: int = Field(1, ge=0)
    select: int | None = Field(None, ge=1, description="multi-krum m; None = n - f")
    weighting: Literal["uniform", "examples"] = "uniform"


class FLExperimentConfig(Frozen):
    """A federated backdoor experiment."""

    seed: int = Field(0, ge=0, lt=2**63)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig(name="lenet", norm="none")
    fl: FLSection = FLSection()
    attack: AttackSection = AttackSection()
    aggregator: AggregatorSection = AggregatorSection()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _attack_fits(self) -> FLExperimentConfig:
        if self.attack.kind != "none" and self.attack.round > self.fl.rounds:
            raise ValueError(f"attack.round ({self.attack.round}) is after the last round ({self.fl.rounds})")
        f = self.aggregator.byzantine
        if self.aggregator.name in ("krum", "multi-krum") and self.fl.per_round <= 2 * f + 2:
            raise ValueError(f"aggregator.byzantine: Krum needs per_round > 2f + 2 = {2 * f + 2}")
        return self

    def config_hash(self) -> str:
        import hashlib
        import json

        payload = self.model_dump(mode="json")
        payload.pop("runtime")
        payload["fl"].pop("engine")  # vmap and sequential compute the same rounds
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def pretrain_hash(self) -> str:
        """Identifies the pretraining stage: data, model, federation and seed; not the attack or the defense."""
        import hashlib
        import json

        fl = self.fl.model_dump(mode="json")
        fl.pop("engine")
        fl.pop("rounds")
        payload = {
            "seed": self.seed,
            "data": self.data.model_dump(mode="json"),
            "model": self.model.model_dump(mode="json"),
            "fl": fl,
        }
        if self.attack.task == "semantic":  # the feature images are withheld from honest clients
            payload["withheld"] = [self.attack.semantic_source, self.attack.semantic_fraction]
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_fl_config(path: str | Path | None = None, overrides: list[str] | None = None) -> FLExperimentConfig:
    """FLExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    return build(FLExperimentConfig, apply_overrides(data, overrides or []))
