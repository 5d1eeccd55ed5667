"""Word membership from embedding-gradient sparsity (Melis et al. 2019, Sec. V-A), and its 2..K-party test.

The gradient of a loss with respect to an embedding matrix is non-zero only in the rows of tokens that occur in
the batch. A participant who sees the aggregated update and knows its own recovers the others' update and reads
off the set of rows with non-zero norm: the bag of words the others trained on in that round.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from poisonlab.attacks.federated.leakage.corpus import TextCorpus, pydoc_corpus
from poisonlab.attacks.federated.leakage.text_model import BagOfEmbeddings, init_bag_of_embeddings
from poisonlab.errors import ConfigError
from poisonlab.rng import SeedTree

Params = dict[str, torch.Tensor]


def others_update(aggregate: Params, own: Params, participants: int) -> Params:
    """The summed update of everyone else: ``participants * mean - own`` (synchronous SGD / FedAvg with equal
    weights, where the server shares the mean of the participants' updates)."""
    return {k: participants * aggregate[k] - own[k] for k in aggregate}


class WordMembership:
    """Passive word-membership inference of Melis, Song, De Cristofaro & Shmatikov, "Exploiting Unintended
    Feature Leakage in Collaborative Learning" (IEEE S&P 2019): the rows of the embedding update with non-zero
    norm are exactly the tokens the other participants used in the round.

    Threat model: an honest-but-curious participant of synchronous federated training who sees every aggregated
    update and knows its own; it never sees the other participants' data.

    Args:
        embedding: name of the embedding matrix parameter in the update.
        tol: a row counts as used when its norm exceeds ``tol`` times the largest row norm (the subtraction of the
            attacker's own update leaves float rounding residue in the rows only the attacker used).
    """

    def __init__(self, embedding: str = "embedding.weight", tol: float = 1e-4) -> None:
        self.embedding = embedding
        self.tol = tol

    def infer(self, others: Params) -> torch.Tensor:
        """Token ids (sorted) the others used, from their summed update."""
        if self.embedding not in others:
            raise ConfigError(f"leakage.embedding: no parameter {self.embedding!r} in the update")
        norms = others[self.embedding].double().norm(dim=1)
        top = norms.max()
        if not bool(top > 0):
            return torch.zeros(0, dtype=torch.long)
        return (norms > self.tol * top).nonzero().flatten()


@dataclass(frozen=True)
class WordLeakageResult:
    precision: float
    recall: float
    doc_precision: float
    doc_recall: float
    per_round: list[dict[str, float]]


def word_membership_experiment(
    participants: int = 2,
    rounds: int = 10,
    batch_size: int = 8,
    local_steps: int = 1,
    lr: float = 0.5,
    dim: int = 64,
    seed: int = 0,
    corpus: TextCorpus | None = None,
) -> WordLeakageResult:
    """Simulate ``rounds`` of federated training of a bag-of-embeddings topic classifier on the pydoc corpus with
    ``participants`` parties (party 0 is the attacker) and score the recovered word sets.

    Each round every party draws ``batch_size`` of its own documents and takes ``local_steps`` plain SGD steps
    (1 = FedSGD, sending ``-lr * gradient``); the server averages the deltas. Word precision/recall compare the
    recovered set with the union of the other parties' tokens; document membership calls a document a member
    when all its tokens are recovered, scored on the others' documents plus as many unused ones.
    """
    if participants < 2:
        raise ConfigError(f"leakage.participants: expected >= 2, got {participants}")
    corpus = corpus or pydoc_corpus()
    seeds = SeedTree(seed)
    gen = seeds.generator("data")
    shares = torch.randperm(len(corpus.tokens), generator=gen).chunk(participants)
    model = init_bag_of_embeddings(BagOfEmbeddings(corpus.vocab_size, corpus.num_classes, dim), seeds.generator("init"))
    params = {k: v.detach() for k, v in model.named_parameters()}
    attack = WordMembership()
    per_round = []
    for _ in range(rounds):
        picks = [share[torch.randperm(len(share), generator=gen)[:batch_size]] for share in shares]
        deltas = [_local_delta(model, params, corpus, p, local_steps, lr) for p in picks]
        aggregate = {k: torch.stack([d[k] for d in deltas]).mean(0) for k in params}
        found = attack.infer(others_update(aggregate, deltas[0], participants))
        used = torch.cat([corpus.tokens[p].flatten() for p in picks[1:]]).unique()
        used = used[used != 0]
        per_round.append(_scores(found, used, corpus, torch.cat(picks[1:]), gen))
        params = {k: params[k] + aggregate[k] for k in params}
    mean = {k: statistics.fmean(r[k] for r in per_round) for k in per_round[0]}
    return WordLeakageResult(mean["precision"], mean["recall"], mean["doc_precision"], mean["doc_recall"], per_round)


def _local_delta(
    model: BagOfEmbeddings, params: Params, corpus: TextCorpus, pick: torch.Tensor, steps: int, lr: float
) -> Params:
    x, y = corpus.tokens[pick], corpus.labels[pick]

    def loss(p: Params) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    current = dict(params)
    for _ in range(steps):
        g = grad(loss)(current)
        current = {k: v - lr * g[k] for k, v in current.items()}
    return {k: current[k] - params[k] for k in params}


def _scores(
    found: torch.Tensor, used: torch.Tensor, corpus: TextCorpus, member_docs: torch.Tensor, gen: torch.Generator
) -> dict[str, Any]:
    hit = torch.isin(found, used).sum().item()
    precision = hit / max(len(found), 1)
    recall = torch.isin(used, found).float().mean().item()
    others = torch.ones(len(corpus.tokens), dtype=torch.bool)
    others[member_docs] = False
    pool = others.nonzero().flatten()
    non_members = pool[torch.randperm(len(pool), generator=gen)[: len(member_docs)]]
    docs = torch.cat([member_docs, non_members])
    truth = torch.cat([torch.ones(len(member_docs)), torch.zeros(len(non_members))]).bool()
    predicted = torch.isin(corpus.tokens[docs], torch.cat([found, torch.zeros(1, dtype=torch.long)])).all(dim=1)
    tp = (predicted & truth).sum().item()
    return {
        "precision": precision,
        "recall": recall,
        "doc_precision": tp / max(int(predicted.sum()), 1),
        "doc_recall": tp / len(member_docs),
        "words_used": len(used),
        "words_found": len(found),
    }
