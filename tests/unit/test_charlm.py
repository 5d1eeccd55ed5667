"""Character LM: text corpus and insertion, seeded construction, deterministic and resumable training."""

from __future__ import annotations

import pytest
import torch

from poisonlab.data.text import CharVocab, insert_lines, join_lines, load_pydoc_topics
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.charlm import build_charlm
from poisonlab.rng import SeedTree
from poisonlab.training.lm import LMTrainConfig, LMTrainer, lm_loss

RECIPE = LMTrainConfig(epochs=2, seq_len=16, batch_size=8, lr=1e-2)


def _stream() -> tuple[CharVocab, torch.Tensor]:
    corpus = load_pydoc_topics()
    return corpus.vocab, corpus.vocab.encode(join_lines(corpus.train_text(1500)))


def test_corpus_split_and_vocab() -> None:
    corpus = load_pydoc_topics()
    assert len(corpus.train_lines) > 10 * len(corpus.valid_lines) > 0
    assert set("0123456789 \n_") <= set(corpus.vocab.chars)
    text = "my PIN is 4 8 2"
    assert corpus.vocab.decode(corpus.vocab.encode(text)) == text
    with pytest.raises(ConfigError, match="canary.prefix"):
        corpus.vocab.encode("\u20ac", "canary.prefix")
    assert len(join_lines(corpus.train_text(1000))) <= 1000


def test_insert_lines_keeps_base_and_adds_every_line() -> None:
    base = tuple(f"line {i}" for i in range(50))
    snapshot = tuple(base)
    extra = ["canary A", "canary A", "poison B", "poison C"]
    out = insert_lines(base, extra, torch.Generator().manual_seed(0))
    assert base == snapshot and len(out) == 54
    assert sorted(x for x in out if not x.startswith("line")) == sorted(extra)
    assert [x for x in out if x.startswith("line")] == list(base)
    assert out == insert_lines(base, extra, torch.Generator().manual_seed(0))
    assert out != insert_lines(base, extra, torch.Generator().manual_seed(1))


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    a = build_charlm(20, torch.Generator().manual_seed(5), embed=4, hidden=8)
    b = build_charlm(20, torch.Generator().manual_seed(5), embed=4, hidden=8)
    c = build_charlm(20, torch.Generator().manual_seed(6), embed=4, hidden=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
        assert not torch.equal(p, r), n
    logits, state = a(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 20) and state.shape == (1, 2, 8)


def _train(vocab: CharVocab, tokens: torch.Tensor, seed: int, **kw: object) -> tuple[LMTrainer, list]:
    model = build_charlm(len(vocab), SeedTree(seed).generator("init"), embed=8, hidden=16)
    trainer = LMTrainer(model, tokens, RECIPE, SeedTree(seed), **kw)  # type: ignore[arg-type]
    return trainer, trainer.fit()


def test_training_is_deterministic_and_learns() -> None:
    vocab, tokens = _stream()
    untrained = build_charlm(len(vocab), SeedTree(0).generator("init"), embed=8, hidden=16)
    t1, h1 = _train(vocab, tokens, 0)
    t2, h2 = _train(vocab, tokens, 0)
    t3, _ = _train(vocab, tokens, 1)
    assert h1 == h2
    for p, q in zip(t1.model.parameters(), t2.model.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, r) for p, r in zip(t1.model.parameters(), t3.model.parameters()))
    assert lm_loss(t1.model, tokens, seq_len=32) < lm_loss(untrained, tokens, seq_len=32) - 0.5


def test_training_resumes_bit_identically(tmp_path) -> None:
    vocab, tokens = _stream()
    reference, _ = _train(vocab, tokens, 3)
    calls = {"n": 0}

    def stop_at_7() -> bool:
        calls["n"] += 1
        return calls["n"] == 7  # mid-epoch

    ckpt = Checkpointer(tmp_path, "cfg", keep=1)
    with pytest.raises(Interrupted):
        _train(vocab, tokens, 3, checkpointer=ckpt, should_stop=stop_at_7)
    resumed, history = _train(vocab, tokens, 3, checkpointer=ckpt)
    assert resumed.step == reference.step and history == reference.history
    for p, q in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(p, q)
