"""The `optimize particles` job (the simplex jobs are in `gentool.core.jobs.simplex`).

Particles follow a Wasserstein gradient flow over flow time `time` (steps × step size; each method's time
scale is in `gentool.core.probspace.particles`). One unit = `log_every` steps; rows are the trace: flow time,
objective, mean, variance, and where they exist the multi-scale MMD² against a fresh exact target sample,
the moment errors against the flow's limit (`mean_err`, `cov_err`) and against the exact Fokker–Planck
moments at the same time (`fp_mean_err`, `fp_cov_err`). Outputs `final.npz` (x, x0, snapshots, reference),
`objective.png`, `moments.png` (exact curves dashed), `snapshots.png`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.config import (
    check_applies,
    check_float,
    check_int,
    file_digest,
    float64_tensor,
    matrix_parser,
    read_array,
    read_tensors,
    setting,
    vector_parser,
)
from gentool.core.errors import BadInput, NumericalFailure, choose, require
from gentool.core.io import atomic_save_npz, check_allocation
from gentool.core.metrics import mmd2
from gentool.core.metrics.gaussian import mean_cov
from gentool.core.nn import make_generator
from gentool.core.probspace import (
    DEFAULTS,
    MMD_KERNELS,
    PARTICLE_METHODS,
    TARGETS,
    FreeEnergy,
    QuadraticFlow,
    Target,
    advance,
    check_target,
    custom_target,
    gaussian_target,
    kl_energy,
    make_method,
    make_target,
    moment_errors,
    steps_between,
)
from gentool.core.probspace.kernels import median_bandwidth, silverman_factor
from gentool.core.progress import Reports, one_step
from gentool.core.run.contract import JobSpec, Row, SteppedUnits
from gentool.core.run.rundir import read_snapshot, snapshot_path
from gentool.core.solvers import FIXED_METHODS

DIVERGED = 1e6  # particles this many times farther out than the start and the target: blown up
N_DEFAULT = 1000
N_TARGET = 4000
NOISE_PAIRS = 4  # pairs of independent exact samples behind the MMD² noise level
NOT_REACHED = 2.0  # a final MMD² above this many times the noise level: the particles have not reached the target
ROWS = 50  # trace rows (units) of a run with the default log_every
MMD_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0)  # metric bandwidths: these multiples of the reference's median distance
TARGET_CHOICES = (*TARGETS, "none")
_TIMES = ", ".join(f"{m} {d.time:g}" for m, d in DEFAULTS.items())
_STEPS = ", ".join(f"{m} {d.step:g}" for m, d in DEFAULTS.items())




MAX_STEPS = 10**9  # flow steps of one run (time / step_size)
BANDWIDTH_MAX = 1e150  # kernels take h^2 (float64 overflows beyond about 1.3e154)
KERNEL_METHODS = ("kde-flow", "svgd", "mmd-flow")  # deterministic kernel flows: a bandwidth, an ODE solver
FREE_ENERGY = ("langevin", "kde-flow", "svgd")  # flows of the free energy (entropy, interaction; mmd-flow: MMD^2)


@dataclass(frozen=True)
class ParticlesConfig:
    """Move particles along a Wasserstein gradient flow (KL to a target, potential, interaction, entropy)."""

    target: str = setting("gmm-ring", f"Target density: {', '.join(TARGET_CHOICES)} (no potential: the heat flow), "
                          "or module:function returning log pi(x) of shape (n,) (called as function(x, data) "
                          "when data is given).", metavar="NAME")
    target_mean: tuple[float, ...] | None = setting(None, "Mean of the gaussian target (default 0): '1,-1' or an "
                                                    "array file.", parse=vector_parser("target_mean"), metavar="VECTOR")
    target_cov: tuple[tuple[float, ...], ...] | None = setting(
        None, "Covariance of the gaussian target (default I): 'a,b;c,d' or an array file.",
        parse=matrix_parser("target_cov"), metavar="MATRIX")
    data: Path | None = setting(None, "Data of a module:function target, passed as its second argument: a "
                                ".npy/.csv/.txt file (a tensor) or .npz (a dict of tensors).", metavar="FILE")
    method: str = setting("langevin", "Particle method.", choices=PARTICLE_METHODS)
    time: float | None = setting(None, f"Flow time T of the method's objective (steps = T / step_size, the last step "
                                 "shortened to land on T; a resumed run may raise it). Default per method, for "
                                 f"targets of variance about 1 (flow time grows with the variance): {_TIMES}.",
                                 extendable=True)
    step_size: float | None = setting(None, f"Flow time per step. Default per method: {_STEPS}.")
    n: int | None = setting(None, f"Number of particles (default {N_DEFAULT}, or the rows of init).", short="-n")
    init: str | None = setting(None, "Initial particles from an array file (n, d): .npy/.npz/.csv/.txt, "
                               "FILE.npz:NAME picks one array (default: Gaussian init_mean, init_std).",
                               metavar="FILE")
    init_mean: tuple[float, ...] | None = setting(None, "Mean of the Gaussian initial particles (default 0).",
                                                  parse=vector_parser("init_mean"), metavar="VECTOR")
    init_std: float | None = setting(None, "Std of the Gaussian initial particles (default 1).")
    dim: int | None = setting(None, "Dimension when the target does not fix it (none, module:function; default 2, "
                              "or that of init or init_mean).")
    entropy: float = setting(1.0, "Entropy weight eps (1 = KL to the target).", applies={"method": FREE_ENERGY})
    interaction: float = setting(0.0, "Quadratic interaction W(z) = a|z|^2/2 weight a.",
                                 applies={"method": FREE_ENERGY})
    bandwidth: float | None = setting(None, "Kernel bandwidth of kde-flow (isotropic; default: bandwidth matrix "
                                      "h^2 Cov with Silverman's h), svgd (default: median rule) or a gaussian "
                                      "mmd_kernel (default: median distance).", applies={"method": KERNEL_METHODS})
    mmd_kernel: str = setting("energy", "Kernel of mmd-flow: energy (-|x - y|, no bandwidth) or gaussian.",
                              choices=tuple(MMD_KERNELS), applies={"method": ("mmd-flow",)})
    n_target: int = setting(N_TARGET, "Exact target samples driving mmd-flow (drawn once; the flow matches them).",
                            applies={"method": ("mmd-flow",)})
    solver: str = setting("euler", "Fixed-step solver-core method of kde-flow, svgd and mmd-flow (langevin is "
                          "Euler-Maruyama).", choices=FIXED_METHODS, applies={"method": KERNEL_METHODS})
    mmd_bandwidths: tuple[float, ...] | None = setting(
        None, "Bandwidths of the reported MMD^2 (one multi-scale kernel) against a fresh exact target sample "
        f"(default: {', '.join(f'{f:g}' for f in MMD_FACTORS)} x its median distance).", metavar="LIST")
    log_every: int | None = setting(None, f"Steps per unit: trace row and checkpoint every this many steps (default: "
                                    f"{ROWS} rows over the run).")

    def __post_init__(self) -> None:
        choose("method", self.method, PARTICLE_METHODS)
        choose("solver", self.solver, FIXED_METHODS)
        choose("mmd_kernel", self.mmd_kernel, MMD_KERNELS)
        self._check_numbers()
        self._resolve_defaults()
        self._check_target_settings()
        self._check_init()
        target = self.make_target()
        self._check_method(target)

    def _check_numbers(self) -> None:
        if self.n is not None:
            check_int("n", self.n, 2, 10**8)
        if self.time is not None:
            check_float("time", self.time, 0.0)
        if self.step_size is not None:
            check_float("step_size", self.step_size, 0.0, lo_open=True)
        if self.dim is not None:
            check_int("dim", self.dim, 1, 10_000)
        if self.init_std is not None:
            check_float("init_std", self.init_std, 0.0, lo_open=True)
        if self.bandwidth is not None:
            check_float("bandwidth", self.bandwidth, 0.0, BANDWIDTH_MAX, lo_open=True)
        for h in self.mmd_bandwidths or ():
            check_float("mmd_bandwidths", h, 0.0, lo_open=True)
        require(self.mmd_bandwidths is None or len(self.mmd_bandwidths) > 0, "mmd_bandwidths must not be empty")
        if self.log_every is not None:
            check_int("log_every", self.log_every, 1)
        check_int("n_target", self.n_target, 2, 10**8)
        check_float("entropy", self.entropy, 0.0)
        check_float("interaction", self.interaction)

    def _resolve_defaults(self) -> None:
        """The method's default time and step, and `ROWS` rows, become the recorded values (so a resumed run
        keeps them and may extend time)."""
        defaults = DEFAULTS[self.method]
        if self.time is None:
            object.__setattr__(self, "time", defaults.time)
        if self.step_size is None:
            object.__setattr__(self, "step_size", defaults.step)
        ratio = self.time / self.step_size
        require(ratio <= MAX_STEPS, f"time / step_size = {ratio:.3g} steps, more than {MAX_STEPS:.0e}: raise "
                f"step_size (now {self.step_size:g}) or lower time (now {self.time:g})")
        require(steps_between(0.0, self.time, self.step_size) >= 1, f"time / step_size = {ratio:.3g}: the flow "
                f"takes no step; lower step_size (now {self.step_size:g}) or raise time (now {self.time:g})")
        if self.log_every is None:
            steps = steps_between(0.0, self.time, self.step_size)
            object.__setattr__(self, "log_every", max(1, math.ceil(steps / ROWS)))

    def _check_target_settings(self) -> None:
        custom = ":" in self.target
        if not custom:
            choose("target", self.target, TARGET_CHOICES)
        gaussian = self.target == "gaussian"
        require(gaussian or (self.target_mean is None and self.target_cov is None),
                f"target_mean and target_cov set the gaussian target, not {self.target!r}")
        require(custom or self.data is None, f"data is only read by a module:function target, not by {self.target!r}")
        require(not custom or self.dim is not None or self.init is not None or self.init_mean is not None,
                "a module:function target needs dim (or init, init_mean) to fix the dimension")
        if gaussian and self.target_mean is not None and self.target_cov is not None:
            require(len(self.target_cov) == len(self.target_mean), f"target_cov is {len(self.target_cov)} x "
                    f"{len(self.target_cov[0])} but target_mean has {len(self.target_mean)} entries")
        if self.target == "none":
            require(self.entropy > 0 or self.interaction != 0, "target none needs entropy > 0 or an interaction")

    def _check_init(self) -> None:
        if self.init is not None:
            require(self.init_mean is None and self.init_std is None, "init_mean and init_std describe the "
                    "Gaussian start; init gives the particles themselves")
            x = self.initial_array()
            require(self.n is None or self.n == x.shape[0], f"n is {self.n} but init holds {x.shape[0]} particles")
            require(x.shape[1] == self.d, f"init has {x.shape[1]} columns, the problem has dimension {self.d}")
        if self.init_mean is not None:
            require(len(self.init_mean) == self.d, f"init_mean has {len(self.init_mean)} entries, the target has "
                    f"dimension {self.d}")

    def _check_method(self, target: Target | None) -> None:
        m = self.method
        check_applies(self)  # the settings of other methods (bandwidth, solver, mmd_kernel, n_target, entropy, ...)
        if m == "svgd":
            require(self.entropy > 0, "svgd needs a positive entropy weight")
            require(target is not None or self.interaction > 0, "svgd needs a target density: with target none and "
                    "no confining interaction (interaction > 0) its flow is repulsion only; use kde-flow or langevin "
                    "for the heat flow")
        if m == "mmd-flow":
            require(target is not None and target.sampler is not None,
                    f"mmd-flow needs a target with an exact sampler, not {self.target!r}")
            require(self.mmd_kernel == "gaussian" or self.bandwidth is None,
                    "the energy mmd_kernel has no bandwidth; set mmd_kernel gaussian to use one")
        require(self.mmd_bandwidths is None or (target is not None and target.sampler is not None),
                "mmd_bandwidths need a target with an exact sampler (the MMD is taken against its samples)")

    @property
    def d(self) -> int:
        """The dimension: the target's, else dim, init's or init_mean's, else 2."""
        fixed = self._target_dim()
        if fixed is not None:
            require(self.dim is None or self.dim == fixed, f"dim is {self.dim} but the target has dimension {fixed}")
            return fixed
        if self.dim is not None:
            return self.dim
        if self.init is not None:
            return int(self.initial_array().shape[1])
        return len(self.init_mean) if self.init_mean is not None else 2

    def _target_dim(self) -> int | None:
        if self.target == "gaussian":
            given = self.target_mean if self.target_mean is not None else self.target_cov
            return len(given) if given is not None else None
        return make_target(self.target).dim if self.target in TARGETS else None

    def initial_array(self) -> np.ndarray:
        """The init file's particles, checked to be a finite (n >= 2, d) array."""
        x = np.asarray(read_array(self.init, "init"), dtype=float)
        require(x.ndim == 2 and x.shape[0] >= 2, f"init must hold an (n >= 2, d) array, got shape {x.shape}")
        require(bool(np.isfinite(x).all()), "init contains NaN/inf")
        return x

    def load_data(self) -> Any:
        """The custom target's data file as a float64 tensor (or a dict of them, from .npz), or None."""
        return read_tensors(self.data, "data")

    def make_target(self) -> Target | None:
        """The target density (None for target none)."""
        if self.target == "none":
            return None
        if ":" in self.target:
            return custom_target(self.target, self.d, self.load_data())
        if self.target == "gaussian":
            d = self.d
            mean = float64_tensor(self.target_mean, torch.zeros(d, dtype=torch.float64))
            cov = float64_tensor(self.target_cov, torch.eye(d, dtype=torch.float64))
            return gaussian_target(mean, cov)
        return make_target(self.target)

    @property
    def particles(self) -> int:
        """The number of particles."""
        if self.init is not None:
            return int(self.initial_array().shape[0])
        return N_DEFAULT if self.n is None else self.n


