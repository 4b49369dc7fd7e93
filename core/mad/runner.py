"""Run a self-consuming loop for many generations and seeds, resumably.

Generation 1 fits the model on a real draw; generation t+1 fits from scratch on the training set the loop
builds from generation t's samples. The RNG of each (seed, generation) is derived from (seed, generation)
alone (`generation_rng`), so a resumed run reproduces an uninterrupted one exactly. The vectorised Gaussian
family treats all seeds as one batch whose RNG is derived from (base seed, generation).

Run directory: `config.json`, `state.pt` (last committed generation: training sets, fixed real sets),
`generations/gen_XXXXX.jsonl` (one row per seed, committed before `state.pt`), `snapshots/gen_XXXXX.npz`
(seed 0's synthetic sample), and at the end `metrics.jsonl` and `summary.csv`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core.data import DATASETS, sample_data
from gentool.core.errors import choose, require
from gentool.core.io import atomic_save_npz, atomic_torch_save, atomic_write_text, read_jsonl
from gentool.core.mad.closed_forms import bures_w2
from gentool.core.mad.families import FAMILIES, make_family
from gentool.core.mad.loops import LOOPS, next_training_set, real_count
from gentool.core.progress import Progress, no_progress

DATA = ("gaussian", *DATASETS)
SAMPLE_METRICS = ("sliced_w2", "mmd2", "precision", "recall", "density", "coverage", "frechet")
CHEAP_METRICS = ("w2_gauss", "mean_error", "trace_cov", "logdet_cov", "nll")


@dataclass
class LoopConfig:
    """Everything that defines a run (recorded in `config.json`; a resumed run must use the same)."""

    family: str = "gaussian"
    loop: str = "fully-synthetic"
    data: str = "gaussian"
    dim: int = 2
    generations: int = 10
    seeds: int = 1
    seed: int = 0
    n_real: int = 100
    n_synth: int = 100
    real_fraction: float | None = None
    lam: float = 1.0
    budget: int | None = None
    cov: str = "unbiased"
    bandwidth: str | float = "scott"
    components: int = 8
    sampler: str = "dpmpp-2m"
    steps: int = 20
    train_steps: int = 2000
    metrics: tuple[str, ...] | None = None
    metric_seeds: int = 3
    n_test: int = 1000
    device: str = "cpu"

    def validate(self) -> None:
        """Raise `BadInput` (one line) on unknown names or out-of-range numbers."""
        choose("family", self.family, FAMILIES)
        choose("loop", self.loop, LOOPS)
        choose("data set", self.data, DATA)
        require(0 < self.lam <= 1, f"--lam must be in (0, 1], got {self.lam}")
        require(self.n_synth >= 2, f"--n-synth must be >= 2, got {self.n_synth}")
        require(self.n_real >= 2, f"--n-real must be >= 2, got {self.n_real}")
        require(self.generations >= 1 and self.seeds >= 1,
                f"--generations and --seeds must be >= 1, got {self.generations}, {self.seeds}")
        require(self.dim >= 1, f"--dim must be >= 1, got {self.dim}")
        require(self.budget is None or self.budget >= 2, f"--budget must be >= 2, got {self.budget}")
        if self.real_fraction is not None:
            f = self.real_fraction
            require(0 <= f < 1, f"--real-fraction must be in [0, 1), got {f}")
            k = real_count(self.n_real, self.n_synth, self.real_fraction)
            require(k <= self.n_real, f"--real-fraction {f} needs {k} real points > --n-real {self.n_real}")
            require(self.n_synth - k >= 1, f"--real-fraction {self.real_fraction} leaves no synthetic points")
        for name in self.metrics or ():
            choose("metric", name, (*SAMPLE_METRICS, "exact_w2", "energy"))
        require(self.family != "gaussian" or self.n_synth >= 2, "gaussian family needs n_synth >= 2")
        make_family(self.family, cov=self.cov, components=self.components, bandwidth=self.bandwidth,
                    train_steps=self.train_steps, sampler=self.sampler, steps=self.steps)

    @property
    def d(self) -> int:
        return self.dim if self.data == "gaussian" else (64 if self.data == "digits" else 2)


def generation_rng(seed: int, generation: int, stream: int = 0) -> torch.Generator:
    """The RNG of (seed, generation): seeded by `SeedSequence([seed, generation, stream])`."""
    seq = np.random.SeedSequence([int(seed), int(generation), int(stream)])
    state = seq.generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def gaussian_truth(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the `gaussian` data: `N(0, diag(1, …, 2))` (linearly spaced; 1-D: N(0, 1))."""
    return torch.zeros(dim, dtype=torch.float64), torch.diag(torch.linspace(1.0, 2.0 if dim > 1 else 1.0, dim,
                                                                           dtype=torch.float64))


