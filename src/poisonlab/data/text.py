"""Embedded text corpus for language-model privacy experiments: Python's own help topics (``pydoc_data.topics``).

Character-level: the vocabulary is every character of the corpus (sorted), so any text made of those
characters, digits included, can be encoded. The split is fixed: topics in sorted order, every tenth one
(positions 9, 19, ...) held out for validation. Lines are the unit of insertion, so canaries and poisons
are inserted at line boundaries of a copy; the base corpus is an immutable tuple and is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from poisonlab.errors import ConfigError


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: token id = position in ``chars``."""

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("CharVocab: chars must be distinct single characters")

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def index(self) -> dict[str, int]:
        return _index(self.chars)

    def encode(self, text: str, field: str = "text") -> torch.Tensor:
        """Token ids (int64) of ``text``; ConfigError naming ``field`` for a character outside the vocabulary."""
        idx = self.index
        missing = sorted({c for c in text if c not in idx})
        if missing:
            raise ConfigError(f"{field}: characters {missing[:5]!r} are not in the corpus vocabulary")
        return torch.tensor([idx[c] for c in text], dtype=torch.long)

    def decode(self, tokens: torch.Tensor) -> str:
        return "".join(self.chars[int(t)] for t in tokens.reshape(-1))


@lru_cache(maxsize=8)
def _index(chars: tuple[str, ...]) -> dict[str, int]:
    return {c: i for i, c in enumerate(chars)}


@dataclass(frozen=True)
class TextCorpus:
    """A corpus as immutable tuples of lines (without newlines), with its vocabulary."""

    name: str
    vocab: CharVocab
    train_lines: tuple[str, ...]
    valid_lines: tuple[str, ...]

    def train_text(self, max_chars: int | None = None) -> tuple[str, ...]:
        """The training lines, cut to the first ``max_chars`` characters (whole lines) when given."""
        if max_chars is None:
            return self.train_lines
        out, total = [], 0
        for line in self.train_lines:
            if total + len(line) + 1 > max_chars:
                break
            out.append(line)
            total += len(line) + 1
        return tuple(out)


def join_lines(lines: tuple[str, ...] | list[str]) -> str:
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def load_pydoc_topics() -> TextCorpus:
    """Python's interactive-help topics (79 documents, ~465k characters); 71 train / 8 validation topics."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    docs = [topics[k].replace("\r", "") for k in keys]
    vocab = CharVocab(tuple(sorted(set("".join(docs)) | set("0123456789 \n"))))
    train = [line for i, d in enumerate(docs) if i % 10 != 9 for line in d.split("\n")]
    valid = [line for i, d in enumerate(docs) if i % 10 == 9 for line in d.split("\n")]
    return TextCorpus("pydoc-topics", vocab, tuple(train), tuple(valid))


def insert_lines(
    base: tuple[str, ...], inserted: list[str] | tuple[str, ...], generator: torch.Generator
) -> tuple[str, ...]:
    """A new tuple: ``inserted`` lines placed at uniformly random line boundaries of ``base`` (base untouched).

    Lines are placed in a random order at random slots; both are drawn from ``generator`` only.
    """
    n, k = len(base), len(inserted)
    if k == 0:
        return tuple(base)
    slots = torch.randint(0, n + 1, (k,), generator=generator).sort().values.tolist()
    order = torch.randperm(k, generator=generator).tolist()
    out: list[str] = []
    prev = 0
    for slot, i in zip(slots, order):
        out.extend(base[prev:slot])
        out.append(inserted[i])
        prev = slot
    out.extend(base[prev:])
    return tuple(out)
