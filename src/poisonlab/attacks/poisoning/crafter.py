"""The common frame of a poison crafter: settings, checkpointing hooks and ``craft(task, surrogates, seeds)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from poisonlab.attacks.poisoning.config import CraftConfig
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.errors import CheckpointError, Interrupted
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.rng import SeedTree

if TYPE_CHECKING:
    from poisonlab.attacks.poisoning.gradient_matching import PoisonTask


class Crafter:
    """Base of the crafters (gradient matching, MetaPoison, feature collision).

    ``craft`` checks the surrogates, puts them in eval mode (restored afterwards) when ``eval_surrogates`` and
    runs the subclass's ``_craft`` with the "craft" branch of the seed tree.

    Args:
        config: the crafting recipe.
        checkpointer: when given, the subclass saves its state through :meth:`_save` and resumes from it.
        should_stop: polled after every step; when True the state is saved and ``Interrupted`` raised.
        on_step: called after every step with a dict of progress values (logging, tests).
        progress: show a progress bar.
    """

    name = "crafter"
    eval_surrogates = True
    resume_keys: tuple[str, ...] = ()  # what a checkpoint's in-progress restart must hold to be resumed

    def __init__(
        self,
        config: CraftConfig,
        checkpointer: Checkpointer | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config
        self.checkpointer = checkpointer
        self.should_stop = should_stop or (lambda: False)
        self.on_step = on_step
        self.progress = progress

    def craft(self, task: PoisonTask, surrogates: Sequence[nn.Module], seeds: SeedTree) -> PoisonSet:
        """Run all restarts (resuming if a checkpoint exists) and return the best poisons."""
        if not surrogates:
            raise ValueError("craft needs at least one surrogate model")
        self._check(task, surrogates)
        if not self.eval_surrogates:
            return self._craft(task, list(surrogates), seeds.child("craft"))
        modes = [m.training for m in surrogates]
        for m in surrogates:
            m.eval()
        try:
            return self._craft(task, list(surrogates), seeds.child("craft"))
        finally:
            for m, mode in zip(surrogates, modes):
                m.train(mode)

    def _check(self, task: PoisonTask, surrogates: Sequence[nn.Module]) -> None:
        """Refuse an unusable setting before any work (subclasses override)."""

    def _craft(self, task: PoisonTask, surrogates: list[nn.Module], seeds: SeedTree) -> PoisonSet:
        raise NotImplementedError

    def _save(self, state: dict[str, Any]) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(state["restart"] * self.config.steps + state["step"], state)

    # ------------------------------------------------------------------ the restart loop's shared state
    def _initial_state(self, ids: torch.Tensor) -> dict[str, Any]:
        """A fresh restart-loop state for poisons ``ids``, or the newest checkpoint's, after checking that it
        was written by this recipe for these ids (and that its in-progress restart holds ``resume_keys``)."""
        fresh = {
            "recipe": self.name,
            "poison_ids": ids,
            "restart": 0,
            "step": 0,
            "scores": [],
            "best": None,
            "current": None,
        }
        state = None if self.checkpointer is None else self.checkpointer.load_latest()
        if state is None:
            return fresh
        try:
            if state.get("recipe", self.name) != self.name:
                raise ValueError(f"the checkpoint is of recipe {state.get('recipe')!r}")
            if not torch.equal(state["poison_ids"], ids):
                raise ValueError("the checkpoint was crafted for other poison ids")
            state["scores"] = [float(v) for v in state["scores"]]
            int(state["restart"]), int(state["step"])
            if state["current"] is not None:
                _ = [state["current"][k] for k in self.resume_keys]
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{self.checkpointer.root}: cannot resume crafting ({err})") from None
        return state

    def _after_step(self, state: dict[str, Any], restart: int, step: int) -> None:
        """Stop (saving first) when asked to, and checkpoint every ``checkpoint_every`` steps."""
        if self.should_stop():
            self._save(state)
            raise Interrupted(f"crafting stopped at restart {restart} step {step + 1}; checkpoint saved")
        if (step + 1) % self.config.checkpoint_every == 0 and step + 1 < self.config.steps:
            self._save(state)

    def _end_restart(self, state: dict[str, Any], delta: torch.Tensor, loss: float, **extra: Any) -> None:
        """Score the finished restart by ``loss``, keep it if it is the best so far, and move to the next."""
        r = state["restart"]
        state["scores"].append(loss)
        if state["best"] is None or loss < state["best"]["loss"]:
            state["best"] = {"delta": delta.cpu(), "loss": loss, "restart": r, **extra}
        state.update(restart=r + 1, step=0, current=None)
        self._save(state)

    def _best_poisons(
        self, task: PoisonTask, state: dict[str, Any], seeds: SeedTree, ensemble: int, **meta: Any
    ) -> PoisonSet:
        """The best restart's poisons, with the recipe's settings and every restart's score."""
        best = state["best"]
        return PoisonSet(
            poison_ids=state["poison_ids"].cpu(),
            deltas=best["delta"].cpu().float().contiguous(),
            target_ids=task.targets.ids.cpu(),
            adv_class=int(task.adv_class),
            eps=float(self.config.eps),
            recipe=self.name,
            seeds=seeds.record(),
            restart_losses=tuple(float(v) for v in state["scores"]),
            meta={"best_restart": int(best["restart"]), "steps": self.config.steps, "ensemble": ensemble, **meta},
        )
