"""Experiments: pure ``run(config, workdir)`` functions that the CLI and the tests both call."""

from poisonlab.experiments.train import evaluate_workdir, train_experiment

__all__ = ["evaluate_workdir", "train_experiment"]
