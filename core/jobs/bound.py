"""The `bound` job: the "W2 <= score matching" bound (`gentool.core.diffusion.bound`, SPEC §2c) against the
measured W2, for an analytic target with a perturbed denoiser or a `gentool train` checkpoint on ring/grid data.

One unit = a batch of model PF-ODE trajectories (Heun on an EDM grid from σ_max to σ_min): the score error
`δ² = ‖∇log p_σ(y) − s_θ(y, σ)‖²` at every σ level is accumulated, and the states at the W2 levels are kept.
`finish` writes `metrics.json` (`w2_bound` = B(σ_min), its Monte Carlo standard error, `log10_w2_bound`, the
initial and score terms, the Grönwall factor, the measured `w2` and how it was measured, `tightness` =
w2_bound / w2), `curve.csv` (per σ: ε, its standard error, the bound, and the measured W2 at the W2 levels) and
`bound.png` (both sides against σ; the score-error curve with its ±2 s.e. band).

Over training (`checkpoints`, `model` a `gentool train` run directory trained with snapshots): every checkpoint
(`training_checkpoints`: the snapshots and the final ckpt.pt) is bounded in turn with the same draws (common random
numbers: each checkpoint's trajectories start from the same z); `metrics.json` gets `checkpoints`, one row per
checkpoint (step, w2_bound ± se, w2 ± se, the POT floor, tightness), the top-level numbers are the last
checkpoint's, and `training.png` draws both sides against the training step.

Measured W2 at level σ: the exact Bures formula between the closed-form laws when the target and the model are
one-component Gaussians (target gaussian with perturb), else exact empirical W2 (POT network simplex) between
`n_w2` model states and `n_w2` exact samples of p_σ; `w2_pot_floor` is that estimator between two exact samples
(what it reads for a perfect model); `w2_se` at σ_min is its bootstrap standard error (both samples resampled,
`BOOTSTRAP` times; 0 for the closed form).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.config import check_float, check_int, setting
from gentool.core.diffusion.bound import (
    ScoreErrorSums,
    ScoreLipschitz,
    bound_grid,
    dilated_target,
    initial_mismatch,
    model_trajectory,
    noised_law,
    noised_samples,
    score_error_sq,
    single_gaussian_law,
    w2_bound_curve,
)
from gentool.core.diffusion.checkpoints import denoiser_from_state, load_checkpoint, training_checkpoints
from gentool.core.diffusion.denoisers import Denoiser
from gentool.core.diffusion.grids import SIGMA_LIMIT
from gentool.core.diffusion.targets import (
    ANY_DIM_TARGETS,
    SOURCE,
    TARGETS,
    MixtureTarget,
    chosen_target,
    make_target,
    target_dim,
)
from gentool.core.errors import BadInput, NumericalFailure, require
from gentool.core.io import atomic_write_json, atomic_write_text, check_allocation
from gentool.core.metrics.gaussian import gaussian_w2
from gentool.core.metrics.wasserstein import exact_w2, exact_w2_bytes, sliced_w2
from gentool.core.nn import make_generator
from gentool.core.run.contract import BatchedUnits, JobSpec, Row

# bundled training data with an analytic law -> its target
DATA_TARGETS = {"ring": "gmm-ring", "grid": "gmm-grid"}
EXACT_SEED_OFFSET = 12345  # exact reference samples: an RNG stream of their own
BOOTSTRAP = 8  # resamples for the standard error of the measured (POT) W2 at σ_min


@dataclass(frozen=True)
class BoundConfig:
    """Which model (exactly one of `target` with `perturb`, and `model`) and how finely to estimate the bound."""

    target: str | None = setting(None, "Analytic target; the model is its exact denoiser dilated by 1 + perturb "
                                 "about the target's mean.", choices=TARGETS)
    perturb: float | None = setting(None, "With target: the dilation eps of the perturbed model (means and "
                                    "component stds scaled by 1 + eps about the mean), > -1.",
                                    applies={"source": TARGETS})
    model: str | None = setting(None, "A `gentool train` checkpoint (file or run directory) trained on data with "
                                f"an analytic law ({', '.join(DATA_TARGETS)}).", metavar="PATH")
    dim: int = setting(2, "Dimension for the gaussian, gmm-random and point targets.",
                       applies={"source": ANY_DIM_TARGETS})
    n: int = setting(4000, "Model trajectories for the Monte Carlo score error.", short="-n")
    batch_size: int | None = setting(None, "Trajectories per unit (default: all at once).")
    steps: int = setting(200, "Heun steps of the model's PF-ODE (EDM grid; also the quadrature grid).")
    sigma_min: float = setting(1e-3, "Smallest σ: the bound is on W2(p_σmin, q_σmin).")
    sigma_max: float = setting(80.0, "Largest σ, where the model starts from N(0, σ_max² I).")
    rho: float = setting(7.0, "ρ of the EDM grid.")
    n_w2: int = setting(1000, "Samples per side for the measured W2 (exact empirical W2 by POT).")
    w2_levels: int = setting(12, "σ levels at which the measured W2 is drawn against the bound (σ_min included).")
    checkpoints: bool = setting(False, "With model a `gentool train` run directory trained with snapshots: bound "
                                "every checkpoint of the training (snapshots/ and ckpt.pt) and draw both sides "
                                "against the training step.", applies={"source": ("model",)})
    source = SOURCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", chosen_target(self.target, self.model))
        if self.target is not None:
            require(self.perturb is not None, "target needs perturb (the dilation eps of the model; 0: exact)")
            check_float("perturb", self.perturb, -1.0, lo_open=True)
        else:
            require(self.perturb is None, "perturb applies to analytic targets; a model is used as trained")
        check_int("dim", self.dim, 1, 100_000)
        check_int("n", self.n, 2, 10**8)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 2)
        check_int("steps", self.steps, 2, 100_000)
        check_float("sigma_min", self.sigma_min, 0.0, lo_open=True)
        check_float("sigma_max", self.sigma_max, self.sigma_min, SIGMA_LIMIT, lo_open=True)
        check_float("rho", self.rho, 0.0, lo_open=True)
        check_int("n_w2", self.n_w2, 2, 20_000)
        check_int("w2_levels", self.w2_levels, 1, self.steps + 1)


@dataclass(frozen=True)
class Member:
    """One model the job bounds: its name, its training step (checkpoints; else None) and the checkpoint file
    (None for the perturbed analytic model)."""

    name: str
    step: int | None = None
    path: str | None = None


def members_of(cfg: BoundConfig) -> list[Member]:
    """The models of `cfg`: the perturbed target, a checkpoint, or every checkpoint of a train run (by step)."""
    if cfg.target is not None:
        return [Member(f"{cfg.target} dilated by 1{cfg.perturb:+g}")]
    if not cfg.checkpoints:
        return [Member("model", None, cfg.model)]
    return [Member(f"model at step {step}", step, str(path)) for step, path in training_checkpoints(cfg.model)]


def open_model(cfg: BoundConfig, member: Member, device: torch.device) -> tuple[MixtureTarget, Denoiser, str]:
    """The true target, the member's denoiser and a name for it."""
    if cfg.target is not None:
        target = make_target(cfg.target, target_dim(cfg.target, cfg.dim))
        return target, dilated_target(target, cfg.perturb), member.name
    state = load_checkpoint(member.path)
    data = state.get("data")
    if data not in DATA_TARGETS:
        raise BadInput(f"model {member.path} was trained on {data!r}, which has no analytic law; allowed: "
                       f"{', '.join(DATA_TARGETS)}")
    at = "" if member.step is None else f" at step {member.step}"
    return make_target(DATA_TARGETS[data]), denoiser_from_state(state, device), f"model on {data}{at}"


