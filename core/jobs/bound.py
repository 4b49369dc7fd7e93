"""The `bound` job: the "W2 <= score matching" bound (`gentool.core.diffusion.bound`, SPEC §2c) against the
measured W2, for an analytic target with a perturbed denoiser or a `gentool train` checkpoint on ring/grid data.

One unit = a batch of model PF-ODE trajectories (Heun on an EDM grid from σ_max to σ_min): the score error
`δ² = ‖∇log p_σ(y) − s_θ(y, σ)‖²` at every σ level is accumulated, and the states at the W2 levels are kept.
`finish` writes `metrics.json` (`w2_bound` = B(σ_min), its Monte Carlo standard error, `log10_w2_bound`, the
initial and score terms, the Grönwall factor, the measured `w2` and how it was measured, `tightness` =
w2_bound / w2), `curve.csv` (per σ: ε, its standard error, the bound, and the measured W2 at the W2 levels) and
`bound.png` (both sides against σ; the score-error curve with its ±2 s.e. band).

Measured W2 at level σ: the exact Bures formula between the closed-form laws when the target and the model are
one-component Gaussians (target gaussian with perturb), else exact empirical W2 (POT network simplex) between
`n_w2` model states and `n_w2` exact samples of p_σ; `w2_pot_floor` is that estimator between two exact samples
(what it reads for a perfect model).
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
from gentool.core.diffusion.checkpoints import denoiser_from_state, load_checkpoint
from gentool.core.diffusion.denoisers import Denoiser
from gentool.core.diffusion.grids import SIGMA_LIMIT
from gentool.core.diffusion.targets import (
    ANY_DIM_TARGETS,
    SOURCE,
    TARGETS,
    MixtureTarget,
    make_target,
    target_dim,
)
from gentool.core.errors import BadInput, NumericalFailure, choose, require
from gentool.core.io import atomic_write_json, atomic_write_text, check_allocation
from gentool.core.metrics.gaussian import gaussian_w2
from gentool.core.metrics.wasserstein import exact_w2, exact_w2_bytes, sliced_w2
from gentool.core.nn import make_generator
from gentool.core.run.contract import BatchedUnits, JobSpec, Row

# bundled training data with an analytic law -> its target
DATA_TARGETS = {"ring": "gmm-ring", "grid": "gmm-grid"}
EXACT_SEED_OFFSET = 12345  # exact reference samples: an RNG stream of their own


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
    source = SOURCE

    def __post_init__(self) -> None:
        require((self.target is None) != (self.model is None), "give exactly one of target and model")
        if self.target is not None:
            choose("target", self.target, TARGETS)
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


def open_model(cfg: BoundConfig, device: torch.device) -> tuple[MixtureTarget, Denoiser, str]:
    """The true target, the model's denoiser and a name for it."""
    if cfg.target is not None:
        target = make_target(cfg.target, target_dim(cfg.target, cfg.dim))
        return target, dilated_target(target, cfg.perturb), f"{cfg.target} dilated by 1{cfg.perturb:+g}"
    state = load_checkpoint(cfg.model)
    data = state.get("data")
    if data not in DATA_TARGETS:
        raise BadInput(f"model {cfg.model} was trained on {data!r}, which has no analytic law; allowed: "
                       f"{', '.join(DATA_TARGETS)}")
    return make_target(DATA_TARGETS[data]), denoiser_from_state(state, device), f"model on {data}"


STATE_COPIES = 8  # (batch, d) arrays alive in a Heun step: states, denoised values, slopes, exact scores


def bound_bytes(cfg: BoundConfig, dim: int) -> float:
    """Estimated peak bytes (float64): a batch's `STATE_COPIES` state arrays, the n_w2 states kept at each of the
    w2_levels σ levels with as many exact samples, and the exact W2 between n_w2 points (`exact_w2_bytes`)."""
    batch = cfg.batch_size or cfg.n
    return 8.0 * (STATE_COPIES * batch + 2 * cfg.w2_levels * cfg.n_w2) * dim + exact_w2_bytes(cfg.n_w2, cfg.n_w2)