def sample_real(cfg: LoopConfig, s: int, n: int, generator: torch.Generator, split: str = "train"
                ) -> torch.Tensor:
    """`(s, n, d)` real points (float64 for Gaussian data, float32 otherwise)."""
    if cfg.data == "gaussian":
        mean, cov = gaussian_truth(cfg.dim)
        eps = torch.randn(s, n, cfg.dim, generator=generator, dtype=torch.float64)
        return mean + eps * torch.diagonal(cov).sqrt()
    x = sample_data(cfg.data, s * n, generator, split=split)
    return x.reshape(s, n, -1)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched sample mean `(S, d)` and unbiased covariance `(S, d, d)` of `x (S, n, d)`."""
    mean = x.mean(1)
    xc = x - mean[:, None]
    return mean, xc.transpose(1, 2) @ xc / (x.shape[1] - 1)


@dataclass
class Reference:
    """Held-out real data and its reference moments (exact for Gaussian data)."""

    test: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    test_features: torch.Tensor | None = None


def make_reference(cfg: LoopConfig) -> Reference:
    test = sample_real(cfg, 1, cfg.n_test, generation_rng(cfg.seed, 0, stream=7), split="test")[0]
    if cfg.data == "gaussian":
        mean, cov = gaussian_truth(cfg.dim)
    else:
        m, c = _moments(test.double()[None])
        mean, cov = m[0], c[0]
    feats = None
    if cfg.data == "digits":
        from gentool.core.metrics import digits_features
        feats = digits_features(test)
    return Reference(test, mean, cov, feats)


def cheap_metrics(family: Any, model: Any, synth: torch.Tensor, ref: Reference) -> dict[str, list[float]]:
    """Vectorised per-seed metrics: Bures W2 to the reference Gaussian, mean error, trace and log det of the
    covariance (of the fitted Gaussian, or of the synthetic sample for other families), held-out NLL."""
    if isinstance(model, dict) and "cov" in model:
        mean, cov = model["mean"].double(), model["cov"].double()
    else:
        mean, cov = _moments(synth.double())
    out = {"w2_gauss": bures_w2(mean, cov, ref.mean, ref.cov), "mean_error": (mean - ref.mean).norm(dim=-1),
           "trace_cov": torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1),
           "logdet_cov": torch.linalg.slogdet(cov)[1]}
    if family.has_density:
        out["nll"] = family.nll(model, ref.test)
    return {k: v.double().cpu().tolist() for k, v in out.items()}


def sample_metrics(cfg: LoopConfig, synth: torch.Tensor, ref: Reference, names: tuple[str, ...],
                   generator: torch.Generator) -> dict[str, float]:
    """Sample-based metrics of one seed's synthetic sample `(n, d)` against held-out real data."""
    from gentool.core.metrics import compute_metrics, digits_features, frechet_distance

    fake = synth.float()
    k = min(5, fake.shape[0] - 1)
    names_here = [n for n in names if not (n == "frechet" and ref.test_features is not None)]
    out = compute_metrics(ref.test.float(), fake, names=names_here, generator=generator, k=k)
    if "frechet" in names and ref.test_features is not None:
        out["frechet"] = frechet_distance(ref.test_features, digits_features(fake))
    return {k: float(v) for k, v in out.items()}


def _metric_names(cfg: LoopConfig, n_synth: int) -> tuple[str, ...]:
    names = cfg.metrics if cfg.metrics is not None else SAMPLE_METRICS
    knn = ("precision", "recall", "density", "coverage")
    return tuple(n for n in names if n not in knn or n_synth >= 3)


@dataclass
class Group:
    """Seeds processed together (all seeds for a vectorised family, one seed otherwise)."""

    seed_ids: list[int]
    rng_seed: int
    real: torch.Tensor
    train: torch.Tensor


def init_groups(cfg: LoopConfig, vectorised: bool) -> list[Group]:
    """Fixed real sets (generation-0 RNG) which are also generation 1's training sets."""
    blocks = [list(range(cfg.seeds))] if vectorised else [[i] for i in range(cfg.seeds)]
    groups = []
    for ids in blocks:
        rng_seed = cfg.seed if vectorised else cfg.seed + ids[0]
        real = sample_real(cfg, len(ids), cfg.n_real, generation_rng(rng_seed, 0))
        groups.append(Group(ids, rng_seed, real, real))
    return groups


