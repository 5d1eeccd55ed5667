"""A small text corpus that ships with Python: the documentation topics of ``pydoc_data.topics``.

Each of the 79 help topics (``assert``, ``class``, ``for`` ...) is lower-cased, split into word tokens
(``[a-z]+``) and cut into consecutive documents of ``length`` tokens (a short last piece is dropped). The label
of a document is its topic. The vocabulary is every token of the corpus, sorted; id 0 is reserved for padding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import torch

_TOKEN = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class TextCorpus:
    """Token documents with labels.

    Args:
        tokens: (N, L) int64 token ids (no padding: every document has exactly L tokens).
        labels: (N,) int64 topic index.
        vocab: the words; ``vocab[i]`` is token id ``i`` (``vocab[0]`` is the padding token "<pad>").
        topics: topic names, indexed by label.
    """

    tokens: torch.Tensor
    labels: torch.Tensor
    vocab: tuple[str, ...]
    topics: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def num_classes(self) -> int:
        return len(self.topics)


@lru_cache(maxsize=4)
def pydoc_corpus(length: int = 32) -> TextCorpus:
    """The pydoc topics corpus cut into documents of ``length`` tokens (about 2,000 documents for 32)."""
    from pydoc_data.topics import topics

    names = tuple(sorted(topics))
    words = {name: _TOKEN.findall(topics[name].lower()) for name in names}
    vocab = ("<pad>", *sorted({w for ws in words.values() for w in ws}))
    index = {w: i for i, w in enumerate(vocab)}
    docs, labels = [], []
    for label, name in enumerate(names):
        ids = [index[w] for w in words[name]]
        for start in range(0, len(ids) - length + 1, length):
            docs.append(ids[start : start + length])
            labels.append(label)
    return TextCorpus(torch.tensor(docs), torch.tensor(labels), vocab, names)
