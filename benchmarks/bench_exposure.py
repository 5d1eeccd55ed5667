"""Exposure ranking speed: whole-space canary scoring by tree expansion vs a plain-PyTorch full-sequence loop.

    python benchmarks/bench_exposure.py [--digits 4] [--hidden 128] [--threads 1]

Baseline: what one writes first with plain PyTorch: for every candidate secret, the text "\\n" + prefix +
secret is run through the GRU from a zero state (batched, 4,096 candidates at a time) and the secret's token
log-probabilities are summed. Ours: ``candidate_log_likelihoods`` (prefix read once, then one batched GRU
step per level of the candidate tree). A second, stronger baseline reads the prefix once and then runs each
candidate's secret tokens. All give the same scores (checked here, max abs difference reported), so the same
exposure. Writes benchmarks/out/exposure.json.
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab.attacks.inference.canary import SecretFormat, candidate_log_likelihoods
from poisonlab.data.text import load_pydoc_topics
from poisonlab.metrics.exposure import secret_rank
from poisonlab.models.charlm import build_charlm

from common import environment, write_json

PREFIX = "my PIN is "


@torch.no_grad()
def baseline_scores(model: torch.nn.Module, vocab, fmt: SecretFormat, batch: int = 4096) -> torch.Tensor:
    """Plain PyTorch: full forward pass over context + prefix + secret for every candidate."""
    context = "\n" + PREFIX
    lead = vocab.encode(context)
    out = []
    for start in range(0, fmt.space_size, batch):
        secrets = torch.stack([vocab.encode(fmt.text(i)) for i in range(start, min(start + batch, fmt.space_size))])
        tokens = torch.cat([lead.expand(len(secrets), -1), secrets], 1)
        logits, _ = model(tokens[:, :-1])
        logp = logits.double().log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]
        out.append(logp[:, len(lead) - 1 :].sum(1))
    return torch.cat(out)


@torch.no_grad()
def cached_prefix_scores(model: torch.nn.Module, vocab, fmt: SecretFormat, batch: int = 4096) -> torch.Tensor:
    """A stronger plain baseline: the prefix state computed once, then every candidate's secret tokens."""
    lead = vocab.encode("\n" + PREFIX)
    logits, state = model(lead[None])
    first = logits[0, -1].double().log_softmax(-1)
    out = []
    for start in range(0, fmt.space_size, batch):
        secrets = torch.stack([vocab.encode(fmt.text(i)) for i in range(start, min(start + batch, fmt.space_size))])
        logits, _ = model(secrets[:, :-1], state.expand(-1, len(secrets), -1).contiguous())
        logp = logits.double().log_softmax(-1).gather(2, secrets[:, 1:, None])[..., 0].sum(1)
        out.append(first[secrets[:, 0]] + logp)
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vocab = load_pydoc_topics().vocab
    model = build_charlm(len(vocab), torch.Generator().manual_seed(0), hidden=args.hidden).eval()
    fmt = SecretFormat(args.digits, " ")
    t0 = time.perf_counter()
    ours = candidate_log_likelihoods(model, vocab, PREFIX, fmt)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = baseline_scores(model, vocab, fmt)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = cached_prefix_scores(model, vocab, fmt)
    t_cached = time.perf_counter() - t0
    probe = list(range(0, fmt.space_size, max(fmt.space_size // 50, 1)))
    same_rank = all(secret_rank(ours, i) == secret_rank(base, i) for i in probe)
    result = {
        "digits": args.digits,
        "candidates": fmt.space_size,
        "hidden": args.hidden,
        "seconds_tree": t_ours,
        "seconds_plain_full_sequence": t_base,
        "seconds_plain_cached_prefix": t_cached,
        "speedup": t_base / t_ours,
        "speedup_vs_cached_prefix": t_cached / t_ours,
        "max_abs_score_difference": float(max((ours - base).abs().max(), (ours - cached).abs().max())),
        "same_rank_on_probes": same_rank,
        "environment": environment("cpu"),
    }
    path = write_json("exposure", result)
    print(
        f"{fmt.space_size} candidates: tree {t_ours:.2f}s, plain full-sequence {t_base:.2f}s "
        f"({t_base / t_ours:.1f}x), plain cached prefix {t_cached:.2f}s ({t_cached / t_ours:.1f}x), "
        f"max |diff| {result['max_abs_score_difference']:.2e} -> {path}"
    )


if __name__ == "__main__":
    main()
