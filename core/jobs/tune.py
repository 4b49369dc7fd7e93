"""The `tune` job: learn a sampler schedule for one model (`gentool.core.diffusion.tuning`).

Units: 0 draws the training and held-out noises (separate generators) and solves the teacher from each
(analytic targets: the float64 reference flow to σ = 0; models: the core's adaptive dopri5 at `teacher_rtol`
to σ_min, then the step to 0), checking the teacher on `TEACHER_CHECK` samples against a second solve
(analytic: the core's dopri5 at 1e-10; models: at teacher_rtol / 10), whose RMSE distance is `teacher_error`;
1 searches the EDM grid (ρ, σ_min) that starts the training; then one unit per `CHUNK` Adam iterations.

Outputs besides the run contract's: `tuned.json` (the `TunedSchedule`: base sampler, NFE, σ grid, per-
evaluation corrections, the model's identity, training and held-out errors, and the held-out errors of the
base sampler on the EDM grid and on the searched grid), `metrics.json` and `tune.png` (loss per iteration;
the learned grid against the EDM and the searched grid).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core import plots
from gentool.core.config import check_float, check_int, setting
from gentool.core.diffusion import TARGETS
from gentool.core.diffusion.grids import SIGMA_LIMIT, edm_grid
from gentool.core.diffusion.samplers import solve_sampler
from gentool.core.diffusion.sources import SampleSource, model_source, target_source
from gentool.core.diffusion.targets import (
    ANY_DIM_TARGETS,
    DEFAULT_TARGET,
    MODEL_SOURCE,
    SOURCE,
    MixtureTarget,
    chosen_target,
    reference_flow,
    target_dim,
)
from gentool.core.diffusion.tuning import (
    DEFAULT_LEARN,
    Optimiser,
    ScheduleTrainer,
    TunedSchedule,
    base_spec,
    endpoint_errors,
    evaluations,
    model_identity,
    parse_learn,
    run_schedule,
    search_edm_grid,
    steps_for,
    tunable_samplers,
)
from gentool.core.errors import require
from gentool.core.io import atomic_write_json, atomic_write_text
from gentool.core.jobs.sample import sampler_option_fields
from gentool.core.nn import make_generator
from gentool.core.run.contract import JobSpec, Row

CHUNK = 50  # Adam iterations per unit
HELDOUT_SEED_OFFSET = 1_000_003  # held-out noises: generator seeded with seed + offset (training: seed)
TEACHER_CHECK = 64  # samples solved twice to measure the teacher's accuracy
ANALYTIC_CHECK_RTOL = 1e-10  # the analytic teacher is checked against the core's dopri5 at this tolerance


@dataclass(frozen=True)
class TuneSettings:
    """Which model (a `target`, gmm-ring by default, or a `model`), which base sampler at how many evaluations, what
    is learned, and from how many teacher solves. Sampler options (order, ...) come from the registry."""

    target: str | None = setting(None, f"Analytic target (exact denoiser; default: {DEFAULT_TARGET} unless a "
                                 "model is given).", choices=TARGETS)
    model: str | None = setting(None, "A `gentool train` checkpoint (file or run directory) or a diffusers model "
                                "directory.", metavar="PATH")
    dim: int = setting(2, "Dimension for the gaussian, gmm-random and point targets.",
                       applies={"source": ANY_DIM_TARGETS})
    sampler: str = setting("unipc", "Base sampler (deterministic samplers only).", choices=tunable_samplers())
    nfe: int = setting(5, "Denoiser evaluations per sample (2-evaluation samplers: the largest step count "
                       "within it).")
    learn: str = setting(",".join(DEFAULT_LEARN), "What is learned, comma-separated: grid (always), sigma-min, "
                         "scale (per-evaluation output scale), shift (per-evaluation σ shift).")
    train_samples: int = setting(256, "Training noises (teacher solves).")
    eval_samples: int = setting(1000, "Held-out noises for the reported errors (another generator).")
    steps: int = setting(400, "Adam steps (learning rates decay to 0 over them on a cosine).", old=("iterations",))
    lr_grid: float = setting(0.05, "Adam learning rate of the grid (θ, log σ_min).")
    lr_coef: float = setting(0.005, "Adam learning rate of the per-evaluation corrections.")
    sigma_min: float | None = setting(None, "Smallest σ of the EDM grid and of the search (default: 0.002, or "
                                      "the model's noise table).")
    sigma_max: float | None = setting(None, "Initial noise scale σ_0 (default: 80, or the model's noise table).")
    teacher_rtol: float = setting(1e-5, "Models: relative and absolute tolerance of the teacher's dopri5.",
                                  applies={"source": (MODEL_SOURCE,)})
    source = SOURCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", chosen_target(self.target, self.model, DEFAULT_TARGET))
        base_spec(self.sampler).resolve(self.given_options())
        parse_learn(self.learn)
        check_int("nfe", self.nfe, 1, 1000)
        check_int("dim", self.dim, 1, 100_000)
        check_int("train_samples", self.train_samples, 1, 10**7)
        check_int("eval_samples", self.eval_samples, 1, 10**7)
        check_int("steps", self.steps, 1, 10**7)
        for name in ("lr_grid", "lr_coef"):
            check_float(name, getattr(self, name), 0.0, lo_open=True, hi=10.0)
        check_float("teacher_rtol", self.teacher_rtol, 0.0, lo_open=True, hi=0.1)
        defaults = {f.name: f.default for f in dataclasses.fields(TuneSettings)}
        require(self.target is None or self.teacher_rtol == defaults["teacher_rtol"],
                "teacher_rtol applies to models; an analytic target's teacher is its float64 reference flow")
        require(bool({"scale", "shift"} & set(parse_learn(self.learn))) or self.lr_coef == defaults["lr_coef"],
                "lr_coef applies when learn includes scale or shift (the per-evaluation corrections)")
        if self.sigma_min is not None:
            check_float("sigma_min", self.sigma_min, 0.0, lo_open=True)
        if self.sigma_max is not None:
            check_float("sigma_max", self.sigma_max, self.sigma_min or 0.0, SIGMA_LIMIT, lo_open=True)

    def given_options(self) -> dict[str, Any]:
        """The base sampler's options set (not None); the sampler refuses those it does not take."""
        return {name: getattr(self, name) for name, *_ in sampler_option_fields(tunable_samplers())
                if getattr(self, name, None) is not None}


