"""Canary-exposure trials, clean versus Truth-Serum-poisoned, paired on the same secret, corpus and seeds.

Trial t (root seed ``config.seed + t``) draws a random secret, inserts the canary line ``canary_repeats``
times at random line boundaries of the training text and trains a fresh character LM per arm: "clean"
(canaries only) and "poisoned" (canaries plus ``replicas`` poison lines), with the same initialisation and
data-order seeds. Each arm ranks the true secret among all candidates by log-likelihood (and, with
reference models trained on the arm's text without the canary, by the likelihood ratio) and reports
exposure, extraction (rank 1) and validation loss. LM training checkpoints every epoch under
``workdir/trial-<t>/<arm>/``, so a killed run resumes; finished trials are rows of ``workdir/results.sqlite``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from poisonlab.attacks.inference.attribute_experiment import merge_sections
from poisonlab.attacks.inference.canary import (
    CanaryConfig,
    SecretFormat,
    canary_lines,
    candidate_log_likelihoods,
    draw_secret,
)
from poisonlab.config import Frozen, RuntimeConfig, apply_overrides, build, load_yaml
from poisonlab.data.text import insert_lines, join_lines, load_pydoc_topics
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.metrics.exposure import exposure_of
from poisonlab.models.charlm import build_charlm
from poisonlab.rng import SeedTree
from poisonlab.training.lm import LMTrainConfig, LMTrainer, lm_loss

KIND = "canary-exposure"


class CharLMConfig(Frozen):
    embed: int = Field(32, ge=1, le=4096)
    hidden: int = Field(128, ge=1, le=4096)
    layers: int = Field(1, ge=1, le=8)


class CanaryExperimentConfig(Frozen):
    """A canary-exposure experiment on the embedded help-topics corpus."""

    seed: int = Field(0, ge=0, lt=2**63)
    trials: int = Field(3, ge=1, le=1000, description="independent trials (root seeds seed .. seed+trials-1)")
    max_train_chars: int | None = Field(20_000, ge=1000, description="training text: the first N characters")
    model: CharLMConfig = CharLMConfig()
    train: LMTrainConfig = LMTrainConfig(epochs=30, seq_len=128, batch_size=16, lr=5e-3)
    canary: CanaryConfig = CanaryConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def config_hash(self) -> str:
        """Hash of what changes a trial's result: not ``runtime``, nor ``trials`` (more trials extend a run)."""
        payload = self.model_dump(mode="json")
        payload.pop("runtime"), payload.pop("trials")
        return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def load_canary_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CanaryExperimentConfig:
    """CanaryExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data = merge_sections(CanaryExperimentConfig().model_dump(mode="json"), load_yaml(path) if path else {})
    config = build(CanaryExperimentConfig, apply_overrides(data, overrides or []))
    vocab = load_pydoc_topics().vocab
    c = config.canary
    vocab.encode(c.prefix, "canary.prefix")
    vocab.encode(c.separator + c.pad_char, "canary.separator/pad_char")
    return config


def _train_lm(
    config: CanaryExperimentConfig,
    lines: tuple[str, ...],
    seeds: SeedTree,
    folder: Path | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    vocab = load_pydoc_topics().vocab
    m = config.model
    model = build_charlm(len(vocab), seeds.generator("init"), m.embed, m.hidden, m.layers)
    ckpt = Checkpointer(folder, config.config_hash(), keep=1) if folder is not None else None
    tokens = vocab.encode(join_lines(lines))
    history = LMTrainer(model, tokens, config.train, seeds, checkpointer=ckpt, should_stop=should_stop).fit()
    return model.eval(), history


def canary_trial(
    config: CanaryExperimentConfig,
    seed: int,
    arms: dict[str, int],
    folder: Path | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One trial: ``arms`` maps an arm name to its number of poison lines (0 = clean); per-arm results."""
    c = config.canary
    corpus = load_pydoc_topics()
    base = corpus.train_text(config.max_train_chars)
    valid = corpus.vocab.encode(join_lines(corpus.valid_lines))
    fmt = SecretFormat(c.digits, c.separator)
    tree = SeedTree(seed)
    secret = draw_secret(fmt, tree.generator("secret"))
    out: dict[str, Any] = {"seed": seed, "secret_index": secret, "space": fmt.space_size}
    for arm, replicas in arms.items():
        t0 = time.perf_counter()
        canaries, poisons = canary_lines(c.model_copy(update={"replicas": replicas}), secret, tree.generator("poison"))
        victim_text = insert_lines(base, canaries + poisons, tree.generator("insert"))
        where = None if folder is None else folder / arm
        victim, history = _train_lm(config, victim_text, tree.child("victim"), where and where / "victim", should_stop)
        ll = candidate_log_likelihoods(victim, corpus.vocab, c.prefix, fmt)
        res: dict[str, Any] = {
            "replicas": replicas,
            "final_train_loss": history[-1]["loss"],
            "valid_loss": lm_loss(victim, valid),
            "likelihood": exposure_of(ll, secret),
        }
        if c.reference_models:
            ref_text = insert_lines(base, poisons, tree.generator("insert"))  # the attacker's text: no canary
            refs = [
                _train_lm(config, ref_text, tree.child(f"reference/{k}"), where and where / f"ref-{k}", should_stop)[0]
                for k in range(c.reference_models)
            ]
            ref_ll = torch.stack([candidate_log_likelihoods(r, corpus.vocab, c.prefix, fmt) for r in refs]).mean(0)
            res["calibrated"] = exposure_of(ll - ref_ll, secret)
        res["seconds"] = time.perf_counter() - t0
        out[arm] = res
    return out


def dryrun_config(config: CanaryExperimentConfig) -> CanaryExperimentConfig:
    """A seconds-long smoke version: 1 trial, 3-digit secrets, 2 epochs of a narrow LM on 5,000 characters."""
    return config.model_copy(
        update={
            "trials": 1,
            "max_train_chars": 5000,
            "model": config.model.model_copy(update={"hidden": 16, "embed": 8}),
            "train": config.train.model_copy(update={"epochs": 2}),
            "canary": config.canary.model_copy(update={"digits": 3, "replicas": min(config.canary.replicas, 4)}),
        }
    )


def run_canary_experiment(
    config: CanaryExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``config.trials`` trials of the clean and poisoned arms; write results and the report."""
    from poisonlab.attacks.inference.privacy_report import (
        CANARY_HEADER,
        canary_plot,
        canary_rows,
        html_table,
        summarize_canary,
        write_report,
    )
    from poisonlab.experiments.store import run_stored_trials

    workdir = Path(workdir)
    chash = config.config_hash()
    arms = {"clean": 0, "poisoned": config.canary.replicas}
    rows = run_stored_trials(
        workdir / "results.sqlite",
        KIND,
        chash,
        [config.seed + t for t in range(config.trials)],
        lambda t: canary_trial(config, config.seed + t, arms, workdir / f"trial-{t:03d}", should_stop),
        lambda row: {f"{arm}_exposure": row[arm]["likelihood"]["exposure"] for arm in arms},
        progress,
    )
    summary = summarize_canary(rows)
    result = {"config_hash": chash, "config": config.model_dump(mode="json"), "summary": summary, "trials": rows}
    c = config.canary
    title = f"Canary exposure: '{c.prefix}' + {c.digits} digits, {c.canary_repeats} copies"
    result["report"] = str(
        write_report(
            workdir, title, result, canary_plot(rows, summary), html_table(canary_rows(summary), CANARY_HEADER)
        )
    )
    return result
