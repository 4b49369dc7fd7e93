"""Learned samplers (LD3-style): a σ grid and per-evaluation corrections learned for one model by matching a
high-accuracy solve of the same model from the same initial noise.

Parametrisation (`ScheduleParameters`), for a base sampler with N grid steps and K denoiser evaluations:

    σ_0 = σ_max (fixed: the initial noise scale),  σ_N = 0,
    log σ_i = log σ_max + (log σ_min − log σ_max) · c_i,   c_i = Σ_{j<i} softmax(θ)_j,   i = 0 .. N−1,

so c_0 = 0, c_{N−1} = 1 and the grid is strictly decreasing for every θ ∈ R^{N−1}; σ_min is learned in log
space when "sigma-min" is learned, else fixed. The k-th evaluation of the denoiser inside one solve is
replaced by

    D̃_k(x, σ) = x − e^{a_k} (x − D(x, σ e^{b_k})),     k = 0 .. K−1,

an output scale e^{a_k} of the noise estimate x − D ("scale"; for Euler it scales the k-th increment) and a
shift e^{b_k} of the noise level at which the model is asked ("shift", LD3's decoupled second grid); a = b = 0
is the base sampler. Learned: θ (and log σ_min) with one learning rate, (a, b) with a smaller one, by Adam
on the training loss

    L = (1/M) Σ_m ‖x_N(z_m) − x*(z_m)‖²,

the mean squared endpoint distance to the teacher x* (a converged solve of the same PF-ODE from the same
x_0 = σ_max z_m) over M training noises. The grid is initialised at the best EDM grid of a small search over
(ρ, σ_min) (`search_edm_grid`), which is also the cheap baseline a learned schedule must beat.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from gentool.core.diffusion.grids import edm_grid
from gentool.core.diffusion.samplers import SAMPLERS, SamplerSpec, run_definition
from gentool.core.diffusion.sources import is_checkpoint
from gentool.core.diffusion.targets import target_dim
from gentool.core.errors import BadInput, NumericalFailure, choose, require

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LEARNABLE: tuple[str, ...] = ("grid", "sigma-min", "scale", "shift")
DEFAULT_LEARN: tuple[str, ...] = ("grid", "sigma-min", "scale", "shift")
SEARCH_RHO: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 25.0, 40.0, 60.0, 90.0, 140.0)
SEARCH_SIGMA_MIN_FACTORS: tuple[float, ...] = (1.0, 2.5, 10.0, 25.0, 100.0)


def tunable_samplers() -> tuple[str, ...]:
    """Deterministic samplers with a definition (the ones a schedule can be learned for)."""
    return tuple(name for name, s in SAMPLERS.items() if s.fn is not None and not s.noise)


def base_spec(sampler: str) -> SamplerSpec:
    """The registry entry of `sampler`, refused unless it is tunable."""
    return SAMPLERS[choose("sampler", sampler, tunable_samplers())]


def parse_learn(value: Sequence[str] | str) -> tuple[str, ...]:
    """The learn setting as a tuple of `LEARNABLE` names ("grid,scale" or a sequence); "grid" is always learned."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    for name in names:
        choose("learn", name, LEARNABLE)
    require("grid" in names, f"learn must include 'grid' (the σ grid); got {','.join(names)}")
    return tuple(n for n in LEARNABLE if n in names)


def evaluations(spec: SamplerSpec, steps: int, options: dict[str, Any]) -> int:
    """Denoiser evaluations of one solve of `spec` over `steps` steps (counted on a one-sample dry run)."""
    grid = edm_grid(steps, 0.01, 1.0).tolist()
    _, _, nfe = run_definition(spec, lambda x, s: x, torch.zeros(1, 1, dtype=torch.float64), grid, None,
                               spec.resolve(options))
    return nfe


def steps_for(spec: SamplerSpec, nfe: int) -> int:
    """The largest number of grid steps whose solve spends at most `nfe` evaluations."""
    steps = spec.steps_for_nfe(nfe)
    while steps > 1 and evaluations(spec, steps, {}) > nfe:
        steps -= 1
    return steps


