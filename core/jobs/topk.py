"""The `optimize topk` job: one smooth Top-k map (SPEC §4b) applied to a score vector x.

One unit computes `p = map(x, k, τ)` (x in float64 on the job's device). Outputs `result.json` (`p`, `k`,
`tau`, `map`, `sum`) and `topk.png`: every map's p_i against τ (log axis, `FIGURE_TAUS` values from
τ/`TAU_SPAN` to τ·`TAU_SPAN`) for up to `PANELS` entries (all when n ≤ `PANELS`, else those ranked around the
k-th largest). The summary line shows p when n ≤ `SHOW_P`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.config import float64_tensor, setting, vector_parser
from gentool.core.errors import choose
from gentool.core.io import atomic_write_json
from gentool.core.probspace.topk import TOPK_MAPS, check_topk, smooth_topk
from gentool.core.progress import Reports, one_step
from gentool.core.run.contract import JobSpec, Row

SHOW_P = 10
PANELS = 8
TAU_SPAN = 1e3
FIGURE_TAUS = 61


SMOOTH_MAPS = tuple(name for name in TOPK_MAPS if name != "hard")  # the maps with a temperature


@dataclass(frozen=True)
class TopkConfig:
    """A smooth Top-k map of a score vector x."""

    x: tuple[float, ...] = setting((3.0, 2.0, 1.0, 4.0), "Scores x: '3,2,1,4' or a .npy/.npz/.csv/.txt file "
                                   "(FILE.npz:NAME picks one array).", parse=vector_parser("x"), metavar="VECTOR")
    k: int = setting(2, "How many entries to select: an integer in [1, n - 1].")
    map: str = setting("threshold", "Top-k map: threshold (sigmoid((x - lambda)/tau), sum k), entropic (binary-"
                       "entropy regularised, equal to threshold), sparse (projection of x/tau onto the capped "
                       "simplex), hard (the k largest, ties to the lower index).", choices=tuple(TOPK_MAPS))
    tau: float = setting(0.1, "Temperature tau > 0 of the smooth maps; the figure spans tau/1000 to tau*1000.",
                         applies={"map": SMOOTH_MAPS})

    def __post_init__(self) -> None:
        choose("map", self.map, TOPK_MAPS)
        check_topk(float64_tensor(self.x), self.k, self.tau)


class TopkJob(Reports):
    """State: p once computed (one unit)."""

    command = "optimize topk"

    def __init__(self, config: TopkConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.p: torch.Tensor | None = None

    @property
    def units_total(self) -> int:
        return 1

    @property
    def units_done(self) -> int:
        return int(self.p is not None)

    @property
    def done(self) -> bool:
        return self.p is not None

    def x(self) -> torch.Tensor:
        return torch.tensor(self.config.x, dtype=torch.float64, device=self.device)

    def advance(self) -> list[Row]:
        c = self.config
        self.p = smooth_topk(self.x(), c.k, c.tau, c.map).cpu()
        return [{"map": c.map, "tau": c.tau, "sum": float(self.p.sum()), "min": float(self.p.min()),
                 "max": float(self.p.max())}]

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = state["p"]

    def samples(self) -> dict[str, Any] | None:
        return None if self.p is None else {"p": self.p}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        c, p = self.config, self.p
        total = float(p.sum())
        atomic_write_json(out / "result.json", {"p": p.tolist(), "k": c.k, "tau": c.tau, "map": c.map, "sum": total})
        if plots_on:
            with one_step(self.progress, "figure"):
                self.figure(out / "topk.png")
        summary: Row = {"map": c.map, "k": c.k, "tau": c.tau, "sum": total}
        return summary | ({"p": ", ".join(f"{v:.6g}" for v in p.tolist())} if p.numel() <= SHOW_P else {})

    def figure(self, path: Path) -> None:
        """Every map's p_i against τ around the chosen τ."""
        c, x = self.config, self.x()
        taus = np.geomspace(c.tau / TAU_SPAN, c.tau * TAU_SPAN, FIGURE_TAUS)
        paths = {name: torch.stack([m(x, c.k, float(t)) for t in taus]) for name, m in TOPK_MAPS.items()}
        plots.topk_paths(path, taus, paths, x, shown_entries(c.x, c.k), c.k, mark=c.tau)


def shown_entries(x: tuple[float, ...], k: int) -> list[int]:
    """The entries the figure draws: all of them when n ≤ PANELS, else the PANELS ranked around the k-th
    largest (half above it, half below), in rank order."""
    order = sorted(range(len(x)), key=lambda i: (-x[i], i))
    start = min(max(0, k - PANELS // 2), len(x) - PANELS) if len(x) > PANELS else 0
    return order[start:start + PANELS]


SPEC = JobSpec("optimize topk", TopkConfig, TopkJob,
               "Smooth Top-k of a score vector: threshold, entropic, sparse or hard; p in result.json and every "
               "map's p against tau in topk.png.")
