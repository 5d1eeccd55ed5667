"""A bag-of-embeddings text classifier: embedding matrix, mean over tokens, linear head."""

from __future__ import annotations

import torch
from torch import nn


class BagOfEmbeddings(nn.Module):
    """``logits = W mean_t E[token_t] + b``; the embedding gradient is non-zero only in rows of tokens used.

    Args:
        vocab_size: rows of the embedding matrix E (token 0 is padding and never receives a gradient).
        num_classes: output logits.
        dim: embedding width.
    """

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(self.embedding(tokens).mean(dim=1))


def init_bag_of_embeddings(model: BagOfEmbeddings, generator: torch.Generator) -> BagOfEmbeddings:
    """Initialise from ``generator`` only: E ~ N(0, 1) (PyTorch's default, padding row zero), head uniform."""
    with torch.no_grad():
        model.embedding.weight.normal_(generator=generator)
        model.embedding.weight[0].zero_()
        bound = model.head.in_features**-0.5
        model.head.weight.uniform_(-bound, bound, generator=generator)
        model.head.bias.uniform_(-bound, bound, generator=generator)
    return model
