"""A self-consuming loop in memory: generations × seeds of fit → sample → next training set (no files).

Generation 1 fits on a real draw; generation t+1 fits from scratch on the training set the loop builds from
generation t's samples. Seed id k (= base seed + index) draws everything from `generation_rng(k, t, stream)`,
so its numbers do not depend on the other seeds. The vectorised Gaussian family runs all seeds as one batch;
the other families run one seed at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.mad.config import SAMPLE_METRICS, MadConfig
from gentool.core.mad.families import family_from_config
from gentool.core.mad.loops import next_training_set
from gentool.core.mad.metrics import cheap_metrics, metric_names, sample_metrics
from gentool.core.mad.reference import STREAMS, generation_rng, make_reference, sample_real, seed_rngs


@dataclass
class Group:
    """Seeds processed together: their ids, fixed real sets and current training sets `(S, n, d)`."""

    seed_ids: list[int]
    real: torch.Tensor
    train: torch.Tensor


class Simulation:
    """The state of a loop between generations; `step()` runs the next generation."""

    def __init__(self, cfg: MadConfig, seed: int, device: torch.device | str = "cpu") -> None:
        self.cfg, self.seed = cfg, int(seed)
        self.family = family_from_config(cfg, str(device))
        self.ref = make_reference(cfg.data, cfg.dim, cfg.n_test)
        ids = [self.seed + i for i in range(cfg.seeds)]
        blocks = [ids] if self.family.vectorised else [[i] for i in ids]
        self.groups = []
        for block in blocks:
            real = sample_real(cfg.data, cfg.dim, cfg.n_real, seed_rngs(block, 0))
            self.groups.append(Group(block, real, real))
        self.generation = 0

    def _metric_limit(self) -> int:
        """Seeds (by index) that get the sample metrics: all for one-seed families, `metric_seeds` for the
        vectorised Gaussian family when metrics were asked for."""
        if not self.family.vectorised:
            return self.cfg.seeds
        return self.cfg.metric_seeds if self.cfg.metrics is not None else 0

    def _step_group(self, group: Group, t: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
        cfg = self.cfg
        gens = seed_rngs(group.seed_ids, t)
        model = self.family.fit(group.train, gens)
        synth = self.family.sample(model, cfg.n_synth, cfg.lam, gens)
        cheap = cheap_metrics(self.family, model, synth, self.ref)
        names = metric_names(cfg.metrics, SAMPLE_METRICS, cfg.n_synth)
        rows = []
        for i, sid in enumerate(group.seed_ids):
            row: dict[str, Any] = {"seed": sid, "generation": t, "n_train": int(group.train.shape[1])}
            row.update({k: v[i] for k, v in cheap.items()})
            if names and sid - self.seed < self._metric_limit():
                rng = generation_rng(sid, t, STREAMS["metrics"])
                row.update(sample_metrics(synth[i], self.ref, names, rng))
            rows.append(row)
        fresh = (sample_real(cfg.data, cfg.dim, cfg.n_real, seed_rngs(group.seed_ids, t, "fresh"))
                 if cfg.loop == "fresh" else None)
        group.train = next_training_set(cfg.loop, group.train, group.real, synth, fresh,
                                        real_fraction=cfg.real_fraction, budget=cfg.budget, gens=gens)
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
        return {"generation": self.generation, "train": [g.train for g in self.groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["train"]) != len(self.groups):
            raise ValueError("state does not match this loop's seeds")
        for group, train in zip(self.groups, state["train"], strict=True):
            group.train = train
        self.generation = int(state["generation"])
