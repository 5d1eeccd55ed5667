"""Choosing targets and the training samples to poison, under the reference's threat models.

Clean label: selection only picks ids; labels are never changed. Randomness comes from the generator
passed in (a SeedTree child), never from global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from poisonlab.budget import PoisonBudget
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError


def choose_targets(
    test: Dataset,
    generator: torch.Generator,
    target_ids: Sequence[int] = (),
    count: int = 1,
    adv_class: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Target ids and the adversarial class.

    Given ``target_ids`` they are checked and kept; otherwise (as the reference's random construction)
    a random target class is drawn, then ``count`` random test images of that class. ``adv_class`` None
    draws a random class other than the targets' (all targets must then share one class).

    Returns:
        (target ids as int64 (T,), adversarial class).
    """
    k = test.num_classes
    if adv_class is not None and not 0 <= adv_class < k:
        raise ConfigError(f"poison.adv_class: expected 0 <= adv_class < {k}, got {adv_class}")
    if target_ids:
        ids = torch.as_tensor(list(target_ids), dtype=torch.long)
        pos = test.positions_of(ids)  # DataError naming unknown ids
        classes = test.labels[pos].cpu().unique()
    else:
        labels = test.labels.cpu()
        target_class = int(torch.randint(k, (1,), generator=generator))
        if adv_class is not None and target_class == adv_class:
            target_class = (target_class + 1 + int(torch.randint(k - 1, (1,), generator=generator))) % k
        pool = torch.nonzero(labels == target_class).flatten()
        if count > len(pool):
            raise ConfigError(f"poison.targets: {count} targets but class {target_class} has {len(pool)} test images")
        ids = test.ids.cpu()[pool[torch.randperm(len(pool), generator=generator)[:count]]].sort().values
        classes = torch.tensor([target_class])
    if adv_class is None:
        if len(classes) != 1:
            raise ConfigError("poison.adv_class: targets of several classes need an explicit adv_class")
        choices = [c for c in range(k) if c != int(classes[0])]
        adv_class = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    if bool((classes == adv_class).any()):
        raise ConfigError(f"poison.adv_class: {adv_class} is already the true class of a target")
    return ids, int(adv_class)


def candidate_positions(
    train: Dataset,
    threat_model: str,
    target_classes: Sequence[int],
    adv_class: int,
    generator: torch.Generator,
    poison_class: int | None = None,
) -> tuple[torch.Tensor, int | None]:
    """Row positions of the samples the attacker may perturb, and the poison class (None: all classes).

    - "single-class": the adversarial class (feature-collision threat model; the reference default).
    - "third-party": one class that is neither a target's nor the adversarial class (random unless given).
    - "random-subset": any training sample.
    """
    labels = train.labels.cpu()
    if threat_model == "single-class":
        cls: int | None = adv_class
    elif threat_model == "third-party":
        others = [c for c in range(train.num_classes) if c != adv_class and c not in set(target_classes)]
        if poison_class is not None:
            if poison_class not in others:
                raise ConfigError(f"poison.poison_class: {poison_class} must differ from target and adversarial class")
            cls = poison_class
        elif not others:
            raise ConfigError("poison.threat_model: third-party needs a class besides target and adversarial class")
        else:
            cls = others[int(torch.randint(len(others), (1,), generator=generator))]
    elif threat_model == "random-subset":
        return torch.arange(len(train)), None
    else:
        raise ConfigError(f"poison.threat_model: unknown threat model {threat_model!r}")
    return torch.nonzero(labels == cls).flatten(), cls


def choose_poisons(
    train: Dataset,
    budget: PoisonBudget,
    candidates: torch.Tensor,
    generator: torch.Generator,
    strategy: str = "random",
    surrogates: Sequence[nn.Module] = (),
) -> torch.Tensor:
    """Sorted ids of exactly ``budget.resolve(len(train))`` poisons among the candidate positions.

    ``"random"`` draws uniformly; ``"gradient-norm"`` takes the samples with the largest per-sample
    gradient norm of their own (true-label) loss, averaged over the surrogates.
    """
    count = budget.resolve(len(train))
    if count > len(candidates):
        raise ConfigError(f"poison.budget: {count} poisons but only {len(candidates)} eligible training samples")
    if strategy == "random":
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    elif strategy == "gradient-norm":
        if not surrogates:
            raise ConfigError("poison.selection: gradient-norm needs at least one surrogate model")
        sub = train.subset(candidates)
        norms = torch.stack([per_sample_grad_norms(m, sub.images, sub.labels) for m in surrogates]).mean(0)
        chosen = candidates[torch.topk(norms.cpu(), count, sorted=True).indices]
    else:
        raise ConfigError(f"poison.selection: unknown strategy {strategy!r}")
    return train.ids.cpu()[chosen].sort().values


def per_sample_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """||grad_theta CE(f(x_i), y_i)||_2 for every sample, with ``torch.func`` (vmap of grad, no sample loop).

    The model is evaluated in eval mode (BatchNorm uses running statistics, so samples are independent);
    its mode is restored afterwards.
    """
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi[None],))
        return nn.functional.cross_entropy(out, yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    try:
        norms = []
        for i in range(0, len(x), chunk):
            g = per_sample(params, x[i : i + chunk].to(device), y[i : i + chunk].to(device))
            norms.append(torch.stack([v.flatten(1).pow(2).sum(1) for v in g.values()]).sum(0).sqrt())
    finally:
        model.train(was_training)
    return torch.cat(norms) if norms else torch.zeros(0, device=device)
