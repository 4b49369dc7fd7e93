"""The `sample` job: a diffusion-ODE sampler on an analytic target or a trained denoiser; one unit = a batch.

Outputs besides the run contract's: `samples.npz` (x, x0, sigmas), `scatter.png` or `grid.png` (images),
`metrics.json`: nfe, seconds, samples/s, and for analytic targets the endpoint error against a float64
reference solve and sliced W2 / MMD² against exact samples; for trained models the distances to held-out data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core import plots
from gentool.core.config import check_float, check_int, setting
from gentool.core.data import DATASETS, sample_data
from gentool.core.diffusion import GRIDS, SAMPLERS, SCHEDULES, TARGETS, load_checkpoint, make_grid, make_target
from gentool.core.diffusion.checkpoints import denoiser_from_state
from gentool.core.diffusion.samplers import run_sampler
from gentool.core.diffusion.targets import MixtureTarget, reference_flow
from gentool.core.errors import NumericalFailure, choose, require
from gentool.core.io import atomic_write_json
from gentool.core.nn import make_generator
from gentool.core.run.contract import JobSpec, Row
from gentool.core.solvers import ADAPTIVE_METHODS, FIXED_METHODS

MMD_MAX = 2000  # MMD is O(n^2): computed on the first MMD_MAX samples
SAMPLER_OPTIONS = {"ddim": ("eta",), "amed": ("r",), "ode": ("method", "rtol"), "unipc": ("order",),
                   "ipndm": ("order",), "ipndm-v": ("order",)}


@dataclass(frozen=True)
class SampleConfig:
    """What to sample (exactly one of `target` and `model`), with which sampler, on which σ grid."""

    target: str | None = setting(None, "Analytic target (exact denoiser).", choices=TARGETS)
    model: str | None = setting(None, "Checkpoint of `gentool train` (file or run directory).", metavar="PATH")
    sampler: str = setting("dpmpp-2m", "Sampler.", choices=tuple(SAMPLERS))
    steps: int = setting(20, "Grid steps (σ levels; the last step goes to 0).")
    n: int = setting(10000, "Number of samples.", short="-n")
    batch_size: int | None = setting(None, "Samples per batch (default: all at once).")
    dim: int = setting(2, "Dimension for the gaussian, gmm-random and point targets.")
    grid: str = setting("edm", "σ grid.", choices=GRIDS)
    schedule: str = setting("vp-linear", "Schedule of the uniform-t grid.", choices=tuple(SCHEDULES))
    sigma_min: float = setting(0.002, "Smallest nonzero σ.")
    sigma_max: float = setting(80.0, "Largest σ (initial noise scale).")
    rho: float = setting(7.0, "ρ of the EDM grid.")
    eta: float = setting(1.0, "ddim stochasticity (0: Euler, 1: DDPM ancestral).")
    r: float = setting(0.5, "amed mean-value ratio in (0, 1).")
    method: str = setting("dopri5", "ode: core solver method.", choices=(*FIXED_METHODS, *ADAPTIVE_METHODS))
    rtol: float = setting(1e-5, "ode: adaptive tolerance (atol = rtol).")
    order: int | None = setting(None, "unipc: 1-3 (default 2); ipndm, ipndm-v: 1-4 (default 4).")
    compile: bool = setting(False, "torch.compile the sampler (inductor; eager with a warning where unavailable).")
    reference: bool = setting(True, "Analytic targets: endpoint error against a float64 reference solve.")

    def __post_init__(self) -> None:
        require((self.target is None) != (self.model is None), "give exactly one of target and model")
        if self.target is not None:
            choose("target", self.target, TARGETS)
        choose("sampler", self.sampler, SAMPLERS)
        choose("grid", self.grid, GRIDS)
        choose("schedule", self.schedule, SCHEDULES)
        choose("method", self.method, (*FIXED_METHODS, *ADAPTIVE_METHODS))
        check_int("steps", self.steps, 1, 100_000)
        check_int("n", self.n, 1, 10**9)
        check_int("dim", self.dim, 1, 100_000)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        check_float("sigma_min", self.sigma_min, 0.0, lo_open=True)
        check_float("sigma_max", self.sigma_max, self.sigma_min, lo_open=True)
        check_float("rho", self.rho, 0.0, lo_open=True)
        check_float("eta", self.eta, 0.0)
        check_float("r", self.r, 0.0, 1.0, lo_open=True, hi_open=True)
        check_float("rtol", self.rtol, 0.0, lo_open=True)
        if self.order is not None:
            check_int("order", self.order, 1, 4)

    def sampler_options(self) -> dict[str, Any]:
        opts = {k: getattr(self, k) for k in SAMPLER_OPTIONS.get(self.sampler, ()) if getattr(self, k) is not None}
        return opts | ({"atol": self.rtol} if self.sampler == "ode" else {}) | {"compile": self.compile}


class SampleJob:
    """State: the generator, the finished batches (x and x0) and the NFE and time spent."""

    command = "sample"
    hint = "use more steps or a smaller sigma_max"

    def __init__(self, config: SampleConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.denoiser, self.dim, self.facts = self._source()
        self.sigmas = make_grid(config.grid, config.steps, sigma_min=config.sigma_min,
                                sigma_max=config.sigma_max, rho=config.rho, schedule=config.schedule)
        self.dtype = torch.float64 if self.analytic else torch.float32
        self.g = make_generator(seed)
        self.xs: list[torch.Tensor] = []
        self.x0s: list[torch.Tensor] = []
        self.nfe, self.seconds = 0, 0.0

    @property
    def analytic(self) -> bool:
        return isinstance(self.denoiser, MixtureTarget)

    def _source(self) -> tuple[Any, int, dict[str, Any]]:
        cfg = self.config
        if cfg.model is not None:
            state = load_checkpoint(cfg.model)
            return denoiser_from_state(state, self.device), int(state["dim"]), {"data": state.get("data")}
        t = make_target(cfg.target, cfg.dim if cfg.target in ("gaussian", "gmm-random", "point") else 2)
        return t, t.dim, {"target": cfg.target}

    @property
    def batch(self) -> int:
        return self.config.batch_size or self.config.n

    @property
    def units_total(self) -> int:
        return math.ceil(self.config.n / self.batch)

    @property
    def units_done(self) -> int:
        return len(self.xs)

    @property
    def done(self) -> bool:
        return self.units_done >= self.units_total

    def advance(self) -> list[Row]:
        cfg = self.config
        b = min(self.batch, cfg.n - self.units_done * self.batch)
        x0 = (torch.randn(b, self.dim, generator=self.g, dtype=self.dtype) * float(self.sigmas[0])).to(self.device)
        start = time.perf_counter()
        x, nfe = run_sampler(self.denoiser, x0, self.sigmas, cfg.sampler, generator=self.g,
                             **cfg.sampler_options())
        seconds = time.perf_counter() - start
        if not bool(torch.isfinite(x).all()):
            raise NumericalFailure(f"sampler {cfg.sampler} produced non-finite samples at {cfg.steps} steps; "
                                   f"{self.hint}")
        self.xs.append(x.cpu())
        self.x0s.append(x0.cpu())
        self.nfe, self.seconds = max(self.nfe, nfe), self.seconds + seconds
        return [{"batch": self.units_done, "samples": b, "nfe": nfe, "seconds": seconds}]

    def state_dict(self) -> dict[str, Any]:
        return {"xs": self.xs, "x0s": self.x0s, "nfe": self.nfe, "seconds": self.seconds, "rng": self.g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.xs, self.x0s, self.nfe, self.seconds = state["xs"], state["x0s"], state["nfe"], state["seconds"]
        self.g.set_state(state["rng"])

    def samples(self) -> dict[str, Any]:
        return {"x": torch.cat(self.xs), "x0": torch.cat(self.x0s), "sigmas": self.sigmas}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        x, x0 = torch.cat(self.xs), torch.cat(self.x0s)
        metrics: dict[str, Any] = {"nfe": self.nfe, "seconds": self.seconds, "samples_per_s": len(x) / self.seconds}
        if self.analytic:
            metrics.update(self._analytic_metrics(x0, x))
        elif self.facts.get("data") in DATASETS:  # a trained model: distance to held-out data
            held_out = sample_data(self.facts["data"], len(x), make_generator(self.seed + 12345), split="test")
            metrics.update({f"{k}_heldout": v for k, v in distribution_errors(x, held_out, self.seed).items()})
        atomic_write_json(out / "metrics.json", metrics)
        if plots_on:
            name = "grid.png" if plots.image_side(self.dim) and self.dim != 2 else "scatter.png"
            title = f"{self.facts.get('target', 'model')} {self.config.sampler} NFE={self.nfe}"
            plots.sample_panels(out / name, [(title, x)])
        return metrics

    def _analytic_metrics(self, x0: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.config.reference:
            ref = reference_flow(self.denoiser, x0, float(self.sigmas[0]))
            err = ((x - ref) ** 2).sum(1).sqrt()
            out.update(endpoint_rmse=float(err.pow(2).mean().sqrt()), endpoint_max=float(err.max()))
        exact = self.denoiser.sample(x.shape[0], make_generator(self.seed + 12345))
        out.update(distribution_errors(x, exact, self.seed))
        return out


def distribution_errors(x: torch.Tensor, ref: torch.Tensor, seed: int) -> dict[str, float]:
    """Sliced W2 and MMD² of samples `x` against reference samples `ref` (gentool.core.metrics)."""
    from gentool.core.metrics import mmd2, sliced_w2

    x, ref = x.double().cpu(), ref.double().cpu()
    return {"sliced_w2": float(sliced_w2(x, ref, generator=make_generator(seed))),
            "mmd2": float(mmd2(x[:MMD_MAX], ref[:MMD_MAX]))}


SPEC = JobSpec("sample", SampleConfig, SampleJob,
               "Sample with a diffusion-ODE sampler; write samples.npz, a plot, metrics.json and config.json.")
