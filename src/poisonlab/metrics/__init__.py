"""Metrics: one audited module per family (confidence intervals, backdoor success, ...)."""

from poisonlab.metrics.intervals import Proportion, t_interval, wilson_interval

__all__ = ["Proportion", "t_interval", "wilson_interval"]
