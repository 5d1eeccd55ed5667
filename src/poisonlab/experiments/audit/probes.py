"""Audit probes: one per threat the audit measures, each a set of independent trials per defense.

A probe says how many trials each budget gets and with which parameters, runs one trial as a pure function
of a JSON spec (so any executor can run it), and reduces its rows to headline numbers with intervals.
New attacks join the audit by registering a probe here (``@PROBES.register``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from poisonlab.registry import Registry

Budget = Literal["quick", "standard", "full"]
BUDGETS: tuple[str, ...] = ("quick", "standard", "full")


@dataclass(frozen=True)
class Headline:
    """The number a probe is judged by: ``metric`` in each row, higher = the attack does better."""

    metric: str
    label: str
    kind: Literal["proportion", "mean"] = "mean"
    successes: str | None = None  # for proportions pooled over trials: the count and total fields
    total: str | None = None
    rate: bool = True  # a value in [0, 1] (plotted on the trade-off chart); False for dB, bits, ...


class Probe:
    """Base class. Subclasses set ``name``, ``title``, ``headline``, ``plans`` and the trial function path."""

    name: str = ""
    title: str = ""
    threat: str = ""
    headline: Headline = Headline("", "")
    fn: str = ""  # "module:function" running one trial
    plans: dict[str, dict[str, Any]] = {}
    defended: bool = True  # False: the probe ignores training defenses (runs under "none" only)
    seconds: dict[str, float] = {}  # rough wall time of one trial per budget on 2 cores (for the ETA)
    picture: str = ""  # meta key under which a trial row names its PNG for the report ("" = none)

    def plan(self, budget: str) -> dict[str, Any]:
        """``{"trials": n, **params}`` for a budget."""
        return dict(self.plans[budget])

    def supports(self, defense: Any) -> bool:
        """Whether this probe can be measured under ``defense`` (a DefensePreset)."""
        return self.defended or defense.name == "none"

    def figures(self, entry: dict[str, Any], workdir: Any) -> list[tuple[str, bytes]]:
        """(caption, PNG) pictures for the report, from the probe's summarised ``entry``: by default the first
        trial's ``meta[picture]`` with :meth:`caption`."""
        found = self.first_picture(entry, self.picture) if self.picture else None
        if found is None:
            return []
        row, png = found
        return [(self.caption(row), png)]

    def caption(self, row: dict[str, Any]) -> str:
        """The report caption of trial ``row``'s picture."""
        return f"trial {row['key']}"

    @staticmethod
    def first_picture(entry: dict[str, Any], meta_key: str) -> tuple[dict[str, Any], bytes] | None:
        """The first trial row (over all defenses) whose ``meta[meta_key]`` names an existing PNG, with its bytes."""
        for d in entry["defenses"].values():
            for row in d["rows"]:
                png = Path(row["meta"].get(meta_key, ""))
                if png.is_file():
                    return row, png.read_bytes()
        return None

    def available(self) -> str | None:
        """None when the probe can run here, else why not (a missing optional package, say)."""
        return None

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Reduce a defense's rows (``{"metrics", "meta", "seed"}``) to ``{metric: interval}``."""
        from poisonlab.experiments.audit.summary import summarize_rows

        return summarize_rows(rows, self.headline)


PROBES: Registry[Probe] = Registry("audit probe")


def register(probe: Probe) -> Probe:
    PROBES.register(probe.name)(probe)
    return probe


def load_probes() -> None:
    """Import the modules that register probes (nothing runs at import time elsewhere)."""
    from poisonlab.experiments.audit import (  # noqa: F401
        probe_backdoor,
        probe_clean,
        probe_federated,
        probe_inversion,
        probe_membership,
        probe_targeted,
    )
