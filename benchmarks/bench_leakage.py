"""Melis et al. leakage, measured: word-membership precision/recall from embedding-gradient sparsity and
property-inference AUC (passive vs active multi-task), 2 and 4 participants.

Words: bag-of-embeddings topic classifier on the pydoc topics corpus (documents of 32 tokens), batches of 8
documents per party, FedSGD (1 local step) and FedAvg (3 local steps), 10 rounds. Property: mnist5k digit
classification with an MLP (width 64), property "the target's batch holds bold digits" (top-quartile ink within
each class, half of a 32-image batch), logistic-regression meta-classifier on the others' summed update.

    python benchmarks/bench_leakage.py [--rounds 60] [--seeds 0 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab.attacks.federated.leakage import PropertyConfig, PropertyInference, word_membership_experiment

from common import environment, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--word-rounds", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--participants", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--features", default="all")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    words = []
    for k in args.participants:
        for steps in (1, 3):
            t0 = time.perf_counter()
            r = word_membership_experiment(participants=k, rounds=args.word_rounds, local_steps=steps)
            words.append(
                {
                    "participants": k,
                    "local_steps": steps,
                    "precision": r.precision,
                    "recall": r.recall,
                    "doc_precision": r.doc_precision,
                    "doc_recall": r.doc_recall,
                    "words_per_round": sum(x["words_used"] for x in r.per_round) / len(r.per_round),
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(words[-1])
    props = []
    for k in args.participants:
        for active in (False, True):
            for seed in args.seeds:
                t0 = time.perf_counter()
                cfg = PropertyConfig(
                    participants=k, rounds=args.rounds, active=active, seed=seed, features=args.features
                )
                r = PropertyInference(cfg).run()
                props.append(
                    {
                        "participants": k,
                        "active": active,
                        "seed": seed,
                        "auc": r.auc,
                        "auc_ci95": list(r.auc_ci95),
                        "main_accuracy": r.main_accuracy,
                        "positives": int(sum(r.labels)),
                        "observations": len(r.labels),
                        "seconds": time.perf_counter() - t0,
                    }
                )
                print(props[-1])
    path = write_json(
        "leakage",
        {
            "benchmark": "leakage",
            "setup": vars(args),
            "environment": environment("cpu"),
            "words": words,
            "property": props,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
