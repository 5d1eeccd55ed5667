"""The federated backdoor experiment: ``fl_experiment(config, workdir)`` pretrains, attacks, defends, measures.

1. Partition the training split among N clients (Dirichlet or IID) and pretrain the global model with clean
   FedAvg for ``fl.pretrain_rounds`` rounds (cached per :meth:`FLExperimentConfig.pretrain_hash`, so every
   attack/defense arm in one workdir starts from the same converged model, as in the paper).
2. Run ``fl.rounds`` rounds with the configured aggregator; in round ``attack.round`` the compromised client 0
   (never sampled otherwise, as the reference) submits its model-replacement update.
3. After every round record main-task accuracy and backdoor accuracy (Wilson intervals) in the result store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from poisonlab.attacks.federated.backdoor_tasks import FLBackdoorTask, PatternTask, SemanticFeatureTask
from poisonlab.attacks.federated.model_replacement import AttackerRecipe, ModelReplacement
from poisonlab.data.dataset import Splits
from poisonlab.data.registry import load_dataset
from poisonlab.defenses.aggregation.base import Aggregator
from poisonlab.defenses.aggregation.mean import DPFedAvg, FedAvg
from poisonlab.defenses.aggregation.registry import NEEDS_BOUND, AggregatorSettings, build_aggregator
from poisonlab.errors import ConfigError
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.store import ResultStore
from poisonlab.fl.config import FLExperimentConfig
from poisonlab.fl.engine import Federation, RoundEngine
from poisonlab.fl.local import LocalRecipe, LocalTrainer
from poisonlab.fl.params import ParamLayout
from poisonlab.fl.partition import dirichlet_partition, iid_partition
from poisonlab.fl.report import write_fl_report
from poisonlab.io.artifact import load_artifact, save_artifact
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.metrics.backdoor import predict
from poisonlab.metrics.intervals import Proportion
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree

STORE = "results.sqlite"
ATTACKER_ID = 0
BOUND_WINDOW = 10
"""Pretraining rounds whose benign update norms set the default server bound S (their maximum)."""


class FLSetup:
    """Everything both engines share: data, task, shards, model, layout and the evaluation."""

    def __init__(self, config: FLExperimentConfig, splits: Splits | None = None) -> None:
        self.config = config
        self.splits = splits if splits is not None else load_dataset(config.data.name, config.data.root)
        train, test = self.splits.train, self.splits.test
        seeds = SeedTree(config.seed)
        self.seeds = seeds
        self.task = build_task(config, self.splits)
        withheld = self.task.withheld(train)
        pool = torch.ones(len(train), dtype=torch.bool)
        pool[withheld] = False
        rows = pool.nonzero().flatten()
        fl = config.fl
        g = seeds.child("fl").generator("partition")
        if fl.partition == "iid":
            parts = iid_partition(len(rows), fl.clients, g)
        else:
            parts = dirichlet_partition(train.labels[rows], fl.clients, fl.alpha, g)
        self.shards = tuple(rows[p] for p in parts)
        if isinstance(self.task, SemanticFeatureTask):
            self.task.set_bank(train.images[withheld])
        mean, std = train.channel_stats()
        m = config.model
        self.model = build_model(
            m.name, train.shape, train.num_classes, seeds.generator("init"), m.width, m.norm, mean, std
        )
        self.layout = ParamLayout.of(self.model)
        self.initial = self.layout.flatten(self.model)
        self.recipe = (
            LocalRecipe.fedsgd(fl.local.lr)
            if fl.algorithm == "fedsgd"
            else LocalRecipe(
                fl.local.epochs, fl.local.batch_size, fl.local.lr, fl.local.momentum, fl.local.weight_decay
            )
        )
        attacker_pick = torch.randperm(len(rows), generator=seeds.child("attack").generator("data"))
        self.attacker_rows = rows[attacker_pick[: min(config.attack.samples, len(rows))]].sort().values
        self.backdoor_x, self.backdoor_y = self.task.test_inputs(test)
        excluded = (ATTACKER_ID,) if fl.clients > 1 else ()
        self.federation = Federation(self.shards, fl.per_round, fl.eta, fl.sampling, excluded)

    def local_trainer(self, strategy: str | None = None) -> LocalTrainer:
        train = self.splits.train
        engine = strategy or self.config.fl.engine
        if engine in ("auto", "flower"):  # measured: vmap's grouped convolutions are slower on CPU (RESULTS.md)
            engine = "sequential"
        return LocalTrainer(self.model, self.layout, train.images, train.labels, self.recipe, engine)  # type: ignore[arg-type]

    def hyperparameters(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "algorithm": self.config.fl.algorithm,
            "local_epochs": r.epochs,
            "local_lr": r.lr,
            "batch_size": r.batch_size,
        }

    def evaluate(self, global_vec: torch.Tensor) -> dict[str, Any]:
        """Main-task accuracy on the test split and backdoor accuracy on the task's test inputs."""
        model = self.layout.load_into(self.model, global_vec)
        test = self.splits.test
        main = Proportion(int((predict(model, test.images) == test.labels).sum()), len(test))
        hits = Proportion(int((predict(model, self.backdoor_x) == self.backdoor_y).sum()), len(self.backdoor_y))
        return {"main_accuracy": main.as_dict(), "backdoor_accuracy": hits.as_dict()}

    def attacker(self, norm_bound: float | None) -> ModelReplacement:
        a = self.config.attack
        train = self.splits.train
        recipe = AttackerRecipe(epochs=a.epochs, lr=a.lr, per_batch=a.per_batch, adaptive_lr=a.adaptive_lr)
        cs = a.kind == "constrain-and-scale"
        alpha = a.alpha if a.alpha is not None else (0.7 if cs else 1.0)
        bound = (a.norm_bound if a.norm_bound is not None else norm_bound) if cs else a.norm_bound
        if cs and bound is None:
            raise ConfigError("attack.norm_bound: constrain-and-scale needs the server's norm bound S")
        x, y = train.images[self.attacker_rows], train.labels[self.attacker_rows]
        return ModelReplacement(self.task, self.model, self.layout, x, y, recipe, ATTACKER_ID, a.gamma, alpha, bound)