def _stream(seed: int, name: str) -> torch.Generator:
    """An independent generator per purpose (initial particles, Langevin noise, driving and reference samples)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return make_generator(int.from_bytes(digest[:8], "little") >> 1)


@dataclass
class Reference:
    """A fresh exact target sample for the metrics, the bandwidths of the multi-scale MMD², and its noise level:
    the largest |MMD²| between two independent exact samples of the same size over `NOISE_PAIRS` pairs."""

    x: torch.Tensor
    bandwidths: tuple[float, ...]
    noise: float

    @classmethod
    def draw(cls, target: Target, n: int, seed: int, bandwidths: tuple[float, ...] | None) -> Reference:
        g = _stream(seed, "reference")
        ref = target.sample(n, g)
        hs = bandwidths or tuple(f * median_bandwidth(ref) for f in MMD_FACTORS)
        noise = max(abs(mmd2(target.sample(n, g), target.sample(n, g), hs)) for _ in range(NOISE_PAIRS))
        return cls(ref, hs, noise)

    def mmd2(self, x: torch.Tensor) -> float:
        return mmd2(x, self.x.to(x), self.bandwidths)


@dataclass
class Exact:
    """The closed-form moments of a quadratic free energy: the limit `(μ∞, Σ∞)` and, for Fokker–Planck methods,
    the moments at flow time t from the particles' initial moments."""

    flow: QuadraticFlow
    mean0: torch.Tensor
    cov0: torch.Tensor
    fokker_planck: bool

    def limit(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.flow.limit(self.mean0)

    def at(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.moments(t, self.mean0, self.cov0)

    def errors(self, x: torch.Tensor, t: float) -> Row:
        row: Row = {}
        lim = self.limit()
        if lim is not None:
            row["mean_err"], row["cov_err"] = moment_errors(x, *lim)
        if self.fokker_planck:
            row["fp_mean_err"], row["fp_cov_err"] = moment_errors(x, *self.at(t))
        return row


STATE_COPIES = 16  # (n, d) arrays alive: particles, start, solver stages, snapshots, reference and noise samples
KERNEL_BLOCKS = 3  # (n, n + m) float64 blocks alive in a kernel flow's step: distances, their square, the kernel


def particle_bytes(method: str, n: int, d: int, n_target: int, interaction: float) -> float:
    """Estimated peak bytes of a particle flow (float64): `STATE_COPIES · n · d`, plus for the kernel flows
    (kde-flow, svgd, mmd-flow) `KERNEL_BLOCKS · n · (n + m)` for the n × n Gram matrix and, for mmd-flow, the
    n × m one against its m = n_target driving samples, plus two n × n blocks for a nonzero interaction's energy
    (`|x_i − x_j|²`)."""
    m = n_target if method == "mmd-flow" else 0
    kernel = KERNEL_BLOCKS * n * (n + m) if method in KERNEL_METHODS else 0
    pairs = 2 * n * n if interaction != 0 else 0
    return 8.0 * (STATE_COPIES * n * d + kernel + pairs + m * d)


class ParticlesJob(SteppedUnits, Reports):
    """State: particles, step, flow time, the noise generator's state; the initial particles and the driving and
    reference samples are redrawn from the seed."""

    command = "optimize particles"
    hint = "reduce step_size"

    def __init__(self, config: ParticlesConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        n, d = config.particles, config.d
        check_allocation(particle_bytes(config.method, n, d, config.n_target, config.interaction),
                         f"optimize particles (method {config.method}, n={n}, dim {d}"
                         f"{f', n_target={config.n_target}' if config.method == 'mmd-flow' else ''})", self.device)
        self.target = config.make_target()
        self.digest = file_digest(config.init) + file_digest(config.data)
        self.x0 = self._initial().to(self.device)
        if self.target is not None:
            check_target(self.target, self.x0[:64])
        base = FreeEnergy() if self.target is None else kl_energy(self.target)
        self.energy = FreeEnergy(base.potential, config.interaction, config.entropy, self.target)
        self.noise = _stream(self.seed, "noise")
        self.driving = (self.target.sample(config.n_target, _stream(self.seed, "driving")).to(self.device)
                        if config.method == "mmd-flow" else None)
        self.flow = make_method(config.method, self.energy, bandwidth=config.bandwidth, target_samples=self.driving,
                                kernel=config.mmd_kernel, solver=config.solver)
        sampler = self.target is not None and self.target.sampler is not None
        self.reference = (Reference.draw(self.target, len(self.x0), self.seed, config.mmd_bandwidths)
                          if sampler else None)
        quad = self.energy.quadratic(config.d)
        m0, c0 = mean_cov(self.x0.cpu())
        self.exact = None if quad is None else Exact(quad, m0, c0, self.flow.fokker_planck)
        self.x, self.step, self.t = self.x0.clone(), 0, 0.0
        self.snapshot_every = max(1, self.units_total // 4)

    def _initial(self) -> torch.Tensor:
        cfg = self.config
        if cfg.init is not None:
            return torch.as_tensor(cfg.initial_array(), dtype=torch.float64)
        d = cfg.d
        mean = float64_tensor(cfg.init_mean, torch.zeros(d, dtype=torch.float64))
        std = 1.0 if cfg.init_std is None else cfg.init_std
        return mean + std * torch.randn(cfg.particles, d, generator=_stream(self.seed, "init"), dtype=torch.float64)

    @property
    def step_count(self) -> int:
        return self.step

    @property
    def step_total(self) -> int:
        return self.step + steps_between(self.t, self.config.time, self.config.step_size)

    @property
    def step_chunk(self) -> int:
        return self.config.log_every

    def row(self, x: torch.Tensor) -> Row:
        """The trace row of the particles x at the current step and time."""
        out: Row = {"step": self.step, "t": self.t, "objective": self.energy.value(x), "mean": x.mean(0).tolist(),
                    "var": x.var(0).tolist()}
        if self.reference is not None:
            out["mmd2"] = self.reference.mmd2(x)
        if self.exact is not None:
            out |= self.exact.errors(x.cpu(), self.t)
        return out

    def advance(self) -> list[Row]:
        cfg = self.config
        first = [self.row(self.x)] if self.step == 0 else []
        self.x, self.t, done = advance(self.flow, self.x, self.t, cfg.time, cfg.step_size,
                                       max_steps=self.next_chunk(), generator=self.noise)
        self.step += done
        self._check_finite()
        return [*first, self.row(self.x)]

    def _check_finite(self) -> None:
        scale = 1.0 + float(self.x0.abs().max())
        if self.reference is not None:
            scale += float(self.reference.x.abs().max())
        big = float(self.x.abs().max())
        if not math.isfinite(big) or big > DIVERGED * scale:
            raise NumericalFailure(f"particles diverged by step {self.step} (t={self.t:.6g}, max |x| {big:.3g}); "
                                   f"reduce step_size (now {self.config.step_size:g})")

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "step": self.step, "t": self.t, "rng": self.noise.get_state(), "files": self.digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("files", "") != self.digest:
            raise BadInput("the init or data file changed since the run started; start a new run")
        self.x, self.step, self.t = state["x"].to(self.device), int(state["step"]), float(state["t"])
        self.noise.set_state(state["rng"])

    def samples(self) -> dict[str, Any]:
        return {"x": self.x, "step": self.step, "t": self.t}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        with one_step(self.progress, "snapshots"):
            snaps = self._snapshots(out)
            self._save(out, snaps)
        if plots_on:
            with one_step(self.progress, "figures"):
                self._plot(out, rows, snaps)
        return self._summary(rows)

    def _snapshots(self, out: Path) -> dict[float, np.ndarray]:
        snaps = {0.0: self.x0.cpu().numpy()}
        for unit in range(1, self.units_done + 1):
            if snapshot_path(out, unit).is_file():
                data = read_snapshot(out, unit)
                snaps[float(data["t"])] = data["x"]
        snaps[self.t] = self.x.cpu().numpy()
        return snaps

    def _save(self, out: Path, snaps: dict[float, np.ndarray]) -> None:
        times = sorted(snaps)
        extra: dict[str, Any] = {}
        if self.reference is not None:
            extra |= {"reference": self.reference.x.cpu().numpy(),
                      "mmd2_bandwidths": np.array(self.reference.bandwidths)}
        if self.exact is not None and self.exact.limit() is not None:
            extra |= dict(zip(("limit_mean", "limit_cov"), (v.numpy() for v in self.exact.limit()), strict=True))
        atomic_save_npz(out / "final.npz", x=self.x.cpu().numpy(), x0=self.x0.cpu().numpy(),
                        snapshot_times=np.array(times), snapshots=np.stack([snaps[s] for s in times]), **extra)

    def _plot(self, out: Path, rows: list[Row], snaps: dict[float, np.ndarray]) -> None:
        keys = [k for k in ("objective", "mmd2", "mean_err", "cov_err", "fp_mean_err", "fp_cov_err") if k in rows[-1]]
        plots.curves(out / "objective.png", {self.config.method: rows}, "t", keys, log_keys=("mmd2",))
        plots.curves(out / "moments.png", *self._moment_series(rows), dashed=("exact Fokker-Planck", "limit"))
        plots.sample_panels(out / "snapshots.png", [(f"t = {t:.4g}", snaps[t]) for t in sorted(snaps)],
                            None if self.reference is None else self.reference.x)

    def _moment_series(self, rows: list[Row]) -> tuple[dict[str, list[Row]], str, list[str]]:
        """Mean and variance of the first two coordinates against t: the particles, the exact Fokker–Planck
        moments (kde-flow, langevin) and the flow's limit, where they exist."""
        dims = range(min(2, self.config.d))
        keys = [f"{s}{i}" for s in ("mean", "var") for i in dims]

        def flat(t: float, mean: list[float], var: list[float]) -> Row:
            return {"t": t, **{f"mean{i}": mean[i] for i in dims}, **{f"var{i}": var[i] for i in dims}}

        series = {self.config.method: [flat(r["t"], r["mean"], r["var"]) for r in rows]}
        if self.exact is not None and self.exact.fokker_planck:
            series["exact Fokker-Planck"] = [flat(r["t"], m.tolist(), torch.diagonal(c).tolist())
                                             for r in rows for m, c in [self.exact.at(r["t"])]]
        lim = None if self.exact is None else self.exact.limit()
        if lim is not None:
            series["limit"] = [flat(r["t"], lim[0].tolist(), torch.diagonal(lim[1]).tolist()) for r in rows]
        return series, "t", keys

    def _summary(self, rows: list[Row]) -> Row:
        cfg, last = self.config, rows[-1]
        keep = ("t", "objective", "mmd2", "mean_err", "cov_err", "fp_mean_err", "fp_cov_err")
        summary: Row = {"steps": self.step, "step_size": cfg.step_size} | {k: last[k] for k in keep if k in last}
        if self.reference is not None:
            summary["mmd2_noise"] = self.reference.noise
            summary["mmd2_bandwidths"] = ",".join(f"{h:.3g}" for h in self.reference.bandwidths)
        if self.driving is not None and self.target.moments is not None:
            summary["driving_mean_err"], summary["driving_cov_err"] = moment_errors(self.driving.cpu(),
                                                                                     *self.target.moments)
        notes = [n for n in (self._reach_note(rows), self._bias_note()) if n]
        return summary | ({"warning": "; ".join(notes)} if notes else {})

    def _reach_note(self, rows: list[Row]) -> str:
        """A warning when the final MMD² is above `NOT_REACHED` × its noise level, with the knob to turn: time
        while the MMD² still falls by more than its noise level over the second half of the run; else first the
        step (or kde-flow's bandwidth), since a stalled MMD² points to the method's bias, which time does not
        remove."""
        last, mid = rows[-1], rows[len(rows) // 2]
        if self.reference is None or last["mmd2"] <= NOT_REACHED * self.reference.noise:
            return ""
        noise = self.reference.noise
        head = (f"not at the target: MMD^2 {last['mmd2']:.3g} is {last['mmd2'] / noise:.3g} times the level of two "
                f"exact samples ({noise:.3g})")
        if mid["mmd2"] - last["mmd2"] > noise:
            return (f"{head}; still falling (MMD^2 {mid['mmd2']:.3g} at t = {mid['t']:.4g}): raise time (now "
                    f"{self.config.time:g}; flow time grows with the target's variance)")
        knob = "bandwidth or step_size" if self.config.method == "kde-flow" else "step_size"
        return (f"{head}; not falling since t = {mid['t']:.4g} (MMD^2 {mid['mmd2']:.3g}), which points to the "
                f"method's bias at this setting: lower {knob} (now {self.config.step_size:g}), or raise time (now "
                f"{self.config.time:g}) if objective.png still moves")

    def _bias_note(self) -> str:
        """kde-flow's smoothing bias, stated with its size."""
        cfg = self.config
        if cfg.method != "kde-flow" or not cfg.entropy:
            return ""
        if cfg.bandwidth is not None:
            return (f"kde-flow's score is that of the particles' density smoothed by N(0, h^2 I) "
                    f"(h = {cfg.bandwidth:g}): a Gaussian limit's variances come out about h^2 = "
                    f"{cfg.bandwidth ** 2:.3g} low; langevin has no such bias")
        h = silverman_factor(*self.x.shape)
        return (f"kde-flow's score is that of the particles' density smoothed by N(0, h^2 Cov) (h = {h:.3g}), which "
                f"slows diffusion by the factor 1/(1 + h^2) = {1 / (1 + h * h):.3g}: a Gaussian limit's covariance "
                f"comes out about {100 * h * h / (1 + h * h):.2g}% low (more in the tails at small n); langevin has "
                "no such bias")

PARTICLES = JobSpec("optimize particles", ParticlesConfig, ParticlesJob,
                    "Move particles along a Wasserstein gradient flow (KL to a target, potential/interaction/"
                    "entropy) over a flow time.")