class BoundJob(BatchedUnits):
    """State: the score-error sums per σ level, the kept states at the W2 levels, the generator."""

    command = "bound"
    hint = "use more steps, or check the model"

    def __init__(self, config: BoundConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.target, self.model, self.name = open_model(config, self.device)
        check_allocation(bound_bytes(config, self.target.dim), f"bound (n={config.n}, batch_size={config.batch_size}, "
                         f"n_w2={config.n_w2}, w2_levels={config.w2_levels}, dim {self.target.dim})")
        self.analytic = isinstance(self.model, MixtureTarget)
        self.lipschitz = ScoreLipschitz.of(self.target.mixture)
        self.sigmas = bound_grid(config.steps, config.sigma_min, config.sigma_max, config.rho)
        self.w2_index = w2_level_indices(len(self.sigmas), config.w2_levels)
        self.g = make_generator(seed)
        self.sums = ScoreErrorSums.zeros(len(self.sigmas))
        self.kept: list[torch.Tensor] = []

    @property
    def units_done(self) -> int:
        return len(self.kept)

    def advance(self) -> list[Row]:
        _, b = self.next_batch()
        dtype = torch.float64 if self.analytic else torch.float32
        z = torch.randn(b, self.target.dim, generator=self.g, dtype=dtype).to(self.device)
        ys = model_trajectory(self.model, z, self.sigmas.to(dtype))
        if not bool(torch.isfinite(ys).all()):
            raise NumericalFailure(f"non-finite model trajectory at {self.config.steps} steps; {self.hint}")
        err = torch.stack([score_error_sq(self.model, self.target, y, float(s)) for y, s in zip(ys, self.sigmas,
                                                                                                   strict=True)])
        self.sums.add(err)
        self.kept.append(ys[self.w2_index].double().cpu())
        eps = err.mean(1).sqrt()
        return [{"batch": self.units_done, "trajectories": b, "score_err_sigma_max": float(eps[0]),
                 "score_err_sigma_min": float(eps[-1])}]

    def state_dict(self) -> dict[str, Any]:
        s = self.sums  # tensors and plain data only: run state is read back with weights_only
        return {"sq": torch.from_numpy(s.sq), "sq2": torch.from_numpy(s.sq2), "count": s.count, "kept": self.kept,
                "rng": self.g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = ScoreErrorSums(state["sq"].numpy(), state["sq2"].numpy(), int(state["count"]))
        self.kept = state["kept"]
        self.g.set_state(state["rng"])

    def samples(self) -> dict[str, Any]:
        return {"x": torch.cat(self.kept, 1)[-1], "sigmas": self.sigmas}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        cfg = self.config
        eps, eps_se = self.sums.curve()
        sig = self.sigmas.numpy()
        w_init = initial_mismatch(self.target.mixture, cfg.sigma_max)
        curve = w2_bound_curve(sig, eps, eps_se, self.lipschitz, w_init)
        measured, floor, method = self.measured_w2()
        w2 = measured[-1]
        metrics: dict[str, Any] = {
            "w2_bound": float(curve.bound[-1]), "w2_bound_se": float(curve.bound_se[-1]),
            "log10_w2_bound": float(curve.log10_bound[-1]), "w2": w2, "w2_method": method,
            "tightness": float(curve.bound[-1]) / w2 if w2 > 0 else None,
            "initial_term": curve.initial_term, "score_term": curve.score_term, "w_init": w_init,
            "log10_gronwall_factor": curve.log10_growth, "lipschitz_c": self.lipschitz.c,
            "lipschitz_var0": self.lipschitz.var0, "sigma_min": cfg.sigma_min, "sigma_max": cfg.sigma_max,
            "trajectories": self.sums.count, "model": self.name, "sliced_w2": self.sliced(),
            "w2_pot_floor": None if floor is None else floor[-1]}
        atomic_write_json(out / "metrics.json", metrics)
        columns = {"w2": measured, "w2_pot_floor": floor or [None] * len(measured)}
        atomic_write_text(out / "curve.csv", curve_csv(sig, eps, eps_se, curve, self.w2_index, columns))
        if plots_on:
            plots.w2_bound_figure(out / "bound.png", sig, curve.bound, eps, eps_se, sig[self.w2_index],
                                  {f"measured W2 ({method})": measured} | ({} if floor is None else
                                  {"POT estimator floor (two exact samples)": floor}), title=self.name)
        return {k: metrics[k] for k in ("w2_bound", "w2_bound_se", "w2", "tightness", "log10_gronwall_factor")}

    def measured_w2(self) -> tuple[list[float], list[float] | None, str]:
        """W2(p_σ, q_σ) at the W2 levels: exact Bures for one-component Gaussian target and model; else POT
        between the model's states and exact samples, with the estimator's floor (two exact samples)."""
        levels = [float(self.sigmas[i]) for i in self.w2_index]
        if self.analytic:
            laws = [(noised_law(self.target, s), single_gaussian_law(self.model, s, self.config.sigma_max))
                    for s in levels]
            if all(p is not None and q is not None for p, q in laws):
                return [gaussian_w2(*p, *q) for p, q in laws], None, "Bures, closed-form laws"
        n = min(self.config.n_w2, self.sums.count)
        states = torch.cat(self.kept, 1)[:, :n]
        g = make_generator(self.seed + EXACT_SEED_OFFSET)
        w2, floor = [], []
        for y, s in zip(states, levels, strict=True):
            a, b = (noised_samples(self.target, n, s, g) for _ in range(2))
            w2.append(exact_w2(y, a))
            floor.append(exact_w2(b, a))
        return w2, floor, f"exact empirical W2 (POT), n = {n}"

    def sliced(self) -> float:
        """Sliced W2 between the model's σ_min states and exact samples of p_σmin."""
        y = torch.cat(self.kept, 1)[-1]
        g = make_generator(self.seed + 2 * EXACT_SEED_OFFSET)
        ref = noised_samples(self.target, len(y), float(self.sigmas[-1]), g)
        return sliced_w2(y, ref, generator=make_generator(self.seed))


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