def build_task(config: FLExperimentConfig, splits: Splits) -> FLBackdoorTask:
    a, classes = config.attack, splits.train.num_classes
    for field, value in (("target_class", a.target_class), ("semantic_source", a.semantic_source)):
        if value >= classes:
            raise ConfigError(f"attack.{field}: expected 0..{classes - 1}, got {value}")
    if a.task == "semantic":
        return SemanticFeatureTask(a.semantic_source, a.target_class, a.semantic_fraction, a.noise)
    return PatternTask(splits.train.shape, a.target_class)


def pretrain(
    setup: FLSetup, workdir: Path, progress: bool = False, should_stop: Callable[[], bool] | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The clean-FedAvg pretrained global model (cached in ``workdir/pretrain/<hash>``) and its record."""
    config = setup.config
    phash = config.pretrain_hash()
    folder = workdir / "pretrain" / phash
    if (folder / "model").is_dir():
        tensors, meta = load_artifact(folder / "model", "fl-global")
        return tensors["global"], meta
    rounds = config.fl.pretrain_rounds
    if rounds == 0:
        return setup.initial.clone(), {"rounds": 0, "last_norms": [], **setup.evaluate(setup.initial)}
    engine = RoundEngine(
        setup.local_trainer(),
        setup.federation,
        FedAvg(),
        setup.seeds.child("fl").child("pretrain"),
        checkpointer=Checkpointer(folder / "checkpoints", phash, keep=2),
        should_stop=should_stop,
        progress=progress,
        hyperparameters=setup.hyperparameters(),
    )
    final, history = engine.run(setup.initial.clone(), rounds)
    recent = [n for h in history[-BOUND_WINDOW:] for n in h["aggregator"].get("norms", [])]
    meta = {"rounds": rounds, "pretrain_hash": phash, "last_norms": recent}
    meta.update(setup.evaluate(final))
    meta["seconds"] = sum(h["train_seconds"] + h["aggregate_seconds"] for h in history)
    save_artifact(folder / "model", "fl-global", {"global": final}, meta)
    return final, meta


def server_bound(config: FLExperimentConfig, pre: dict[str, Any]) -> float | None:
    """S: the configured bound, else the largest benign update norm in the last pretraining rounds."""
    if config.aggregator.norm_bound is not None:
        return float(config.aggregator.norm_bound)
    norms = pre.get("last_norms") or []
    return float(max(norms)) if norms else None


def make_aggregator(config: FLExperimentConfig, bound: float | None) -> Aggregator:
    ag, fl = config.aggregator, config.fl
    if ag.name in NEEDS_BOUND and bound is None:
        raise ConfigError(f"aggregator.norm_bound: {ag.name} needs S (give it, or pretrain at least one round)")
    poisson = fl.sampling == "poisson"
    settings = AggregatorSettings(
        per_round=fl.per_round,
        norm_bound=bound,
        noise_multiplier=ag.noise_multiplier,
        sample_rate=fl.per_round / fl.clients if poisson else None,
        clients=fl.clients,
        trim=ag.trim,
        byzantine=ag.byzantine,
        select=ag.select,
        weighting=ag.weighting,
    )
    return build_aggregator(ag.name, settings)


def fl_experiment(
    config: FLExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    store: str | Path | None = None,
) -> dict[str, Any]:
    """Run the configured federated experiment; returns the result (also written to ``workdir/report``)."""
    workdir = Path(workdir)
    resolve_device(config.runtime)  # CPU engine; refuse an impossible device request early
    if config.fl.engine == "flower":
        from poisonlab.fl.flower.simulation import flower_experiment

        return flower_experiment(config, workdir, progress=progress, store=store)
    setup = FLSetup(config)
    chash = config.config_hash()
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    global0, pre = pretrain(setup, workdir, progress, should_stop)
    bound = server_bound(config, pre)
    aggregator = make_aggregator(config, bound)
    attackers = {}
    if config.attack.kind != "none":
        attackers = {config.attack.round: [setup.attacker(bound)]}
    engine = RoundEngine(
        setup.local_trainer(),
        setup.federation,
        aggregator,
        setup.seeds.child("fl").child("run"),
        evaluate=setup.evaluate,
        attackers=attackers,
        checkpointer=Checkpointer(workdir / "checkpoints" / chash, chash, keep=2),
        should_stop=should_stop,
        progress=progress,
        hyperparameters=setup.hyperparameters(),
    )
    final, history = engine.run(global0.clone(), config.fl.rounds)
    return finish(config, workdir, setup, pre, bound, aggregator, history, store, engine_name=config.fl.engine)


def finish(
    config: FLExperimentConfig,
    workdir: Path,
    setup: FLSetup,
    pre: dict[str, Any],
    bound: float | None,
    aggregator: Aggregator,
    history: list[dict[str, Any]],
    store: str | Path | None,
    engine_name: str,
) -> dict[str, Any]:
    """Store per-round rows and the summary, write JSON + plot + HTML; returns the result."""
    chash = config.config_hash()
    results = ResultStore(store if store is not None else workdir / STORE)
    for h in history:
        metrics = {k: h[k] for k in ("main_accuracy", "backdoor_accuracy")}
        results.add("fl-round", chash, f"round={h['round']}", config.seed, metrics, {"participants": h["participants"]})
    summary = summarize(config, pre, history, bound, aggregator)
    row = {
        "experiment": "fl",
        "config_hash": chash,
        "pretrain_hash": config.pretrain_hash(),
        "config": config.model_dump(mode="json"),
        "engine": engine_name,
        "summary": summary,
        "pretrain": {k: v for k, v in pre.items() if k != "last_norms"},
        "history": history,
        "environment": environment(torch.device("cpu")),
    }
    results.add("fl", chash, f"seed={config.seed}", config.seed, summary, {"engine": engine_name})
    row["report"] = str(write_fl_report(workdir / "report", row))
    return row


def summarize(
    config: FLExperimentConfig,
    pre: dict[str, Any],
    history: list[dict[str, Any]],
    bound: float | None,
    aggregator: Aggregator,
) -> dict[str, Any]:
    """Accuracy before and right after the attack round, backdoor accuracy then and at the end, detection."""
    a = config.attack.round
    by_round = {h["round"]: h for h in history}
    before = by_round[a - 1] if a > 1 else pre
    after = by_round.get(a, history[-1])
    last = history[-1]
    out: dict[str, Any] = {
        "norm_bound": bound,
        "pretrain_main_accuracy": pre["main_accuracy"]["rate"],
        "main_before": before["main_accuracy"]["rate"],
        "main_after": after["main_accuracy"],
        "main_drop": before["main_accuracy"]["rate"] - after["main_accuracy"]["rate"],
        "backdoor_before": before["backdoor_accuracy"]["rate"],
        "backdoor_after": after["backdoor_accuracy"],
        "backdoor_final": last["backdoor_accuracy"],
        "main_final": last["main_accuracy"],
        "rounds": len(history),
    }
    if config.attack.kind != "none" and a in by_round:
        info = by_round[a]["aggregator"]
        out["attacker_accepted"] = ATTACKER_ID in by_round[a]["accepted"]
        out["attacker_flagged"] = ATTACKER_ID in info.get("flagged", [])
        out["attacker_clipped"] = ATTACKER_ID in info.get("clipped", [])
        out["attack_info"] = by_round[a].get("attack_info", {}).get(str(ATTACKER_ID), {})
    flagged_honest = sum(len([c for c in h["aggregator"].get("flagged", []) if c != ATTACKER_ID]) for h in history)
    out["honest_flagged"] = flagged_honest
    if isinstance(aggregator, DPFedAvg):
        out["dp_epsilon"] = aggregator.epsilon(config.aggregator.delta)
        out["dp_delta"] = config.aggregator.delta
    return out


def result_json(row: dict[str, Any]) -> str:
    return json.dumps(row, indent=1)