TuneConfig = dataclasses.make_dataclass("TuneConfig", sampler_option_fields(tunable_samplers()), bases=(TuneSettings,),
                                        frozen=True)
TuneConfig.__module__ = __name__
TuneConfig.__doc__ = TuneSettings.__doc__


def open_model(target: str | None, dim: int, model: str | None, device: torch.device) -> SampleSource:
    """The analytic target or model to tune for (gradients never flow into a model's weights)."""
    if model is None:
        return target_source(target, target_dim(target, dim))
    source = model_source(model, device)
    for p in getattr(source.denoiser, "parameters", lambda: [])():
        p.requires_grad_(False)
    return source


class TuneJob:
    """State: the noises and teacher endpoints, the searched grid, and the trainer (parameters, Adam)."""

    command = "tune"
    hint = "use a larger sigma_min or smaller learning rates (lr_grid, lr_coef)"

    def __init__(self, config: TuneConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        self.source = open_model(config.target, config.dim, config.model, self.device)
        self.analytic = isinstance(self.source.denoiser, MixtureTarget)
        self.dtype = torch.float64 if self.analytic else torch.float32
        self.spec, self.learn = base_spec(config.sampler), parse_learn(config.learn)
        self.options = config.given_options()
        self.steps = steps_for(self.spec, config.nfe)
        self.evaluations = evaluations(self.spec, self.steps, self.options)
        lo, hi = self.source.sigma_range
        self.sigma_min = config.sigma_min if config.sigma_min is not None else lo
        self.sigma_max = config.sigma_max if config.sigma_max is not None else hi
        require(self.sigma_min < self.sigma_max, f"sigma_max must be > {self.sigma_min:g} (sigma_min), got "
                f"{self.sigma_max:g}")
        self.data: dict[str, torch.Tensor] = {}
        self.searched: dict[str, float] = {}
        self.trainer: ScheduleTrainer | None = None
        self.iterations_done, self.teacher_seconds, self.tune_seconds = 0, 0.0, 0.0

    @property
    def units_total(self) -> int:
        return 2 + math.ceil(self.config.steps / CHUNK)

    @property
    def units_done(self) -> int:
        return (1 if self.data else 0) + (1 if self.trainer else 0) + math.ceil(self.iterations_done / CHUNK)

    @property
    def done(self) -> bool:
        return self.trainer is not None and self.iterations_done >= self.config.steps

    def teacher(self, x0: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
        """A converged solve of the PF-ODE from `x0` at σ_max to σ = 0."""
        if self.analytic and rtol is None:
            return reference_flow(self.source.denoiser, x0, self.sigma_max)
        tol = rtol if rtol is not None else self.config.teacher_rtol
        grid = [self.sigma_max, self.sigma_min if not self.analytic else 1e-5, 0.0]
        return solve_sampler(self.source.denoiser, x0, grid, "ode", method="dopri5", rtol=tol, atol=tol).x

    def _noise(self, n: int, seed: int) -> torch.Tensor:
        z = torch.randn(n, *self.source.shape, generator=make_generator(seed), dtype=self.dtype)
        return (z * self.sigma_max).to(self.device)

    def _teachers(self) -> Row:
        cfg, start = self.config, time.perf_counter()
        x_tr = self._noise(cfg.train_samples, self.seed)
        x_ev = self._noise(cfg.eval_samples, self.seed + HELDOUT_SEED_OFFSET)
        with torch.no_grad():
            ref_tr, ref_ev = self.teacher(x_tr), self.teacher(x_ev)
            check = x_tr[:TEACHER_CHECK]
            other = self.teacher(check, ANALYTIC_CHECK_RTOL if self.analytic else cfg.teacher_rtol / 10)
        error = endpoint_errors(ref_tr[:TEACHER_CHECK], other)["rmse"]
        self.teacher_seconds = time.perf_counter() - start
        self.data = {"x_train": x_tr, "ref_train": ref_tr, "x_eval": x_ev, "ref_eval": ref_ev,
                     "teacher_error": torch.tensor(error)}
        return {"phase": "teacher", "teacher_error": error, "seconds": self.teacher_seconds}

    def _start(self) -> Row:
        d = self.data
        _, self.searched = search_edm_grid(self.spec, self.source.denoiser, d["x_train"], d["ref_train"],
                                           self.steps, self.sigma_max, self.sigma_min, self.options)
        self.trainer = self._trainer()
        return {"phase": "search", "rho": self.searched["rho"], "sigma_min": self.searched["sigma_min"]}

    def _trainer(self) -> ScheduleTrainer:
        """The trainer started at the searched EDM grid (a function of `searched`, so a resume does not search
        again)."""
        d, found = self.data, self.searched
        init = edm_grid(self.steps, found["sigma_min"], self.sigma_max, found["rho"])
        return ScheduleTrainer(self.spec, self.source.denoiser, d["x_train"], d["ref_train"], init,
                               self.evaluations, self.learn, self._optimiser(), self.options)

    def _optimiser(self) -> Optimiser:
        return Optimiser(self.config.steps, self.config.lr_grid, self.config.lr_coef)

    def advance(self) -> list[Row]:
        if not self.data:
            return [self._teachers()]
        if self.trainer is None:
            return [self._start()]
        start, n = time.perf_counter(), min(CHUNK, self.config.steps - self.iterations_done)
        losses = [self.trainer.step() for _ in range(n)]
        self.iterations_done += n
        self.tune_seconds += time.perf_counter() - start
        return [{"iteration": self.iterations_done - n + i + 1, "loss": v} for i, v in enumerate(losses)]

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data, "searched": self.searched, "iterations_done": self.iterations_done,
                "trainer": self.trainer.state_dict() if self.trainer else None,
                "seconds": (self.teacher_seconds, self.tune_seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data, self.searched = state["data"], state["searched"]
        self.iterations_done = state["iterations_done"]
        self.teacher_seconds, self.tune_seconds = state["seconds"]
        if state["trainer"] is not None:
            self.trainer = self._trainer()
            self.trainer.load_state_dict(state["trainer"])

    def samples(self) -> dict[str, Any] | None:
        return None

    def schedule(self) -> TunedSchedule:
        """The best iterate, with the model identity and the training error."""
        cfg = self.config
        identity = model_identity(cfg.target, cfg.dim, cfg.model)
        errors = {"train_rmse": math.sqrt(self.trainer.best_loss)}
        return self.trainer.schedule(cfg.sampler, self.learn, model=identity, errors=errors)

    def heldout(self, schedule: TunedSchedule) -> dict[str, Any]:
        """Held-out errors of the tuned schedule, of the base sampler on the EDM grid (ρ = 7) and on the
        searched EDM grid, all against the teacher."""
        d, den = self.data, self.source.denoiser
        x, ref = d["x_eval"], d["ref_eval"]
        with torch.no_grad():
            edm = run_schedule(self.spec, den, x, self.edm_grid(7.0, self.sigma_min), options=self.options)
            searched = run_schedule(self.spec, den, x, self.edm_grid(self.searched["rho"],
                                                                     self.searched["sigma_min"]),
                                    options=self.options)
        return {"tuned": endpoint_errors(schedule.run(den, x), ref), "edm": endpoint_errors(edm, ref),
                "searched_edm": endpoint_errors(searched, ref) | dict(self.searched)}

    def edm_grid(self, rho: float, sigma_min: float) -> torch.Tensor:
        return edm_grid(self.steps, sigma_min, self.sigma_max, rho).to(self.dtype)

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        schedule = self.schedule()
        held = self.heldout(schedule)
        errors = {**schedule.errors, "heldout": held, "teacher_error": float(self.data["teacher_error"]),
                  "train_samples": self.config.train_samples, "eval_samples": self.config.eval_samples}
        schedule = TunedSchedule(**{**schedule.__dict__, "errors": errors})
        atomic_write_text(out / "tuned.json", schedule.to_json() + "\n")
        metrics = {"nfe": schedule.nfe, "heldout_rmse": held["tuned"]["rmse"],
                   "heldout_median": held["tuned"]["median"], "edm_rmse": held["edm"]["rmse"],
                   "searched_edm_rmse": held["searched_edm"]["rmse"], "train_rmse": errors["train_rmse"],
                   "teacher_error": errors["teacher_error"], "teacher_seconds": self.teacher_seconds,
                   "tune_seconds": self.tune_seconds}
        atomic_write_json(out / "metrics.json", metrics)
        if plots_on:
            tune_figure(out / "tune.png", self.trainer.losses, schedule.sigmas, self.edm_grid(7.0, self.sigma_min),
                        self.edm_grid(self.searched["rho"], self.searched["sigma_min"]))
        return metrics


def tune_figure(path: Path, losses: list[float], tuned: tuple[float, ...], edm: torch.Tensor,
                searched: torch.Tensor) -> Path:
    """Left: training loss per iteration (log scale). Right: σ_i against step i for the learned, the EDM
    (ρ = 7) and the searched EDM grid (the final σ_N = 0 is off the log axis)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plots.subplots(1, 2)
    ax_loss, ax_grid = axes[0]
    finite = [(i + 1, v) for i, v in enumerate(losses) if math.isfinite(v) and v > 0]
    if finite:
        ax_loss.semilogy(*zip(*finite, strict=True), label="training loss")
    ax_loss.set_xlabel("Adam iteration")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_ylabel("mean squared endpoint distance")
    ax_loss.set_title("loss over the training noises")
    ax_loss.legend()
    for label, grid, style in (("learned", torch.tensor(tuned), "o-"), ("EDM ρ=7", edm, "s--"),
                               ("searched EDM", searched, "^:")):
        pos = grid[:-1].double()
        ax_grid.semilogy(range(len(pos)), pos.tolist(), style, label=label)
    ax_grid.set_xlabel("step i")
    ax_grid.set_ylabel("noise level σ_i")
    ax_grid.set_title("σ grid (σ_N = 0 not shown)")
    ax_grid.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_grid.legend()
    return plots.save(fig, path)


SPEC = JobSpec("tune", TuneConfig, TuneJob,
               "Learn a sampler schedule (σ grid, per-evaluation corrections) for one model against a converged "
               "solve; write tuned.json, tune.png and metrics.json.")
