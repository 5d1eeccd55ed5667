"""Averaging rules: FedAvg, FedAvg with norm clipping, and DP-FedAvg (clipping + Gaussian noise)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from poisonlab.defenses.aggregation.base import Aggregate, Aggregator, check_bound, clip_to_norm, norms, stack
from poisonlab.defenses.dp.ledger import PrivacyLedger
from poisonlab.errors import ConfigError
from poisonlab.fl.messages import ClientUpdate


def weighted_mean(deltas: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of the rows; with ``weights`` the weighted mean (weights summing to zero give a zero update)."""
    if weights is None:
        return deltas.sum(0) / deltas.shape[0]
    w = weights.to(deltas.dtype)
    total = w.sum()
    if total == 0:
        return torch.zeros_like(deltas[0])
    return (w[:, None] * deltas).sum(0) / total


class FedAvg(Aggregator):
    """Federated averaging (McMahan et al., AISTATS 2017): ``(1/n) sum_i delta_i``.

    The server then applies ``G += eta * mean``, i.e. ``G + (eta/n) sum_i (L_i - G)`` as in Bagdasaryan et al.

    Args:
        weighting: "uniform" (the backdoor paper's formula) or "examples" (weights n_k / sum n_k, McMahan's).
    """

    name = "fedavg"

    def __init__(self, weighting: Literal["uniform", "examples"] = "uniform") -> None:
        if weighting not in ("uniform", "examples"):
            raise ConfigError(f"aggregator.weighting: expected uniform or examples, got {weighting!r}")
        self.weighting = weighting

    def _weights(self, updates: Sequence[ClientUpdate]) -> torch.Tensor | None:
        if self.weighting == "uniform":
            return None
        return torch.tensor([float(u.num_examples) for u in updates])

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        return Aggregate(weighted_mean(deltas, self._weights(updates)), ids, {"norms": norms(deltas).tolist()})


class NormClipping(FedAvg):
    """Norm clipping (Sun et al., "Can You Really Backdoor Federated Learning?", 2019): every update is scaled to
    L2 norm at most ``bound`` before averaging. The norm bound Bagdasaryan et al. consider as a defense.

    Args:
        bound: the norm bound M (S in the backdoor paper).
        weighting: as :class:`FedAvg`.
    """

    name = "clip"

    def __init__(self, bound: float, weighting: Literal["uniform", "examples"] = "uniform") -> None:
        super().__init__(weighting)
        self.bound = check_bound(bound, "aggregator.norm_bound")

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        before = norms(deltas)
        clipped = clip_to_norm(deltas, self.bound)
        info = {"norms": before.tolist(), "clipped": [i for i, n in zip(ids, before) if n > self.bound]}
        return Aggregate(weighted_mean(clipped, self._weights(updates)), ids, info)


class DPFedAvg(Aggregator):
    """DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018, "Learning Differentially Private Recurrent Language
    Models"): clip each update to ``bound`` S, sum, add N(0, (z S)^2 I), divide by the expected number of
    participants q N (the fixed-denominator estimator) or, under fixed-size sampling, by n.

    User-level privacy accounting: with Poisson client sampling at rate q each round is one Poisson-sampled
    Gaussian mechanism with noise multiplier z, recorded in a :class:`PrivacyLedger` (RDP accountant). Under
    fixed-size sampling no epsilon is reported, since a Poisson accountant does not apply to it.

    Args:
        bound: per-update clipping norm S.
        noise_multiplier: z, noise std / S on the sum.
        expected_participants: q N (the denominator).
        sample_rate: q when clients are Poisson-sampled (enables accounting); None under fixed-size sampling.
    """

    name = "dp"

    def __init__(
        self, bound: float, noise_multiplier: float, expected_participants: float, sample_rate: float | None = None
    ) -> None:
        self.bound = check_bound(bound, "aggregator.norm_bound")
        if not noise_multiplier >= 0:
            raise ConfigError(f"aggregator.noise_multiplier: expected >= 0, got {noise_multiplier}")
        if not expected_participants > 0:
            raise ConfigError(f"fl.per_round: expected a positive number of participants, got {expected_participants}")
        self.noise_multiplier = float(noise_multiplier)
        self.denominator = float(expected_participants)
        self.sample_rate = sample_rate
        self.ledger = PrivacyLedger("rdp") if (sample_rate is not None and noise_multiplier > 0) else None

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        before = norms(deltas)
        total = clip_to_norm(deltas, self.bound).sum(0)
        std = self.noise_multiplier * self.bound
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype, device=total.device) * std
        if self.ledger is not None:
            self.ledger.step(self.sample_rate, self.noise_multiplier)  # type: ignore[arg-type]
        info = {"norms": before.tolist(), "noise_std_sum": std}
        return Aggregate((total + noise) / self.denominator, ids, info)

    def epsilon(self, delta: float) -> float | None:
        """User-level epsilon so far (None without Poisson sampling or noise)."""
        return None if self.ledger is None else self.ledger.epsilon(delta)

    def state_dict(self) -> dict[str, Any]:
        return {"ledger": None if self.ledger is None else self.ledger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ledger is not None and state.get("ledger") is not None:
            self.ledger.load_state_dict(state["ledger"])
