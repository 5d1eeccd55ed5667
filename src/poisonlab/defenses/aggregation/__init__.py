"""Server-side aggregation rules for federated learning, by name in AGGREGATORS: FedAvg, norm clipping,
DP-FedAvg, coordinate-wise median, trimmed mean, Krum / Multi-Krum and a distance-based anomaly detector."""

from poisonlab.defenses.aggregation.base import Aggregate, Aggregator, clip_to_norm
from poisonlab.defenses.aggregation.detector import NormDetector
from poisonlab.defenses.aggregation.krum import Krum, krum_scores
from poisonlab.defenses.aggregation.mean import DPFedAvg, FedAvg, NormClipping
from poisonlab.defenses.aggregation.registry import AGGREGATORS, AggregatorSettings, build_aggregator
from poisonlab.defenses.aggregation.robust import CoordinateMedian, TrimmedMean, coordinate_median, trimmed_mean

__all__ = [
    "AGGREGATORS",
    "Aggregate",
    "Aggregator",
    "AggregatorSettings",
    "CoordinateMedian",
    "DPFedAvg",
    "FedAvg",
    "Krum",
    "NormClipping",
    "NormDetector",
    "TrimmedMean",
    "build_aggregator",
    "clip_to_norm",
    "coordinate_median",
    "krum_scores",
    "trimmed_mean",
]
