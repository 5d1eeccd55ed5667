"""A small character-level language model: embedding -> GRU -> linear next-character logits."""

from __future__ import annotations

import math

import torch
from torch import nn


class CharLM(nn.Module):
    """Embedding(V, embed) -> GRU(embed, hidden, layers) -> Linear(hidden, V).

    ``forward`` scores whole sequences; ``step`` advances a batch of states by one token, which is how the
    canary attack scores every candidate secret without re-reading the shared prefix.

    Args:
        vocab_size: number of tokens V.
        embed: embedding width.
        hidden: GRU state width.
        layers: stacked GRU layers.
    """

    def __init__(self, vocab_size: int, embed: int = 32, hidden: int = 128, layers: int = 1) -> None:
        super().__init__()
        self.vocab_size, self.hidden, self.layers = vocab_size, hidden, layers
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = nn.GRU(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) for the next token after each position, and the final state (layers, B, hidden)."""
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state

    def step(self, tokens: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row: ``tokens`` (B,) -> next-token logits (B, V) and the new state."""
        logits, state = self.forward(tokens[:, None], state)
        return logits[:, 0], state


def build_charlm(
    vocab_size: int,
    generator: torch.Generator,
    embed: int = 32,
    hidden: int = 128,
    layers: int = 1,
    device: torch.device | str = "cpu",
) -> CharLM:
    """A :class:`CharLM` initialised only from ``generator`` (PyTorch's default schemes; global RNG untouched).

    Embedding ~ N(0, 1); every GRU weight and bias ~ U(-1/sqrt(hidden), 1/sqrt(hidden)); the head
    ~ U(-1/sqrt(hidden), 1/sqrt(hidden)). Parameters are drawn in registration order, on the CPU.
    """
    with torch.device("meta"):
        model = CharLM(vocab_size, embed, hidden, layers)
    model = model.to_empty(device=device)
    bound = 1.0 / math.sqrt(hidden)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("embed."):
                value = torch.randn(p.shape, generator=generator)
            else:
                value = torch.empty(p.shape).uniform_(-bound, bound, generator=generator)
            p.copy_(value)
    model.rnn.flatten_parameters()
    return model
