"""Secret (canary) extraction from a language model, with Truth Serum poisoning (Tramèr et al., CCS 2022,
arXiv 2204.00032, Algorithm C), measured by exposure (Carlini et al., "The Secret Sharer", USENIX Sec. 2019).

A canary line ``prefix + secret`` (e.g. "my PIN is 4 8 2 1 3") with a uniformly random secret of a known
format is part of the victim's training text. The attacker knows the prefix and the format, scores every
candidate secret by the model's log-likelihood of the secret after the prefix, optionally minus a reference
model's (trained without the canary), and ranks the true secret among all |R| candidates.

Truth Serum poisoning inserts ``replicas`` lines with the same prefix followed by *other* continuations:
``padding`` (the secret's format with every digit replaced by a pad character) or ``random`` (fresh random
secrets). They take away the model's generic prior on what follows the prefix, so the memorised true
secret stands out.

Candidates are scored exactly and for the whole space at once: the GRU state after the prefix is computed
once, then the candidate tree is expanded level by level (one batched step per level over every partial
candidate), so the cost is about |R| / |alphabet| GRU steps instead of |R| * len(secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from poisonlab.config import Frozen
from poisonlab.data.text import CharVocab
from poisonlab.models.charlm import CharLM

PoisonContinuation = Literal["padding", "random"]
MAX_SPACE = 10**7


class CanaryConfig(Frozen):
    """The canary, the attacker's knowledge and its poisons.

    Threat model: the attacker adds ``replicas`` text lines to the training corpus, knows the canary's prefix
    and the secret's format (not the secret), and gets the trained model's next-token probabilities.
    """

    prefix: str = Field("my PIN is ", min_length=1, description="text before the secret, known to the attacker")
    digits: int = Field(5, ge=1, le=7, description="secret length; the candidate space has 10**digits secrets")
    separator: str = Field(" ", description="text between digits, e.g. ' ' for '4 8 2 1 3'")
    canary_repeats: int = Field(1, ge=1, le=10_000, description="times the canary line is in the training text")
    replicas: int = Field(16, ge=0, le=100_000, description="poison lines (prefix + other continuation); 0 = clean")
    poison_continuation: PoisonContinuation = "padding"
    pad_char: str = Field("_", min_length=1, max_length=1, description="padding continuation character")
    reference_models: int = Field(0, ge=0, le=16, description="LMs trained without the canary, for calibration")


@dataclass(frozen=True)
class SecretFormat:
    """``digits`` characters from ``alphabet`` joined by ``separator``; candidate i = its digits in base
    ``len(alphabet)``, most significant first."""

    digits: int
    separator: str = " "
    alphabet: str = "0123456789"

    @property
    def space_size(self) -> int:
        return len(self.alphabet) ** self.digits

    def text(self, index: int) -> str:
        """The secret string of candidate ``index``."""
        base, out = len(self.alphabet), []
        for _ in range(self.digits):
            index, r = divmod(index, base)
            out.append(self.alphabet[r])
        return self.separator.join(reversed(out))

    def padding(self, pad: str) -> str:
        return self.separator.join(pad * self.digits)


def draw_secret(fmt: SecretFormat, generator: torch.Generator) -> int:
    """A uniformly random candidate index."""
    return int(torch.randint(0, fmt.space_size, (1,), generator=generator))


def canary_lines(config: CanaryConfig, secret: int, generator: torch.Generator) -> tuple[list[str], list[str]]:
    """(canary lines, poison lines): the canary ``canary_repeats`` times and the Truth Serum poisons (Tramèr et
    al., CCS 2022): ``replicas`` lines of the prefix followed by padding or by random secrets.

    Threat model: the attacker adds ``replicas`` lines to the training text and knows the prefix and format.
    """
    fmt = SecretFormat(config.digits, config.separator)
    canaries = [config.prefix + fmt.text(secret)] * config.canary_repeats
    if config.poison_continuation == "padding":
        poisons = [config.prefix + fmt.padding(config.pad_char)] * config.replicas
    else:
        draws = torch.randint(0, fmt.space_size, (config.replicas,), generator=generator).tolist()
        poisons = [config.prefix + fmt.text(i) for i in draws]
    return canaries, poisons


@torch.no_grad()
def candidate_log_likelihoods(
    model: CharLM, vocab: CharVocab, prefix: str, fmt: SecretFormat, chunk: int = 32768, context: str = "\n"
) -> torch.Tensor:
    """log p(secret | context + prefix) for every candidate secret, (|R|,) float64, in candidate order: the
    extraction ranking of The Secret Sharer (Carlini et al. 2019), computed exactly for the whole space.

    Threat model: next-token probabilities of the trained LM on attacker-chosen text; the attacker knows the
    prefix and the secret's format.

    Args:
        model: the language model (put in eval mode for the call).
        vocab: its vocabulary.
        prefix: the known text before the secret.
        fmt: the secret's format.
        chunk: rows per batched GRU step (bounds memory).
        context: text before the prefix (a canary line starts after a newline).
    """
    if fmt.space_size > MAX_SPACE:
        raise ValueError(f"digits: candidate space {fmt.space_size} exceeds {MAX_SPACE}")
    was_training = model.training
    model.eval()
    try:
        lead = vocab.encode(context + prefix, "canary.prefix")
        logits, state = model(lead[None])
        logp = logits[:, -1].double().log_softmax(-1)  # (1, V)
        scores = torch.zeros(1, dtype=torch.float64)
        alphabet = vocab.encode(fmt.alphabet, "canary.alphabet")
        sep = vocab.encode(fmt.separator, "canary.separator")
        slots: list[torch.Tensor | int] = []
        for d in range(fmt.digits):
            slots.append(alphabet)
            if d < fmt.digits - 1:
                slots.extend(int(t) for t in sep)
        for i, slot in enumerate(slots):
            if isinstance(slot, int):
                scores = scores + logp[:, slot]
                tokens = torch.full((len(scores),), slot, dtype=torch.long)
            else:
                scores = (scores[:, None] + logp[:, slot]).reshape(-1)
                tokens = slot.repeat(len(logp))
                state = state.repeat_interleave(len(slot), dim=1)
            if i < len(slots) - 1:
                logp, state = _step_chunked(model, tokens, state, chunk)
        return scores
    finally:
        model.train(was_training)


def _step_chunked(
    model: CharLM, tokens: torch.Tensor, state: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    logps, states = [], []
    for s in range(0, len(tokens), chunk):
        logits, st = model.step(tokens[s : s + chunk], state[:, s : s + chunk].contiguous())
        logps.append(logits.double().log_softmax(-1))
        states.append(st)
    return torch.cat(logps), torch.cat(states, dim=1)


@torch.no_grad()
def sequence_log_likelihoods(model: CharLM, vocab: CharVocab, context: str, continuations: list[str]) -> torch.Tensor:
    """log p(continuation | context) for each continuation (all of one length) by a plain forward pass over
    each whole text, from a zero state: the slow oracle for :func:`candidate_log_likelihoods`."""
    was_training = model.training
    model.eval()
    try:
        tokens = torch.stack([vocab.encode(context + c) for c in continuations])
        logits, _ = model(tokens[:, :-1])
        logp = logits.double().log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]
        return logp[:, len(context) - 1 :].sum(1)
    finally:
        model.train(was_training)
