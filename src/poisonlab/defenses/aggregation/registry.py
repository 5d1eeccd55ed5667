"""AGGREGATORS: name -> factory ``(settings) -> Aggregator``; the server's aggregation rules by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from poisonlab.defenses.aggregation.base import Aggregator
from poisonlab.defenses.aggregation.detector import NormDetector
from poisonlab.defenses.aggregation.krum import Krum
from poisonlab.defenses.aggregation.mean import DPFedAvg, FedAvg, NormClipping
from poisonlab.defenses.aggregation.robust import CoordinateMedian, TrimmedMean
from poisonlab.errors import ConfigError
from poisonlab.registry import Registry


@dataclass(frozen=True)
class AggregatorSettings:
    """Everything a rule may need; each factory reads its own fields.

    Args:
        per_round: n, participants per round (the DP denominator under fixed-size sampling).
        norm_bound: S for clip, dp and norm-detector.
        noise_multiplier: z for dp.
        sample_rate: q under Poisson client sampling (dp accounting), else None.
        clients: N (the DP denominator q N under Poisson sampling).
        trim: beta for trimmed-mean.
        byzantine: f for krum / multi-krum.
        select: m for multi-krum (None = n - f).
        weighting: "uniform" or "examples" for the averaging rules.
    """

    per_round: int
    norm_bound: float | None = None
    noise_multiplier: float = 0.01
    sample_rate: float | None = None
    clients: int | None = None
    trim: float = 0.1
    byzantine: int = 1
    select: int | None = None
    weighting: str = "uniform"


AGGREGATORS: Registry[Callable[[AggregatorSettings], Aggregator]] = Registry("aggregator")
NEEDS_BOUND = ("clip", "dp", "norm-detector")


@AGGREGATORS.register("fedavg")
def _fedavg(s: AggregatorSettings) -> Aggregator:
    return FedAvg(s.weighting)  # type: ignore[arg-type]


@AGGREGATORS.register("clip")
def _clip(s: AggregatorSettings) -> Aggregator:
    return NormClipping(_bound(s), s.weighting)  # type: ignore[arg-type]


@AGGREGATORS.register("dp")
def _dp(s: AggregatorSettings) -> Aggregator:
    if s.sample_rate is not None:
        if s.clients is None:
            raise ConfigError("fl.clients: DP-FedAvg with Poisson sampling needs the number of clients")
        return DPFedAvg(_bound(s), s.noise_multiplier, s.sample_rate * s.clients, s.sample_rate)
    return DPFedAvg(_bound(s), s.noise_multiplier, s.per_round, None)


@AGGREGATORS.register("median")
def _median(s: AggregatorSettings) -> Aggregator:
    return CoordinateMedian()


@AGGREGATORS.register("trimmed-mean")
def _trimmed(s: AggregatorSettings) -> Aggregator:
    return TrimmedMean(s.trim)


@AGGREGATORS.register("krum")
def _krum(s: AggregatorSettings) -> Aggregator:
    return Krum(s.byzantine, 1)


@AGGREGATORS.register("multi-krum")
def _multi_krum(s: AggregatorSettings) -> Aggregator:
    return Krum(s.byzantine, s.select)


@AGGREGATORS.register("norm-detector")
def _detector(s: AggregatorSettings) -> Aggregator:
    return NormDetector(_bound(s))


def _bound(s: AggregatorSettings) -> float:
    if s.norm_bound is None:
        raise ConfigError("aggregator.norm_bound: this rule needs a norm bound S")
    return s.norm_bound


def build_aggregator(name: str, settings: AggregatorSettings) -> Aggregator:
    """The registered rule ``name`` built from ``settings``; an unknown name raises ConfigError listing the rules."""
    return AGGREGATORS.get(name, "aggregator.name")(settings)