def step_group(cfg: LoopConfig, family: Any, group: Group, t: int, ref: Reference
               ) -> tuple[list[dict], torch.Tensor]:
    """Generation `t` for one group: fit, sample with λ, metrics, next training set. Returns the rows and
    the synthetic sample; updates `group.train`."""
    g = generation_rng(group.rng_seed, t)
    model = family.fit(group.train, g)
    synth = family.sample(model, cfg.n_synth, cfg.lam, g)
    cheap = cheap_metrics(family, model, synth, ref)
    limit = cfg.seeds if not family.vectorised else (cfg.metric_seeds if cfg.metrics is not None else 0)
    names = _metric_names(cfg, cfg.n_synth)
    rows = []
    for i, sid in enumerate(group.seed_ids):
        row: dict[str, Any] = {"seed": cfg.seed + sid, "generation": t, "n_train": int(group.train.shape[1])}
        row.update({k: v[i] for k, v in cheap.items()})
        if sid < limit and names:
            rng = generation_rng(group.rng_seed, t, stream=sid + 1)
            row.update(sample_metrics(cfg, synth[i], ref, names, rng))
        rows.append(row)
    fresh = sample_real(cfg, len(group.seed_ids), cfg.n_real, g) if cfg.loop == "fresh" else None
    group.train = next_training_set(cfg.loop, group.train, group.real, synth, fresh,
                                    real_fraction=cfg.real_fraction, budget=cfg.budget, generator=g)
    return rows, synth


def _gen_file(out: Path, t: int) -> Path:
    return out / "generations" / f"gen_{t:05d}.jsonl"


def _load_state(out: Path, groups: list[Group]) -> int:
    """Restore training sets from `state.pt`; returns the last committed generation (0 if none)."""
    path = out / "state.pt"
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=False)
    require(len(state["train"]) == len(groups), f"--resume: {path} does not match this run's seeds")
    for grp, train in zip(groups, state["train"], strict=True):
        grp.train = train
    return int(state["generation"])


def run_loop(cfg: LoopConfig, out: str | Path, *, resume: bool = False, progress: Progress = no_progress
             ) -> list[dict[str, Any]]:
    """Run (or resume) the loop; writes the run directory and returns all metric rows."""
    cfg.validate()
    out = Path(out)
    family = make_family(cfg.family, cov=cfg.cov, components=cfg.components, bandwidth=cfg.bandwidth,
                         train_steps=cfg.train_steps, sampler=cfg.sampler, steps=cfg.steps, device=cfg.device)
    ref = make_reference(cfg)
    groups = init_groups(cfg, family.vectorised)
    start = _load_state(out, groups) if resume else 0
    total = cfg.generations * cfg.seeds
    progress(start * cfg.seeds, total, generation=start)
    new_rows: list[dict[str, Any]] = []
    for t in range(start + 1, cfg.generations + 1):
        rows: list[dict[str, Any]] = []
        for grp in groups:
            grp_rows, synth = step_group(cfg, family, grp, t, ref)
            rows += grp_rows
            if grp.seed_ids[0] == 0:
                atomic_save_npz(out / "snapshots" / f"gen_{t:05d}.npz", x=synth[0].float())
            progress((t - 1) * cfg.seeds + grp.seed_ids[-1] + 1, total, generation=t)
        atomic_write_text(_gen_file(out, t), _jsonl(rows))
        atomic_torch_save(out / "state.pt", {"generation": t, "train": [g.train for g in groups]})
        new_rows += rows
    texts = [_gen_file(out, t).read_text(encoding="utf-8") for t in range(1, cfg.generations + 1)]
    atomic_write_text(out / "metrics.jsonl", "".join(texts))
    all_rows = [r for t in range(1, start + 1) for r in read_jsonl(_gen_file(out, t))] + new_rows
    atomic_write_text(out / "summary.csv", summary_csv(all_rows))
    return all_rows


def _jsonl(rows: list[dict[str, Any]]) -> str:
    """Rows of plain numbers as JSON Lines (non-finite floats as JSON `NaN`/`Infinity`)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (generation, metric): count, mean, std (ddof 1), 95% CI `mean ± 1.96 std/√count`."""
    keys = sorted({k for r in rows for k in r} - {"seed", "generation"})
    by_gen: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_gen[r["generation"]].append(r)
    out = []
    for t in sorted(by_gen):
        for k in keys:
            v = np.array([r[k] for r in by_gen[t] if r.get(k) is not None], dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            std = float(v.std(ddof=1)) if v.size > 1 else 0.0
            half = 1.96 * std / math.sqrt(v.size)
            mean = float(v.mean())
            out.append({"generation": t, "metric": k, "count": int(v.size), "mean": mean, "std": std,
                        "ci95_low": mean - half, "ci95_high": mean + half})
    return out


def summary_csv(rows: list[dict[str, Any]]) -> str:
    cols = ("generation", "metric", "count", "mean", "std", "ci95_low", "ci95_high")
    def cell(v: Any) -> str:
        return f"{v:.10g}" if isinstance(v, float) else str(v)

    lines = [",".join(cols)] + [",".join(cell(s[c]) for c in cols) for s in summarize(rows)]
    return "\n".join(lines) + "\n"


def config_dict(cfg: LoopConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["metrics"] = list(cfg.metrics) if cfg.metrics is not None else None
    return d



