"""Benchmark: loss along the line between two checkpoints, vectorised over alphas (vmap) vs plain PyTorch loops,
and convolution-operator spectra (batched torch FFT + SVD) vs the reference's numpy computation.

Interpolation strategies (same alphas, same BatchNorm recomputation on the same calibration images):
- ``plain``: per alpha, load the mixed state dict into a model copy, ``torch.optim.swa_utils.update_bn`` over the
  calibration batches, then evaluate (what one writes by hand);
- ``loop``: ours with ``vectorize=False`` (functional_call per alpha);
- ``vmap-C``: ours vectorised over chunks of C alphas.
Strategies run round-robin ``--repeats`` times; the fastest run of each is kept. The losses of every strategy are
compared with ``plain`` (max abs difference). Writes ``benchmarks/out/<name>.json`` (default diagnostics.json).

    python benchmarks/bench_diagnostics.py                  # ConvNet width 16, 500 + 500 images, 11 alphas
    python benchmarks/bench_diagnostics.py --model lenet --name diagnostics_lenet
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import update_bn

from poisonlab.data import load_dataset
from poisonlab.diagnostics.interpolation import interpolate, interpolated_states, spread_subset
from poisonlab.diagnostics.spectra import conv_input_sizes, layer_spectra
from poisonlab.models.build import build_model

from common import environment, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnet", choices=["convnet", "lenet"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--samples", type=int, default=500, help="evaluation images (mnist5k test)")
    p.add_argument("--calibration", type=int, default=500, help="BatchNorm calibration images (mnist5k train)")
    p.add_argument("--alphas", type=int, default=11)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--chunks", default="4,11", help="vmap chunk sizes to time")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="diagnostics")
    return p.parse_args(argv)


def _pair(args: argparse.Namespace, splits) -> tuple[torch.nn.Module, torch.nn.Module]:  # type: ignore[no-untyped-def]
    models = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        m = build_model(args.model, splits.train.shape, 10, g, args.width if args.model == "convnet" else None)
        m.train()
        with torch.no_grad():  # non-trivial BatchNorm statistics
            m(splits.train.images[seed * 100 : seed * 100 + 200])
        models.append(m.eval())
    return models[0], models[1]


def plain(a, b, alphas, calib, test, bs):  # type: ignore[no-untyped-def]
    """Hand-written loop: load each mixed state dict, update_bn, evaluate."""
    losses = []
    states = interpolated_states(a.state_dict(), b.state_dict(), alphas)
    model = copy.deepcopy(a)
    for i in range(len(alphas)):
        model.load_state_dict({k: v[i] for k, v in states.items()})
        update_bn([calib[j : j + bs] for j in range(0, len(calib), bs)], model)
        model.eval()
        with torch.no_grad():
            total = sum(
                F.cross_entropy(model(test.images[j : j + bs]), test.labels[j : j + bs], reduction="sum").item()
                for j in range(0, len(test), bs)
            )
        losses.append(total / len(test))
    return losses


def numpy_spectra(model: torch.nn.Module, shape: tuple[int, ...]) -> list[np.ndarray]:
    """The reference's computation (``Rank_study/singular_values.py``): numpy FFT of the (kh, kw, out, in) kernel at the
    input size, SVD of every frequency's matrix, sorted."""
    sizes = conv_input_sizes(model, shape)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            f = m.weight.detach().permute(2, 3, 0, 1).numpy()
            t = np.fft.fft2(f, sizes[name], axes=[0, 1])
            out.append(np.flip(np.sort(np.linalg.svd(t, compute_uv=False).flatten()), 0))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = load_dataset("mnist5k")
    a, b = _pair(args, splits)
    test = spread_subset(splits.test, args.samples)
    calib = spread_subset(splits.train, args.calibration).images  # the images interpolate() calibrates on
    alphas = torch.linspace(0, 1, args.alphas, dtype=torch.float64)
    chunks = [int(c) for c in args.chunks.split(",")]

    def ours(vectorize: bool, chunk: int) -> list[float]:
        r = interpolate(a, b, {"test": test}, alphas, "recompute", splits.train,
                        args.calibration, args.batch_size, chunk, vectorize)  # fmt: skip
        return r["splits"]["test"]["loss"]

    strategies = {"plain": lambda: plain(a, b, alphas, calib, test, args.batch_size), "loop": lambda: ours(False, 1)}
    strategies.update({f"vmap-{c}": (lambda c=c: ours(True, c)) for c in chunks})
    times: dict[str, list[float]] = {k: [] for k in strategies}
    results: dict[str, list[float]] = {}
    load = []
    for _ in range(args.repeats):
        for name, fn in strategies.items():
            load.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    ref = np.array(results["plain"])
    diffs = {k: float(np.abs(np.array(v) - ref).max()) for k, v in results.items()}

    shape = splits.train.shape
    t0 = time.perf_counter()
    ours_s = [s.singular_values for s in layer_spectra(a, shape) if s.kind == "conv"]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_s = numpy_spectra(a, shape)
    t_np = time.perf_counter() - t0
    spec_diff = max(float(np.abs(o.numpy() - r).max()) for o, r in zip(ours_s, ref_s))

    payload = {
        "benchmark": "diagnostics",
        "args": vars(args),
        "environment": environment("cpu"),
        "load_average_during": load,
        "interpolation_seconds": best,
        "interpolation_speedup_vs_plain": {k: best["plain"] / v for k, v in best.items()},
        "interpolation_max_abs_loss_difference_vs_plain": diffs,
        "spectra_seconds": {"ours_torch": t_ours, "reference_numpy": t_np},
        "spectra_max_abs_difference": spec_diff,
    }
    path = write_json(args.name, payload)
    shown = ", ".join(f"{k} {v:.1f}s ({best['plain'] / v:.2f}x)" for k, v in best.items())
    print(f"interpolation ({args.model}, {args.alphas} alphas, {args.samples}+{args.calibration} images): {shown}")
    print(f"max |loss - plain| {max(diffs.values()):.2e}; spectra torch {t_ours:.2f}s vs numpy {t_np:.2f}s "
          f"(max diff {spec_diff:.1e}); -> {path}")  # fmt: skip


if __name__ == "__main__":
    main()