STATE_COPIES = 8  # (batch, d) arrays alive in a Heun step: states, denoised values, slopes, exact scores


def bound_bytes(cfg: BoundConfig, dim: int) -> float:
    """Estimated peak bytes (float64): a batch's `STATE_COPIES` state arrays, the n_w2 states kept at each of the
    w2_levels σ levels with as many exact samples, and the exact W2 between n_w2 points (`exact_w2_bytes`)."""
    batch = cfg.batch_size or cfg.n
    return 8.0 * (STATE_COPIES * batch + 2 * cfg.w2_levels * cfg.n_w2) * dim + exact_w2_bytes(cfg.n_w2, cfg.n_w2)


class BoundJob(BatchedUnits):
    """State per member (model or checkpoint): the score-error sums per σ level and the kept states at the W2
    levels; the generator. Units: `units_per` batches of the first member, then of the next, ..."""

    command = "bound"
    hint = "use more steps, or check the model"

    def __init__(self, config: BoundConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.members = members_of(config)
        self.target, self.model, self.name = open_model(config, self.members[0], self.device)
        check_allocation(bound_bytes(config, self.target.dim), f"bound (n={config.n}, batch_size={config.batch_size}, "
                         f"n_w2={config.n_w2}, w2_levels={config.w2_levels}, dim {self.target.dim})")
        self.open = 0  # the member whose model is loaded
        self.analytic = isinstance(self.model, MixtureTarget)
        self.lipschitz = ScoreLipschitz.of(self.target.mixture)
        self.sigmas = bound_grid(config.steps, config.sigma_min, config.sigma_max, config.rho)
        self.w2_index = w2_level_indices(len(self.sigmas), config.w2_levels)
        self.g = make_generator(seed)
        self.sums = [ScoreErrorSums.zeros(len(self.sigmas)) for _ in self.members]
        self.kept: list[list[torch.Tensor]] = [[] for _ in self.members]

    @property
    def units_per(self) -> int:
        return -(-self.config.n // self.batch)

    @property
    def units_total(self) -> int:
        return len(self.members) * self.units_per

    @property
    def units_done(self) -> int:
        return sum(len(k) for k in self.kept)

    def next_batch(self) -> tuple[int, int]:
        first = (self.units_done % self.units_per) * self.batch
        return first, min(self.batch, self.config.n - first)

    def model_of(self, m: int) -> Denoiser:
        """Member m's denoiser (loaded when the job reaches it)."""
        if m != self.open:
            _, self.model, self.name = open_model(self.config, self.members[m], self.device)
            self.open = m
        return self.model

    def advance(self) -> list[Row]:
        m, (first, b) = self.units_done // self.units_per, self.next_batch()
        if first == 0:  # every member starts from the same draws
            self.g = make_generator(self.seed)
        model = self.model_of(m)
        dtype = torch.float64 if self.analytic else torch.float32
        z = torch.randn(b, self.target.dim, generator=self.g, dtype=dtype).to(self.device)
        ys = model_trajectory(model, z, self.sigmas.to(dtype))
        if not bool(torch.isfinite(ys).all()):
            raise NumericalFailure(f"non-finite model trajectory of {self.name} at {self.config.steps} steps; "
                                   f"{self.hint}")
        err = torch.stack([score_error_sq(model, self.target, y, float(s)) for y, s in zip(ys, self.sigmas,
                                                                                              strict=True)])
        self.sums[m].add(err)
        self.kept[m].append(ys[self.w2_index].double().cpu())
        eps = err.mean(1).sqrt()
        step = {} if self.members[m].step is None else {"checkpoint_step": self.members[m].step}
        return [{"batch": self.units_done, **step, "trajectories": b, "score_err_sigma_max": float(eps[0]),
                 "score_err_sigma_min": float(eps[-1])}]

    def state_dict(self) -> dict[str, Any]:
        # tensors and plain data only: run state is read back with weights_only
        return {"members": [{"sq": torch.from_numpy(s.sq), "sq2": torch.from_numpy(s.sq2), "count": s.count,
                             "kept": k} for s, k in zip(self.sums, self.kept, strict=True)], "rng": self.g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        members = state.get("members", [state])  # [state]: runs of one model before checkpoints
        self.sums = [ScoreErrorSums(s["sq"].numpy(), s["sq2"].numpy(), int(s["count"])) for s in members]
        self.kept = [list(s["kept"]) for s in members]
        self.g.set_state(state["rng"])

    def samples(self) -> dict[str, Any]:
        """The σ_min states of the member reached last (the last member's when done)."""
        kept = [k for k in self.kept if k][-1]
        return {"x": torch.cat(kept, 1)[-1], "sigmas": self.sigmas}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        results = [self.evaluate(m) for m in range(len(self.members))]
        last = results[-1]
        metrics = last["metrics"]
        if self.config.checkpoints:
            metrics["checkpoints"] = [{"step": member.step, **{k: r["metrics"][k] for k in CHECKPOINT_KEYS}}
                                      for member, r in zip(self.members, results, strict=True)]
        atomic_write_json(out / "metrics.json", metrics)
        sig, curve, measured, floor = self.sigmas.numpy(), last["curve"], last["measured"], last["floor"]
        columns = {"w2": measured, "w2_pot_floor": floor or [None] * len(measured)}
        atomic_write_text(out / "curve.csv", curve_csv(sig, last["eps"], last["eps_se"], curve, self.w2_index,
                                                       columns))
        if plots_on:
            method = metrics["w2_method"]
            plots.w2_bound_figure(out / "bound.png", sig, curve.bound, last["eps"], last["eps_se"],
                                  sig[self.w2_index], {f"measured W2 ({method})": measured} | (
                                      {} if floor is None else {"POT estimator floor (two exact samples)": floor}),
                                  title=metrics["model"])
            if self.config.checkpoints:
                plots.bound_over_training(out / "training.png", metrics["checkpoints"], method,
                                          title=f"{self.target.name}: W2 at σ_min = {self.config.sigma_min:g}")
        summary = {k: metrics[k] for k in ("w2_bound", "w2_bound_se", "w2", "tightness", "log10_gronwall_factor")}
        return summary | ({"checkpoints": len(self.members)} if self.config.checkpoints else {})

    def evaluate(self, m: int) -> dict[str, Any]:
        """Member m's bound curve, measured W2 and metrics."""
        cfg = self.config
        eps, eps_se = self.sums[m].curve()
        w_init = initial_mismatch(self.target.mixture, cfg.sigma_max)
        curve = w2_bound_curve(self.sigmas.numpy(), eps, eps_se, self.lipschitz, w_init)
        self.model_of(m)
        measured, floor, method, w2_se = self.measured_w2(m)
        w2 = measured[-1]
        metrics: dict[str, Any] = {
            "w2_bound": float(curve.bound[-1]), "w2_bound_se": float(curve.bound_se[-1]),
            "log10_w2_bound": float(curve.log10_bound[-1]), "w2": w2, "w2_se": w2_se, "w2_method": method,
            "tightness": float(curve.bound[-1]) / w2 if w2 > 0 else None,
            "initial_term": curve.initial_term, "score_term": curve.score_term, "w_init": w_init,
            "log10_gronwall_factor": curve.log10_growth, "lipschitz_c": self.lipschitz.c,
            "lipschitz_var0": self.lipschitz.var0, "sigma_min": cfg.sigma_min, "sigma_max": cfg.sigma_max,
            "trajectories": self.sums[m].count, "model": self.name, "sliced_w2": self.sliced(m),
            "w2_pot_floor": None if floor is None else floor[-1]}
        return {"metrics": metrics, "curve": curve, "eps": eps, "eps_se": eps_se, "measured": measured,
                "floor": floor}

    def measured_w2(self, m: int) -> tuple[list[float], list[float] | None, str, float]:
        """W2(p_σ, q_σ) at the W2 levels for member m (its model loaded): exact Bures for one-component Gaussian
        target and model; else POT between the model's states and exact samples, with the estimator's floor
        (two exact samples) and the bootstrap standard error at σ_min."""
        levels = [float(self.sigmas[i]) for i in self.w2_index]
        if self.analytic:
            laws = [(noised_law(self.target, s), single_gaussian_law(self.model, s, self.config.sigma_max))
                    for s in levels]
            if all(p is not None and q is not None for p, q in laws):
                return [gaussian_w2(*p, *q) for p, q in laws], None, "Bures, closed-form laws", 0.0
        n = min(self.config.n_w2, self.sums[m].count)
        states = torch.cat(self.kept[m], 1)[:, :n]
        g = make_generator(self.seed + EXACT_SEED_OFFSET)
        w2, floor = [], []
        for y, s in zip(states, levels, strict=True):
            a, b = (noised_samples(self.target, n, s, g) for _ in range(2))
            w2.append(exact_w2(y, a))
            floor.append(exact_w2(b, a))
        return w2, floor, f"exact empirical W2 (POT), n = {n}", bootstrap_se(states[-1], a, self.seed)

    def sliced(self, m: int) -> float:
        """Sliced W2 between member m's σ_min states and exact samples of p_σmin."""
        y = torch.cat(self.kept[m], 1)[-1]
        g = make_generator(self.seed + 2 * EXACT_SEED_OFFSET)
        ref = noised_samples(self.target, len(y), float(self.sigmas[-1]), g)
        return sliced_w2(y, ref, generator=make_generator(self.seed))


CHECKPOINT_KEYS = ("w2_bound", "w2_bound_se", "log10_w2_bound", "w2", "w2_se", "w2_pot_floor", "tightness")


def bootstrap_se(y: torch.Tensor, a: torch.Tensor, seed: int) -> float:
    """The bootstrap standard error of `exact_w2(y, a)`: the standard deviation of `exact_w2` over `BOOTSTRAP`
    resamples (with replacement) of both samples."""
    g = make_generator(seed + 3 * EXACT_SEED_OFFSET)
    reps = [exact_w2(y[torch.randint(len(y), (len(y),), generator=g)], a[torch.randint(len(a), (len(a),),
                                                                                      generator=g)])
            for _ in range(BOOTSTRAP)]
    return float(np.std(reps, ddof=1))


def w2_level_indices(levels: int, count: int) -> list[int]:
    """`count` grid indices spread evenly over the grid, the last (σ_min) always included."""
    return sorted({int(round(v)) for v in np.linspace(levels - 1, 0, count)})


def curve_csv(sigmas: np.ndarray, eps: np.ndarray, eps_se: np.ndarray, curve: Any, index: list[int],
              measured: dict[str, list[float | None]]) -> str:
    """Per σ: score error with its standard error, the bound with its standard error and log10, and at the W2
    levels the `measured` columns (empty elsewhere)."""
    at = {i: k for k, i in enumerate(index)}
    lines = [",".join(["sigma", "score_error", "score_error_se", "w2_bound", "w2_bound_se", "log10_w2_bound",
                       *measured])]
    for i, s in enumerate(sigmas):
        cells = [f"{v:.10g}" for v in (s, eps[i], eps_se[i], curve.bound[i], curve.bound_se[i], curve.log10_bound[i])]
        cells += ["" if i not in at or col[at[i]] is None else f"{col[at[i]]:.10g}" for col in measured.values()]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


SPEC = JobSpec("bound", BoundConfig, BoundJob,
               "The W2 <= score-matching bound (Kwon, Fan & Lee 2022, EDM form) of a perturbed analytic denoiser "
               "or a trained model, against the measured W2: metrics.json, curve.csv, bound.png.")