class Reparametrised:
    """The denoiser of one solve with per-evaluation corrections: the k-th call returns
    `x − e^{a_k} (x − D(x, σ e^{b_k}))` (a = `log_scale`, b = `log_shift`; None: zero)."""

    def __init__(self, denoiser: Denoiser, log_scale: torch.Tensor | None, log_shift: torch.Tensor | None) -> None:
        self.denoiser, self.log_scale, self.log_shift, self.k = denoiser, log_scale, log_shift, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        k, self.k = self.k, self.k + 1
        if self.log_shift is not None:
            sigma = sigma * self.log_shift[k].exp().to(sigma.dtype)
        d = self.denoiser(x, sigma)
        if self.log_scale is None:
            return d
        return x - self.log_scale[k].exp().to(x.dtype) * (x - d)


def run_schedule(spec: SamplerSpec, denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
                 log_scale: torch.Tensor | None = None, log_shift: torch.Tensor | None = None,
                 options: dict[str, Any] | None = None) -> torch.Tensor:
    """The base sampler's definition from `x` along `sigmas` with the corrections of `Reparametrised`;
    differentiable in the grid, `x` and the corrections."""
    model = Reparametrised(denoiser, log_scale, log_shift)
    x_end, _, _ = run_definition(spec, model, x, sigmas, None, spec.resolve(options or {}))
    return x_end


class ScheduleParameters(torch.nn.Module):
    """θ (grid shape), log σ_min and the per-evaluation (a, b) of the module docstring."""

    def __init__(self, init_sigmas: torch.Tensor, evaluations: int, learn: Sequence[str]) -> None:
        super().__init__()
        pos = init_sigmas[:-1].double()
        self.steps, self.sigma_max = len(pos), float(pos[0])
        logs = pos.log()
        inc = (logs[:-1] - logs[1:]).clamp_min(1e-12)
        self.theta = torch.nn.Parameter(inc.log() - inc.log().mean(), requires_grad="grid" in learn)
        lo = logs[-1].clone() if len(pos) > 1 else torch.tensor(math.log(self.sigma_max), dtype=torch.float64)
        self.log_sigma_min = torch.nn.Parameter(lo, requires_grad="sigma-min" in learn)
        zeros = torch.zeros(evaluations, dtype=torch.float64)
        self.log_scale = torch.nn.Parameter(zeros.clone()) if "scale" in learn else None
        self.log_shift = torch.nn.Parameter(zeros.clone()) if "shift" in learn else None

    def sigmas(self) -> torch.Tensor:
        """σ_0 .. σ_{N−1}, 0 (strictly decreasing)."""
        top = torch.tensor(math.log(self.sigma_max), dtype=torch.float64)
        if self.steps == 1:
            return torch.stack([top.exp(), torch.zeros((), dtype=torch.float64)])
        c = torch.cat([torch.zeros(1, dtype=torch.float64), torch.softmax(self.theta, 0).cumsum(0)])
        logs = top + (self.log_sigma_min - top) * c
        return torch.cat([logs.exp(), torch.zeros(1, dtype=torch.float64)])

    def groups(self, lr_grid: float, lr_coef: float) -> list[dict[str, Any]]:
        grid = [p for p in (self.theta, self.log_sigma_min) if p.requires_grad]
        coef = [p for p in (self.log_scale, self.log_shift) if p is not None]
        return [g for g in ({"params": grid, "lr": lr_grid}, {"params": coef, "lr": lr_coef}) if g["params"]]


