"""Melis et al. leakage: exact word sets from embedding-gradient sparsity, the others-update algebra, the
label-independent property, and a tiny property-inference run."""

from __future__ import annotations

import pytest
import torch

from poisonlab.attacks.federated.leakage import (
    PropertyConfig,
    PropertyInference,
    WordMembership,
    bold_property,
    others_update,
    word_membership_experiment,
)
from poisonlab.attacks.federated.leakage.corpus import TextCorpus, pydoc_corpus
from poisonlab.errors import ConfigError


def _tiny_corpus() -> TextCorpus:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 60, (40, 6), generator=g)
    labels = torch.arange(40) % 3
    return TextCorpus(tokens, labels, tuple(f"w{i}" for i in range(60)), ("a", "b", "c"))


def test_others_update_is_exact_algebra() -> None:
    own, other = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([0.5, -1.0])}
    mean = {"w": (own["w"] + other["w"]) / 2}
    assert torch.allclose(others_update(mean, own, 2)["w"], other["w"])


def test_word_membership_reads_the_nonzero_rows() -> None:
    update = {"embedding.weight": torch.zeros(10, 4)}
    update["embedding.weight"][[2, 7]] = torch.tensor([0.3, -0.1, 0.0, 0.2])
    assert WordMembership().infer(update).tolist() == [2, 7]
    with pytest.raises(ConfigError, match="embedding"):
        WordMembership("emb").infer(update)


@pytest.mark.parametrize("participants,local_steps", [(2, 1), (3, 2)])
def test_word_sets_are_recovered_exactly(participants: int, local_steps: int) -> None:
    res = word_membership_experiment(
        participants, rounds=3, batch_size=4, local_steps=local_steps, dim=8, corpus=_tiny_corpus()
    )
    assert res.precision == 1.0 and res.recall == 1.0 and res.doc_recall == 1.0


def test_pydoc_corpus_shape() -> None:
    c = pydoc_corpus(32)
    assert c.tokens.shape[1] == 32 and c.tokens.min() >= 1 and c.vocab[0] == "<pad>"
    assert c.num_classes == len(c.topics) and len(c.tokens) > 1000


def test_bold_property_is_independent_of_the_label(digits_small) -> None:
    bold = bold_property(digits_small)
    for c in range(10):
        members = digits_small.labels == c
        assert abs(bold[members].float().mean().item() - 0.25) < 0.1


@pytest.mark.slow
def test_property_inference_tiny_run() -> None:
    res = PropertyInference(PropertyConfig(rounds=10, aux_updates=2, features="last", width=16)).run()
    assert len(res.scores) == 10 and set(res.labels) == {True, False}
    assert 0.0 <= res.auc <= 1.0 and res.auc_ci95[0] <= res.auc <= res.auc_ci95[1]


def test_property_config_validation() -> None:
    with pytest.raises(ConfigError, match="participants"):
        PropertyConfig(participants=1)
    with pytest.raises(ConfigError, match="features"):
        PropertyConfig(features="middle")
