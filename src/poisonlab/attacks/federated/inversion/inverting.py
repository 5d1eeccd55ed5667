"""Inverting Gradients: cosine gradient matching with a TV prior, signed Adam, box constraints and restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.func import grad_and_value, vmap

from poisonlab.attacks.federated.inversion.base import GradientInversion, labels_for
from poisonlab.attacks.federated.inversion.client import update_simulator
from poisonlab.attacks.federated.inversion.config import InvertConfig
from poisonlab.attacks.federated.inversion.messages import ClientUpdate, ServerPayload
from poisonlab.attacks.federated.inversion.objectives import COSTS, total_variation
from poisonlab.attacks.federated.inversion.reconstruction import Reconstruction
from poisonlab.attacks.poisoning.signed_adam import SignedAdam, step_decay
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.io import Checkpointer
from poisonlab.rng import SeedTree
from poisonlab.utils.progress import progress_bar

Objective = Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]


class InvertingGradients(GradientInversion):
    """Inverting Gradients (Geiping, Bauermeister, Droege & Moeller, NeurIPS 2020): find images whose
    simulated update has the highest cosine similarity with the observed one, over all layers, plus a
    total-variation prior; Adam on the sign of the image gradient with x0.1 step decay at 3/8, 5/8 and 7/8,
    projection onto the pixel box after each step, R restarts of which the lowest matching cost is kept.
    For a FedAvg delta the client's local SGD steps are unrolled and differentiated through
    (``JonasGeiping/invertinggradients`` ``FedAvgReconstructor``). Labels: shared, or recovered from the last
    layer (iDLG for one image, the bias-sign rule for batches).

    Threat model: honest-but-curious server; knows the architecture and parameters it sent and receives one
    client's update (gradient, or weight delta after local steps) with its public metadata, never its data.

    Working units: the image is kept in pixel space [0, 1] and the model's input normalisation stays inside the
    model. Adam sees only signs, so stepping ``lr * std`` per channel in pixel space is exactly the reference's
    step of ``lr`` in normalised space; the TV prior is taken of the normalised image, as in the reference.

    Args:
        config: settings (see :class:`InvertConfig`); ``attack`` is ignored here.
        seed: root seed; update ``i`` of a call draws its initialisation from ``seed/update-i/init``.
        checkpointer: save/resume the optimisation state every ``checkpoint_every`` iterations.
        should_stop: polled every iteration; when True, a checkpoint is written and Interrupted raised.
        progress: show a progress bar on a TTY.
    """

    def __init__(
        self,
        config: InvertConfig | None = None,
        seed: int = 0,
        checkpointer: Checkpointer | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config or InvertConfig()
        self.seed = seed
        self.checkpointer = checkpointer
        self.should_stop = should_stop or (lambda: False)
        self.progress = progress

    def reconstruct(self, payload: ServerPayload, update: ClientUpdate) -> Reconstruction:
        return self.reconstruct_many(payload, [update])[0]

    def reconstruct_many(self, payload: ServerPayload, updates: list[ClientUpdate]) -> list[Reconstruction]:
        """Reconstruct several clients' updates at once: all (update, restart) pairs form one vmapped stack.

        The result for each update is the same as reconstructing it alone (same seeds, same arithmetic
        per candidate); only the wall time differs.
        """
        cfg = self.config
        _check_updates(payload, updates)
        iterations, lr, tv = int(cfg.resolved("iterations")), float(cfg.resolved("lr")), float(cfg.resolved("tv"))
        cost_fn = COSTS[cfg.resolved("cost")]
        t_count, r_count = len(updates), cfg.restarts
        labels, sources = zip(*(labels_for(payload, u, cfg.labels) for u in updates))
        mean, std = payload.normalisation()
        names = list(payload.parameters)
        # one row per (update, restart) candidate
        y = torch.stack(labels).repeat_interleave(r_count, dim=0)
        target = [torch.stack([u.tensors[k] for u in updates]).repeat_interleave(r_count, dim=0) for k in names]
        x = torch.cat([self.initial_images(payload, i, u.num_images, mean, std) for i, u in enumerate(updates)])
        simulate = update_simulator(payload, updates[0])

        def objective(xc: torch.Tensor, tg: list[torch.Tensor], yc: torch.Tensor):
            g = simulate(xc, yc)
            cost = cost_fn([g[k] for k in names], tg)
            total = cost + tv * total_variation((xc - mean) / std) if tv > 0 else cost
            return total, (total, cost)

        step_fn = self._batched(grad_and_value(objective, has_aux=True), len(x))
        adam = SignedAdam(lr, scale=std) if cfg.signed else _PlainAdam(lr, std)
        start, history = 0, []
        state = self.checkpointer.load_latest() if self.checkpointer is not None else None
        if state is not None:
            x, start, history = state["x"], int(state["iteration"]), list(state["history"])
            adam.load_state_dict(state["adam"])
        record_every = max(1, iterations // 50)
        t0 = time.perf_counter()
        with progress_bar(iterations, "invert", self.progress, initial=start) as bar:
            for it in range(start, iterations):
                gx, (_, (total, cost)) = step_fn(x, target, y)
                x = adam.step(x, gx, step_decay(it, iterations, cfg.lr_decay))
                if cfg.boxed:
                    x = x.clamp(0, 1)
                if it % record_every == 0 or it == iterations - 1:
                    history.append([it, *cost.tolist()])
                bar.update(1)
                done = it + 1
                if self.checkpointer is not None and (done % cfg.checkpoint_every == 0 or self.should_stop()):
                    self.checkpointer.save(
                        done, {"x": x, "iteration": done, "adam": adam.state_dict(), "history": history}
                    )
                if self.should_stop() and done < iterations:
                    raise Interrupted(f"gradient inversion stopped at iteration {done} of {iterations}")
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            _, (_, (_, final_cost)) = self._batched(objective_value(objective), len(x))(x, target, y)
        scores = torch.where(final_cost.isfinite(), final_cost, torch.full_like(final_cost, float("inf")))
        scores = scores.reshape(t_count, r_count)
        pixels = x.clamp(0, 1).reshape(t_count, r_count, *x.shape[1:])
        meta: dict[str, Any] = {
            "attack": "inverting-gradients",
            "iterations": iterations,
            "lr": lr,
            "tv": tv,
            "cost": cfg.resolved("cost"),
            "restarts": r_count,
            "signed": cfg.signed,
            "boxed": cfg.boxed,
            "lr_decay": cfg.lr_decay,
            "update_kind": updates[0].kind,
            "local_steps": updates[0].local_steps,
            "seconds": seconds,
            "candidates_stacked": len(x),
            "iterations_per_second": (iterations - start) / seconds if seconds > 0 else None,
        }
        out = []
        for i in range(t_count):
            best = int(scores[i].argmin())
            hist = [[row[0], row[1 + i * r_count + best]] for row in history]
            out.append(
                Reconstruction(
                    pixels[i, best].detach().clone(),
                    labels[i].clone(),
                    sources[i],
                    float(scores[i, best]),
                    scores[i].detach().clone(),
                    {**meta, "seed": self.seed, "update_index": i, "best_restart": best, "history": hist},
                )
            )
        return out

    def initial_images(
        self, payload: ServerPayload, index: int, n: int, mean: torch.Tensor, std: torch.Tensor
    ) -> torch.Tensor:
        """(R, B, C, H, W) starting images in pixel space: the reference's draw in normalised units, mapped back."""
        cfg = self.config
        gen = SeedTree(self.seed).child(f"update-{index}").generator("init")
        shape = (cfg.restarts, n, *payload.data_shape)
        if cfg.init == "randn":
            z = torch.randn(shape, generator=gen)
        elif cfg.init == "rand":
            z = torch.rand(shape, generator=gen) * 2 - 1
        else:
            z = torch.zeros(shape)
        return mean + std * z.to(payload.device)

    def _batched(self, fn: Objective, count: int) -> Objective:
        """``fn`` mapped over the leading candidate axis: vmapped, or a loop over candidates."""
        if self.config.vectorize and count > 1:
            return vmap(fn, in_dims=(0, 0, 0))

        def looped(x: torch.Tensor, target: list[torch.Tensor], y: torch.Tensor):
            outs = [fn(x[i], [t[i] for t in target], y[i]) for i in range(len(x))]
            return torch.utils._pytree.tree_map(lambda *v: torch.stack(v), *outs)

        return looped


