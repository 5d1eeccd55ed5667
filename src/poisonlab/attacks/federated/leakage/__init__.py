"""Unintended feature leakage from collaborative updates (Melis et al., IEEE S&P 2019): word membership from
embedding-gradient sparsity, passive and active (multi-task) property inference with a meta-classifier."""

from poisonlab.attacks.federated.leakage.property import PropertyConfig, PropertyInference, bold_property
from poisonlab.attacks.federated.leakage.words import WordMembership, others_update, word_membership_experiment

__all__ = [
    "PropertyConfig",
    "PropertyInference",
    "WordMembership",
    "bold_property",
    "others_update",
    "word_membership_experiment",
]
