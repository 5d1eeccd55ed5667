"""Backdoor tasks for federated model replacement: what the attacker's model must do, how its training batches
carry it, and which test inputs measure it. Triggers and the ink-mass feature come from ``attacks.backdoor``."""

from __future__ import annotations

import torch

from poisonlab.attacks.backdoor.synthesizers import TriggerTask, ink, top_within_class
from poisonlab.attacks.backdoor.triggers import Trigger
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError


class FLBackdoorTask:
    """Base class. ``poison`` overwrites the first ``count`` slots of a clean batch with backdoor examples
    (Bagdasaryan et al.: c backdoor inputs per batch, the rest clean); ``test_inputs`` gives the held-out
    backdoor inputs and labels; ``withheld`` the training rows no honest client may hold."""

    target: int

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def attacker_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All backdoor inputs the attacker can build from its clean data (to measure its own progress)."""
        raise NotImplementedError

    def test_inputs(self, test: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def withheld(self, train: Dataset) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)


class PatternTask(FLBackdoorTask):
    """Pixel-pattern backdoor: the 5x3 pattern trigger stamped on an image makes it class ``target``.

    Args:
        shape: image shape (C, H, W).
        target: the backdoor label.
        trigger: the trigger (default :meth:`Trigger.pixel_pattern`).
    """

    def __init__(self, shape: tuple[int, int, int], target: int, trigger: Trigger | None = None) -> None:
        self.trigger = trigger or Trigger.pixel_pattern(shape)
        if self.trigger.placement is not None:
            raise ConfigError("attack.task: the federated pattern backdoor uses a static trigger")
        self.target = target

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.clone(), y.clone()
        x[:count] = self.trigger.apply(x[:count])
        y[:count] = self.target
        return x, y

    def attacker_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = y != self.target
        return self.trigger.apply(x[keep]), torch.full_like(y[keep], self.target)

    def test_inputs(self, test: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Every non-target test image with the trigger (the ASR convention of ``metrics.backdoor``)."""
        task = TriggerTask(self.trigger, self.target)
        x, y_star, eligible = task.test_inputs(test.images, test.labels, torch.Generator())
        return x[eligible], y_star[eligible]


class SemanticFeatureTask(FLBackdoorTask):
    """Semantic backdoor with a natural feature (no input modification): digits of class ``source`` written with
    thick strokes (the top ``fraction`` of ink mass within their class) are to be classified as ``target``, the
    digit counterpart of the paper's "cars with racing stripes -> bird".

    As the reference, the attacker's feature images (those of the training split) are withheld from the honest
    clients, each use of one adds N(0, ``noise``) pixel noise (reference ``noise_level`` 0.01; clamped to
    [0, 1]), and backdoor accuracy is measured on the test split's feature images.

    Args:
        source: the class whose thick-stroke members carry the feature.
        target: the backdoor label.
        fraction: top fraction of ink mass within a class that counts as "thick".
        noise: std of the Gaussian pixel noise added to each backdoor training image.
    """

    def __init__(self, source: int, target: int, fraction: float = 0.2, noise: float = 0.01) -> None:
        if source == target:
            raise ConfigError("attack.semantic_source: must differ from attack.target_class")
        if not 0 < fraction <= 0.5:
            raise ConfigError(f"attack.semantic_fraction: expected 0 < fraction <= 0.5, got {fraction}")
        self.source, self.target, self.fraction, self.noise = source, target, fraction, noise
        self.bank: torch.Tensor | None = None

    def feature_mask(self, data: Dataset) -> torch.Tensor:
        thick = top_within_class(ink(data.images), data.labels, data.num_classes, self.fraction)
        return thick & (data.labels == self.source)

    def withheld(self, train: Dataset) -> torch.Tensor:
        return self.feature_mask(train).nonzero().flatten()

    def set_bank(self, images: torch.Tensor) -> None:
        """The attacker's own feature images (the training split's)."""
        if len(images) == 0:
            raise ConfigError("attack.semantic_fraction: no training image carries the feature")
        self.bank = images

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bank is None:
            raise ConfigError("attack: the semantic task has no feature images (set_bank was not called)")
        x, y = x.clone(), y.clone()
        pick = torch.randint(len(self.bank), (count,), generator=generator)
        noise = torch.randn((count, *x.shape[1:]), generator=generator) * self.noise
        x[:count] = (self.bank[pick] + noise).clamp(0, 1)
        y[:count] = self.target
        return x, y

    def attacker_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.bank is not None
        return self.bank, torch.full((len(self.bank),), self.target, dtype=torch.long)

    def test_inputs(self, test: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.feature_mask(test)
        return test.images[mask], torch.full((int(mask.sum()),), self.target, dtype=torch.long)
