"""Split a training set among federated clients: IID or label-skewed Dirichlet(alpha), from an explicit generator."""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError


def iid_partition(n: int, clients: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle the ``n`` positions and deal them into ``clients`` near-equal shards (sizes differ by <= 1).

    Returns:
        One sorted LongTensor of positions per client.
    """
    _check(n, clients)
    perm = torch.randperm(n, generator=generator)
    return [s.sort().values for s in torch.tensor_split(perm, clients)]


def dirichlet_partition(
    labels: torch.Tensor, clients: int, alpha: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Label-skewed non-IID split as the reference (backdoor_federated_learning ``sample_dirichlet_train_data``).

    For each class c in order: shuffle its positions, draw proportions p ~ Dir(alpha * 1_clients) and give client
    u the next ``round(|class_0| * p_u)`` positions of that class (fewer when the class runs out). The reference
    scales every class by the size of class 0, so a few samples of larger classes may stay unassigned.

    Args:
        labels: (n,) int labels.
        clients: number of clients.
        alpha: Dirichlet concentration (reference default 0.9); small alpha = strong skew.
        generator: the only source of randomness (gamma draws via ``torch._standard_gamma``).

    Returns:
        One sorted LongTensor of positions per client (some may be empty).
    """
    _check(len(labels), clients)
    if not alpha > 0:
        raise ConfigError(f"fl.alpha: expected a positive Dirichlet concentration, got {alpha}")
    labels = labels.cpu()
    classes = int(labels.max()) + 1 if len(labels) else 0
    class_size = int((labels == 0).sum())
    shares: list[list[torch.Tensor]] = [[] for _ in range(clients)]
    concentration = torch.full((clients,), float(alpha), dtype=torch.float64)
    for c in range(classes):
        pos = (labels == c).nonzero().flatten()
        pos = pos[torch.randperm(len(pos), generator=generator)]
        gamma = torch._standard_gamma(concentration, generator=generator)
        counts = torch.round(class_size * gamma / gamma.sum()).long().tolist()
        start = 0
        for u, k in enumerate(counts):
            take = pos[start : start + k]
            shares[u].append(take)
            start += len(take)
    return [torch.cat(s).sort().values if s else torch.zeros(0, dtype=torch.long) for s in shares]


def _check(n: int, clients: int) -> None:
    if clients < 1:
        raise ConfigError(f"fl.clients: expected at least 1 client, got {clients}")
    if n < clients:
        raise ConfigError(f"fl.clients: {clients} clients but only {n} training samples")