def objective_value(objective: Callable) -> Callable:
    """The objective without its gradient, shaped like ``grad_and_value``'s output (for scoring)."""

    def fn(x: torch.Tensor, target: list[torch.Tensor], y: torch.Tensor):
        total, aux = objective(x, target, y)
        return torch.zeros_like(x), (total, aux)

    return fn


def _check_updates(payload: ServerPayload, updates: list[ClientUpdate]) -> None:
    if not updates:
        raise ConfigError("updates: expected at least one client update")
    first = updates[0]
    for u in updates:
        u.check_against(payload)
        same = (u.kind, u.num_images, u.local_steps, u.local_lr, u.images_per_step)
        if same != (first.kind, first.num_images, first.local_steps, first.local_lr, first.images_per_step):
            raise ConfigError("updates: reconstruct_many needs updates of one kind, size and local schedule")


class _PlainAdam:
    """Adam without the sign (``signed=False``), stepping in normalised units like the reference."""

    def __init__(self, lr: float, std: torch.Tensor) -> None:
        self.inner = SignedAdam(lr, scale=std)

    def step(self, param: torch.Tensor, grad: torch.Tensor, lr_factor: float = 1.0) -> torch.Tensor:
        inner = self.inner
        b1, b2 = inner.betas
        g = grad * inner.scale  # pixel-space gradient -> normalised-space gradient
        if inner.exp_avg is None or inner.exp_avg_sq is None:
            inner.exp_avg, inner.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        inner.t += 1
        inner.exp_avg.lerp_(g, 1 - b1)
        inner.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = inner.lr * lr_factor / (1 - b1**inner.t)
        denom = (inner.exp_avg_sq.sqrt() / (1 - b2**inner.t) ** 0.5).add_(inner.eps)
        return param - step * inner.scale * (inner.exp_avg / denom)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