@dataclass(frozen=True)
class TunedSchedule:
    """A learned sampler: base sampler and its options, the σ grid (ending at 0), the per-evaluation
    corrections (empty when not learned), the model it was learned for and its recorded errors."""

    sampler: str
    nfe: int
    sigmas: tuple[float, ...]
    log_scale: tuple[float, ...] = ()
    log_shift: tuple[float, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    learn: tuple[str, ...] = ("grid",)
    model: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)

    def run(self, denoiser: Denoiser, x: torch.Tensor) -> torch.Tensor:
        """Sample from `x` (at σ_0 = `sigmas[0]`) with this schedule."""
        def vec(v: tuple[float, ...]) -> torch.Tensor | None:
            return torch.tensor(v, dtype=torch.float64, device=x.device) if v else None

        grid = torch.tensor(self.sigmas, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            return run_schedule(SAMPLERS[self.sampler], denoiser, x, grid, vec(self.log_scale),
                                vec(self.log_shift), self.options)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunedSchedule:
        """A schedule from its JSON form, checked (sampler known, grid strictly decreasing to 0, one
        correction per evaluation)."""
        try:
            out = cls(sampler=str(data["sampler"]), nfe=int(data["nfe"]),
                      sigmas=tuple(float(s) for s in data["sigmas"]),
                      log_scale=tuple(float(v) for v in data.get("log_scale", ())),
                      log_shift=tuple(float(v) for v in data.get("log_shift", ())),
                      options=dict(data.get("options", {})), learn=tuple(data.get("learn", ("grid",))),
                      model=dict(data.get("model", {})), errors=dict(data.get("errors", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"not a tuned schedule (tuned.json): {exc}") from None
        base_spec(out.sampler)
        s = out.sigmas
        require(len(s) >= 2 and s[-1] == 0.0 and all(a > b for a, b in zip(s, s[1:], strict=False))
                and all(math.isfinite(v) for v in s), "tuned schedule: sigmas must be finite, strictly "
                "decreasing and end at 0")
        for name in ("log_scale", "log_shift"):
            v = getattr(out, name)
            require(not v or (len(v) == out.nfe and all(math.isfinite(a) for a in v)),
                    f"tuned schedule: {name} must have one finite value per evaluation ({out.nfe})")
        return out


def endpoint_errors(x: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """RMSE `sqrt(mean ‖x − ref‖²)`, median and 99th percentile of `‖x − ref‖` over samples."""
    err = (x - ref).flatten(1).double().norm(dim=1)
    return {"rmse": float(err.pow(2).mean().sqrt()), "median": float(err.median()),
            "p99": float(err.quantile(0.99)) if len(err) > 1 else float(err[0])}


def search_edm_grid(spec: SamplerSpec, denoiser: Denoiser, x: torch.Tensor, ref: torch.Tensor, steps: int,
                    sigma_max: float, sigma_min: float, options: dict[str, Any] | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """The EDM grid with the smallest training loss over ρ ∈ `SEARCH_RHO` × σ_min ∈ σ_min·`SEARCH_SIGMA_MIN_
    FACTORS` (those below σ_max): the cheap baseline, and the initial grid of `tune`."""
    best: tuple[float, torch.Tensor, dict[str, float]] | None = None
    with torch.no_grad():
        for rho in SEARCH_RHO:
            for factor in SEARCH_SIGMA_MIN_FACTORS:
                lo = sigma_min * factor
                if lo >= sigma_max:
                    continue
                grid = edm_grid(steps, lo, sigma_max, rho)
                loss = float((run_schedule(spec, denoiser, x, grid.to(x.dtype), options=options) - ref)
                             .flatten(1).pow(2).sum(1).mean())
                if math.isfinite(loss) and (best is None or loss < best[0]):
                    best = (loss, grid, {"rho": rho, "sigma_min": lo})
    if best is None:
        raise NumericalFailure("every EDM grid of the search gave a non-finite endpoint; use a larger sigma_min",
                               step=0)
    return best[1], best[2]


@dataclass(frozen=True)
class Optimiser:
    """Adam settings of `tune`: iterations and the learning rates of the grid and of the corrections."""

    iterations: int = 400
    lr_grid: float = 0.05
    lr_coef: float = 0.005


class ScheduleTrainer:
    """Adam on the training loss from the grid `init` (parameter groups: grid `lr_grid`, corrections
    `lr_coef`; both decayed to 0 over the iterations on a cosine), keeping the best iterate; a non-finite
    loss undoes the step and halves both learning rates. `state_dict()` holds everything to continue
    bit-identically."""

    def __init__(self, spec: SamplerSpec, denoiser: Denoiser, x: torch.Tensor, ref: torch.Tensor,
                 init: torch.Tensor, evaluations_: int, learn: Sequence[str], settings: Optimiser,
                 options: dict[str, Any] | None = None) -> None:
        self.spec, self.denoiser, self.x, self.ref, self.options = spec, denoiser, x, ref, dict(options or {})
        self.params, self.evaluations = ScheduleParameters(init, evaluations_, learn), evaluations_
        self.opt = torch.optim.Adam(self.params.groups(settings.lr_grid, settings.lr_coef))
        self.decay = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(settings.iterations, 1),
                                                                eta_min=0.0)
        self.losses: list[float] = []
        self.best_loss, self.best = math.inf, self._snapshot()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.state_dict().items()}

    def loss(self) -> torch.Tensor:
        """L = mean over samples of ‖x_N − x*‖² at the current parameters."""
        p = self.params
        x_end = run_schedule(self.spec, self.denoiser, self.x, p.sigmas().to(self.x.dtype), p.log_scale,
                             p.log_shift, self.options)
        return (x_end - self.ref).flatten(1).pow(2).sum(1).mean()

    def step(self) -> float:
        """One Adam step; returns the loss before it."""
        self.opt.zero_grad()
        loss = self.loss()
        value = float(loss.detach())
        self.losses.append(value)
        if not math.isfinite(value):
            self.params.load_state_dict(self.best)
            for group in self.opt.param_groups:
                group["lr"] /= 2
            return value
        if value < self.best_loss:
            self.best_loss, self.best = value, self._snapshot()
        loss.backward()
        self.opt.step()
        self.decay.step()
        return value

    def schedule(self, sampler: str, learn: Sequence[str], **extra: Any) -> TunedSchedule:
        """The best iterate as a `TunedSchedule` (`extra`: its `model` and `errors`)."""
        current = self._snapshot()
        p = self.params
        p.load_state_dict(self.best)

        def values(v: torch.Tensor | None) -> tuple[float, ...]:
            return tuple(v.detach().tolist()) if v is not None else ()

        out = TunedSchedule(sampler, self.evaluations, tuple(p.sigmas().detach().tolist()), values(p.log_scale),
                            values(p.log_shift), self.options, tuple(learn), **extra)
        p.load_state_dict(current)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"params": self._snapshot(), "opt": self.opt.state_dict(), "decay": self.decay.state_dict(),
                "losses": list(self.losses),
                "best_loss": self.best_loss, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params.load_state_dict(state["params"])
        self.opt.load_state_dict(state["opt"])
        self.decay.load_state_dict(state["decay"])
        self.losses, self.best_loss, self.best = list(state["losses"]), state["best_loss"], state["best"]


def tune(denoiser: Denoiser, sampler: str, nfe: int, x_train: torch.Tensor, ref_train: torch.Tensor, *,
         sigma_max: float, sigma_min: float, learn: Sequence[str] = DEFAULT_LEARN,
         options: dict[str, Any] | None = None, settings: Optimiser = Optimiser(),
         on_step: Callable[[int, float], None] | None = None) -> TunedSchedule:
    """Learn a schedule of `sampler` spending at most `nfe` evaluations for `denoiser`, from training pairs:
    initial states `x_train = σ_max z` and the endpoints `ref_train` of a converged solve from them. The
    grid starts at the best searched EDM grid (σ_min of the search: multiples of `sigma_min`); see the
    module docstring for what is learned. `on_step(iteration, loss)` reports progress."""
    spec, learn = base_spec(sampler), parse_learn(learn)
    given = dict(options or {})
    spec.resolve(given)
    steps = steps_for(spec, nfe)
    k = evaluations(spec, steps, given)
    init, searched = search_edm_grid(spec, denoiser, x_train, ref_train, steps, sigma_max, sigma_min, given)
    trainer = ScheduleTrainer(spec, denoiser, x_train, ref_train, init, k, learn, settings, given)
    for it in range(settings.iterations):
        loss = trainer.step()
        if on_step is not None:
            on_step(it, loss)
    return trainer.schedule(sampler, learn, errors={"train_loss": trainer.best_loss, "search": searched})


def _sha256_files(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def model_identity(target: str | None, dim: int, model: str | None) -> dict[str, Any]:
    """What a tuned schedule was made for: an analytic target's name and dimension, or the SHA-256 of a
    checkpoint file (a run directory's `ckpt.pt`) or of every file of a diffusers model directory."""
    if model is None:
        return {"target": target, "dim": target_dim(target, dim)}
    path = Path(model)
    if is_checkpoint(model):
        path = path / "ckpt.pt" if path.is_dir() else path
        return {"model_sha256": _sha256_files([path], path.parent)}
    require(path.is_dir(), f"model {model!r}: a tuned schedule needs a local checkpoint or model directory")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"model_sha256": _sha256_files(files, path)}


def load_tuned(path: str | Path) -> TunedSchedule:
    """A `tuned.json` (or the run directory holding one)."""
    p = Path(path)
    p = p / "tuned.json" if p.is_dir() else p
    if not p.is_file():
        raise BadInput(f"tuned schedule not found: {p}")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read tuned schedule {p}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{p} is not a tuned schedule")
    return TunedSchedule.from_dict(data)
