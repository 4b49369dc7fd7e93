"""A self-consuming loop in memory: generations × seeds of fit → sample → next training set (no files).

Generation 1 fits on `n_real(1)` real points; generation t fits on the data the loop kept after generation t − 1
(`gentool.core.mad.loops`), from scratch or, with warm start, from the previous model. Seed id k (= base seed +
index) draws everything from `generation_rng(k, t, stream)`, so its numbers do not depend on the other seeds.
The vectorised families (Gaussian, linear regression) run all seeds as one batch; the others one seed at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from gentool.core.io import check_allocation
from gentool.core.mad.config import SAMPLE_METRICS, MadConfig
from gentool.core.mad.families import Context, family_from_config
from gentool.core.mad.loops import Step
from gentool.core.mad.metrics import cheap_metrics, metric_names, sample_metrics
from gentool.core.mad.reference import STREAMS, generation_rng, make_reference, real_data, seed_rngs
from gentool.core.metrics.wasserstein import exact_w2_bytes

LIVE_COPIES = 4  # (S, n, d) tensors alive at once per kept set: the data, the fit set, the new sample, their union
ACCUMULATING = ("accumulate", "accumulate-subsample")  # loops whose kept data grows by n_synth every generation


def simulation_bytes(cfg: MadConfig, dim: int, vectorised: bool) -> float:
    """Estimated peak bytes of a loop (float64): per block of seeds (all seeds for the vectorised families, else
    one), `LIVE_COPIES · N · d` for the N points kept (n_real plus the synthetic part: every generation's n_synth
    in the accumulating loops, budget for reservoir, from_previous × n_synth otherwise) plus the family's d × d
    matrices (four per seed; gmm: two per component), the n_test held-out points twice, and the exact_w2 metric's
    n_test × n_synth cost matrix (`exact_w2_bytes`) where asked for."""
    plan = cfg.plan
    if cfg.loop in ACCUMULATING:
        synthetic = sum(plan.n_synth)
    elif cfg.loop == "reservoir":
        synthetic = cfg.budget or 0
    else:
        synthetic = cfg.from_previous * max(plan.n_synth)
    block = cfg.seeds if vectorised else 1
    matrices = 2 * cfg.components if cfg.family == "gmm" else 4
    w2 = exact_w2_bytes(cfg.n_test, max(plan.n_synth)) if "exact_w2" in (cfg.metrics or ()) else 0.0
    return 8.0 * (block * (LIVE_COPIES * (max(plan.n_real) + synthetic) * dim + matrices * dim * dim)
                  + 2 * cfg.n_test * dim) + w2


@dataclass
class Group:
    """Seeds processed together: their ids, fixed real set, the data the loop keeps `(S, n, d)`, the most recent
    synthetic samples (for `from_previous`) and, with warm start, the last fitted model."""

    seed_ids: list[int]
    real: torch.Tensor
    data: torch.Tensor
    recent: list[torch.Tensor] = field(default_factory=list)
    model: Any = None


class Simulation:
    """The state of a loop between generations; `step()` runs the next generation."""

    def __init__(self, cfg: MadConfig, seed: int, device: torch.device | str = "cpu") -> None:
        self.cfg, self.seed = cfg, int(seed)
        self.family = family_from_config(cfg, str(device))
        self.real = real_data(cfg)
        dim = int(self.real.sample(1, seed_rngs([0], 0)).shape[-1])
        check_allocation(simulation_bytes(cfg, dim, self.family.vectorised), f"mad-loop (seeds={cfg.seeds}, "
                         f"n_real={cfg.n_real}, n_synth={cfg.n_synth}, generations={cfg.generations}, loop={cfg.loop}, "
                         f"dim {dim})", device)
        self.ref = make_reference(self.real, cfg.n_test)
        self.kind = cfg.loop_kind
        plan = cfg.plan
        n_fixed = max(plan.n_real) if cfg.loop == "augment" else plan.n_real[0]
        ids = [self.seed + i for i in range(cfg.seeds)]
        blocks = [ids] if self.family.vectorised else [[i] for i in ids]
        self.groups = []
        for block in blocks:
            real = self.real.sample(n_fixed, seed_rngs(block, 0))
            self.groups.append(Group(block, real, real[:, :plan.n_real[0]]))
        self.generation = 0

    def _metric_limit(self) -> int:
        """Seeds (by index) that get the sample metrics: all for one-seed families, `metric_seeds` for the
        vectorised families when metrics were asked for."""
        if not self.family.vectorised:
            return self.cfg.seeds
        return self.cfg.metric_seeds if self.cfg.metrics is not None else 0

    def _fit(self, group: Group, t: int, gens: list[torch.Generator]) -> tuple[Any, torch.Tensor]:
        """Generation t's model and the training set it was fitted on."""
        budget = self.cfg.budget or self.cfg.plan.n_real[0]
        train = self.kind.fit_set(group.data, budget, seed_rngs(group.seed_ids, t, "subsample"))
        context = Context(real=group.real[:, :self.cfg.plan.n_real[0]], previous=group.model)
        return self.family.fit(train, gens, context), train

    def _keep(self, group: Group, t: int, synth: torch.Tensor, model: Any, gens: list[torch.Generator]) -> None:
        """Build the data kept for generation t + 1."""
        cfg, plan = self.cfg, self.cfg.plan
        nxt = min(t, cfg.generations - 1)  # index of generation t + 1 (the last generation reuses its own)
        group.recent = (group.recent + [synth])[-cfg.from_previous:]
        real = group.real[:, :plan.n_real[nxt]]
        if cfg.loop == "fresh":
            real = self.real.sample(plan.n_real[nxt], seed_rngs(group.seed_ids, t, "fresh"))
        step = Step(torch.cat(group.recent, dim=1), real, plan.real_fraction[nxt], cfg.budget, gens)
        group.data = self.kind.kept(group.data, step)
        group.model = model if getattr(self.family, "warm_start", False) else None  # only these families reuse it

    def _step_group(self, group: Group, t: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
        cfg = self.cfg
        gens = seed_rngs(group.seed_ids, t)
        model, train = self._fit(group, t, gens)
        synth = self.family.sample(model, cfg.plan.n_synth[t - 1], cfg.lam, gens)
        cheap = cheap_metrics(self.family, model, synth, self.ref)
        names = () if self.ref.coef is not None else metric_names(cfg.metrics, SAMPLE_METRICS, synth.shape[1])
        rows = []
        for i, sid in enumerate(group.seed_ids):
            row: dict[str, Any] = {"seed": sid, "generation": t, "n_train": int(train.shape[1])}
            row.update({k: v[i] for k, v in cheap.items() if v[i] is not None})
            if names and sid - self.seed < self._metric_limit():
                rng = generation_rng(sid, t, STREAMS["metrics"])
                row.update(sample_metrics(synth[i], self.ref, names, rng))
            rows.append(row)
        self._keep(group, t, synth, model, gens)
        return rows, synth

    def step(self) -> tuple[list[dict[str, Any]], torch.Tensor]:
        """Run the next generation for every seed; returns its rows and the first seed's synthetic sample."""
        self.generation += 1
        rows: list[dict[str, Any]] = []
        first = None
        for group in self.groups:
            group_rows, synth = self._step_group(group, self.generation)
            rows += group_rows
            first = synth[0] if first is None else first
        return rows, first

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain data only (warm-start models as the family's `model_state`), so a run directory's
        state loads with `weights_only=True`."""
        models = [None if g.model is None else self.family.model_state(g.model) for g in self.groups]
        return {"generation": self.generation, "data": [g.data for g in self.groups],
                "recent": [g.recent for g in self.groups], "model": models}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["data"]) != len(self.groups):
            raise ValueError("state does not match this loop's seeds")
        for group, data, recent, model in zip(self.groups, state["data"], state["recent"], state["model"],
                                              strict=True):
            group.data, group.recent = data, list(recent)
            group.model = None if model is None else self.family.model_from_state(model)
        self.generation = int(state["generation"])
