"""The `mad-loop` job: one unit is one generation of every seed (see `gentool.core.mad.simulation`).

Outputs besides the run contract's: `summary.csv` (per generation and metric over seeds: mean, std, standard error,
95% CI, median and 5/25/75/95 % quantiles), `metrics.png` (mean with its 95% CI and median with its 25-75 % band;
every closed form that applies, dashed and named; log or symmetric-log axes where a metric spans decades) and
`snapshots.png` (first seed's samples at the first, middle and last generation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.io import atomic_write_text
from gentool.core.mad.closed_forms import closed_form_curves
from gentool.core.mad.config import MadConfig
from gentool.core.mad.simulation import Simulation
from gentool.core.mad.summary import summarize, summary_csv
from gentool.core.progress import Reports, one_step
from gentool.core.run.contract import JobSpec, Row
from gentool.core.run.rundir import read_snapshot, snapshot_path

HEADLINE = ("w2_gauss", "recall", "trace_cov", "det_ratio", "modes", "test_error")
DECADES = 2.0


class MadJob(Reports):
    """`generations` units; state: the training sets of every seed and the first seed's last sample."""

    command = "mad-loop"
    hint = "the fitted models degenerated (a collapsed covariance or bandwidth): raise lam, bandwidth or n_synth"
    snapshot_every = 1

    def __init__(self, config: MadConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.sim = Simulation(config, self.seed, self.device)
        self._first: torch.Tensor | None = None

    @property
    def units_total(self) -> int:
        return self.config.generations

    @property
    def units_done(self) -> int:
        return self.sim.generation

    @property
    def done(self) -> bool:
        return self.units_done >= self.units_total

    def advance(self) -> list[Row]:
        rows, self._first = self.sim.step()
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {**self.sim.state_dict(), "first": self._first}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sim.load_state_dict(state)
        self._first = state.get("first")

    def samples(self) -> dict[str, Any] | None:
        return None if self._first is None else {"x": self._first.float()}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        with one_step(self.progress, "summary over seeds"):
            atomic_write_text(out / "summary.csv", summary_csv(rows))
        if plots_on:
            with one_step(self.progress, "figures"):
                self._plots(out, rows)
        last = [r for r in rows if r["generation"] == self.units_total]
        return {k: float(np.mean([r[k] for r in last if k in r])) for k in HEADLINE if any(k in r for r in last)}

    def _plots(self, out: Path, rows: list[Row]) -> None:
        cfg = self.config
        summary = summarize(rows)
        keys = sorted({s["metric"] for s in summary} - {"n_train"})
        curves = closed_form_curves(cfg)
        counts = {k: max(s["count"] for s in summary if s["metric"] == k) for k in keys}
        if max(counts.values(), default=1) > 1:
            series = {"mean ± 95% CI": [_band(s, "mean", "ci95_low", "ci95_high") for s in summary],
                      "median (25-75%)": [_band(s, "median", "q25", "q75") for s in summary]}
        else:
            series = {"one seed": [{"generation": s["generation"], s["metric"]: s["mean"]} for s in summary]}
        titles = {k: f"{k} ({'one seed' if n == 1 else f'over {n} seeds'})" for k, n in counts.items()}
        plots.curves(out / "metrics.png", series, "generation", keys, log_keys=_decade_keys(summary),
                     overlay={k: c.values for k, c in curves.items()},
                     overlay_labels={k: c.label for k, c in curves.items()}, titles=titles)
        picks = sorted({1, (cfg.generations + 1) // 2, cfg.generations})
        panels = [(f"generation {t}", read_snapshot(out, t)["x"]) for t in picks
                  if snapshot_path(out, t).is_file()]
        reference = self.sim.ref.test if cfg.d == 2 else None
        if panels:
            plots.sample_panels(out / "snapshots.png", panels, reference, reference_label="real test data")


def _band(s: dict[str, Any], centre: str, low: str, high: str) -> dict[str, Any]:
    """A summary row as a plottable point: its `centre` statistic with the band [`low`, `high`]."""
    k = s["metric"]
    return {"metric": k, "generation": s["generation"], k: s[centre], f"{k}_low": s[low], f"{k}_high": s[high]}


def _decade_keys(summary: list[dict[str, Any]]) -> list[str]:
    """Positive metrics whose means and medians span more than `DECADES` decades (drawn on a log axis)."""
    spans: dict[str, list[float]] = {}
    for s in summary:
        spans.setdefault(s["metric"], []).extend(s[c] for c in ("mean", "median"))
    return [k for k, v in spans.items() if len(v) > 1 and min(v) > 0 and np.log10(max(v) / min(v)) > DECADES]


def build(config: MadConfig, seed: int, device: torch.device) -> MadJob:
    return MadJob(config, seed, device)


SPEC = JobSpec("mad-loop", MadConfig, build,
               "Self-consuming loop: refit a model family on its own samples and track the drift.")
