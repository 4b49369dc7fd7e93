"""Solver benchmarks: wall time per step of gentool vs torchdiffeq vs a hand-written loop vs the model alone.

Returns rows (dicts); rendering is the caller's job (`gentool bench solvers`, `bench/solvers.py`).
Fields: `mlp2` = MLP 2->64->64->2 on x, `mlp3` = MLP 3->256->256->256->2 on (x, t), both SiLU.
The floor is the model alone on the inputs of gentool's own solve (the same calls, batch and values):
replayed from one CUDA graph on CUDA, an eager loop on CPU. Timings are the best of `repeats` runs after one
warm-up run.
"""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from gentool.core.errors import choose
from gentool.core.nn import make_generator, mlp, seeded
from gentool.core.solvers.api import ADAPTIVE_METHODS, FIXED_METHODS, batch_odeint
from gentool.core.solvers.term import Field

FIELDS = ("mlp2", "mlp3")
CPU_BATCH_SIZES = (256, 4096, 65536)
GPU_BATCH_SIZES = (1024, 65536, 1048576)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    batch_sizes: tuple[int, ...]
    steps: int = 50
    fixed_methods: tuple[str, ...] = ("euler", "rk4")
    adaptive_methods: tuple[str, ...] = ADAPTIVE_METHODS
    fields: tuple[str, ...] = FIELDS
    rtol: float = 1e-5
    controller: str = "integral"  # gentool's step controller; torchdiffeq and torchode run integral control
    repeats: int = 3
    seed: int = 0
    compile: bool = False  # also time gentool with compile=True


# Issue 11's H100 measurement (fp32, no TF32) of diffrax dopri5 with per-sample steps (vmap), rtol 1e-5,
# atol 1e-7, same MLP and interval: the adaptive target is 1.5x these times (ms). A reference, not measured here.
DIFFRAX_H100_MS = {1024: 1.16, 65536: 3.04, 1048576: 29.4}


def make_field(name: str, device: torch.device, seed: int) -> Field:
    """The benchmark field `name` with seeded weights, as `f(t, x)`."""
    choose("field", name, FIELDS)
    with seeded(seed):
        net = mlp([2, 64, 64, 2] if name == "mlp2" else [3, 256, 256, 256, 2], "silu").to(device)
    if name == "mlp2":
        return lambda t, x: net(x)
    return lambda t, x: net(torch.cat([x, t[:, None]], dim=1))


def hand_loop(method: str, f: Field, x: torch.Tensor, grid: Sequence[float]) -> torch.Tensor:
    """A hand-written eager loop (the classic formulas, Python-float step sizes)."""
    b, dev, dt = x.shape[0], x.device, x.dtype
    ts = [torch.full((b,), v, device=dev, dtype=dt) for v in grid]
    mids = [torch.full((b,), (u + v) / 2, device=dev, dtype=dt)
            for u, v in zip(grid[:-1], grid[1:], strict=True)]
    for i in range(len(grid) - 1):
        h, t0, tm, t1 = grid[i + 1] - grid[i], ts[i], mids[i], ts[i + 1]
        if method == "euler":
            x = x + h * f(t0, x)
        elif method == "midpoint":
            x = x + h * f(tm, x + (h / 2) * f(t0, x))
        elif method == "heun":
            k1 = f(t0, x)
            x = x + (h / 2) * (k1 + f(t1, x + h * k1))
        else:
            k1 = f(t0, x)
            k2 = f(tm, x + (h / 2) * k1)
            k3 = f(tm, x + (h / 2) * k2)
            k4 = f(t1, x + h * k3)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


MIN_TIMED_S = 0.25  # a contender's rounds add up to at least this much (fast cases run more rounds)
MAX_ROUNDS = 200


def best_times(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
               warmup: bool = True, clock: str = "wall") -> dict[str, float]:
    """Best time (s) of each function over at least `repeats` rounds, after one warm-up run of each
    (`warmup=False` when the caller has just run each one already).

    The rounds interleave the functions (a, b, c, a, b, c, ...), so a burst of load on a shared machine
    slows one run of every contender instead of all runs of one of them. A fast case runs more rounds (as
    `timeit`'s autorange): enough for the slowest warm-up to add up to `MIN_TIMED_S`, at most `MAX_ROUNDS`,
    so that its best is not one lucky or unlucky draw. `clock="cpu"` measures the process's CPU time instead
    of wall time (CPU only): with one torch thread, time-slicing by other processes on a shared machine then
    does not count. Python's cyclic garbage collector is off during the rounds (as in `timeit`).
    """
    timer = CLOCKS[clock]
    rounds = repeats
    if warmup:
        slowest = max(_timed(fn, device, timer) for fn in fns.values())
        rounds = max(repeats, min(MAX_ROUNDS, math.ceil(MIN_TIMED_S / max(slowest, 1e-9))))
    best = dict.fromkeys(fns, float("inf"))
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in fns.items():
                best[name] = min(best[name], _timed(fn, device, timer))
    finally:
        if enabled:
            gc.enable()
    return best


def _timed(fn: Callable[[], object], device: torch.device, timer: Callable[[], float]) -> float:
    """One run of `fn` on `timer`, the device synchronised before and after."""
    _sync(device)
    start = timer()
    fn()
    _sync(device)
    return timer() - start


def recorded_inputs(f: Field, solve: Callable[[Field], object]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The inputs (t, x) of every call `solve` makes of `f`, in call order (copies): what a floor replays.
    A model's time depends on its inputs' values (the sampler bench's MLP at batch 1024 on one CPU thread:
    ~170 µs a call at sigma = 80, ~150 µs at sigma = 1 to 20), so a floor on one input is not a solve's."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append((t.clone(), x.clone()))
        return f(t, x)

    with torch.no_grad():
        solve(recording)
    return calls


def model_floor(f: Field, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], object]:
    """The model alone on `inputs` ((t, x) of each call, `recorded_inputs`), in order: one CUDA graph replay on
    CUDA, an eager loop on CPU."""
    if inputs[0][1].device.type != "cuda":
        def eager() -> None:
            for t, x in inputs:
                f(t, x)  # outputs dropped at once: the allocator reuses their memory (the cheapest pattern)
        return eager
    device = inputs[0][1].device
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        f(*inputs[0])
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for t, x in inputs:
            f(t, x)
    return graph.replay


def fixed_cases(cfg: BenchConfig) -> list[tuple[str, str, int]]:
    """The fixed-step table's cases (field, method, batch), in table order."""
    return [(field, method, batch) for field in cfg.fields for method in cfg.fixed_methods
            for batch in cfg.batch_sizes]


def fixed_row(cfg: BenchConfig, device: torch.device, f: Field, case: tuple[str, str, int]) -> dict:
    """One case's per-step wall times of gentool, torchdiffeq, the hand loop and the floor, measured together,
    with ratios to the floor (same-run ratios); `f` is `make_field(field, device, cfg.seed)`."""
    import torchdiffeq  # the peer, imported when a bench runs (it pulls in scipy: ~0.5 s at every start)
    from gentool.core.solvers.torchdiffeq_backend import METHOD_NAMES

    field, method, batch = case
    grid = torch.linspace(1.0, 0.0, cfg.steps + 1).tolist()
    tgrid = torch.tensor(grid, device=device)
    x0 = torch.randn(batch, 2, generator=make_generator(cfg.seed, device), device=device)
    times = {
        "gentool": lambda: batch_odeint(f, x0, tgrid, method),
        "torchdiffeq": lambda: torchdiffeq.odeint(
            lambda t, x: f(t.expand(x.shape[0]), x), x0, tgrid, method=METHOD_NAMES[method]),
        "hand": lambda: hand_loop(method, f, x0, grid),
        "floor": model_floor(f, recorded_inputs(f, lambda g: batch_odeint(g, x0, tgrid, method, graph="off"))),
    }
    if cfg.compile:
        times["compiled"] = lambda: batch_odeint(f, x0, tgrid, method, compile=True)
    with torch.no_grad():
        per_step = {k: v / cfg.steps for k, v in best_times(times, device, cfg.repeats).items()}
    return {"field": field, "method": method, "batch": batch, "steps": cfg.steps,
            **{f"{k}_s": v for k, v in per_step.items()},
            **{f"{k}_ratio": v / per_step["floor"] for k, v in per_step.items()}}


def fixed_rows(cfg: BenchConfig, device: torch.device, progress: Callable[..., None]) -> list[dict]:
    """Per-step wall time of every fixed method and batch size, with ratios to the floor (`fixed_row`)."""
    rows, cases, fields = [], fixed_cases(cfg), {}
    for case in cases:
        if case[0] not in fields:
            fields[case[0]] = make_field(case[0], device, cfg.seed)
        rows.append(fixed_row(cfg, device, fields[case[0]], case))
        progress(len(rows), len(cases))
    return rows


def torchode_solve(f: Field, x0: torch.Tensor, t_end: float, rtol: float, atol: float
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Solve dx/dt = f(t, x) on [0, t_end] with torchode's Dopri5 (eager, per-sample steps, integral controller).

    Returns (x(t_end) of shape (B, D), per-sample accepted steps (B,), field calls on the batch).
    """
    import torchode

    term = torchode.ODETerm(f)
    solver = torchode.AutoDiffAdjoint(torchode.Dopri5(term=term),
                                      torchode.IntegralController(atol=atol, rtol=rtol, term=term))
    t_eval = torch.tensor([0.0, t_end], dtype=x0.dtype, device=x0.device).expand(x0.shape[0], 2)
    sol = solver.solve(torchode.InitialValueProblem(y0=x0, t_eval=t_eval))
    return sol.ys[:, -1], sol.stats["n_accepted"], int(sol.stats["n_f_evals"].max())


def _adaptive_contenders(f: Field, x0: torch.Tensor, t: torch.Tensor, cfg: BenchConfig, method: str
                         ) -> tuple[dict, dict[str, Callable[[], object]]]:
    """Step statistics of each contender (one untimed solve each, which also warms it up) and the solves to time.

    NFE: per-sample mean/max for gentool; field calls on the whole batch for torchdiffeq and torchode
    (torchode: dopri5 only, eager, integral controller; skipped with a reason when absent).
    """
    tol = {"rtol": cfg.rtol, "atol": cfg.rtol / 100}
    runs: dict[str, Callable[[], object]] = {
        "gentool": lambda: batch_odeint(f, x0, t, method, controller=cfg.controller, **tol),
        "torchdiffeq": lambda: batch_odeint(f, x0, t, method, backend="torchdiffeq", **tol)}
    if x0.is_cuda:  # the default above replays captured chunks; this is the eager masked loop
        runs["gentool_eager"] = lambda: batch_odeint(f, x0, t, method, controller=cfg.controller, graph="off", **tol)
    if cfg.compile:
        runs["gentool_compiled"] = lambda: batch_odeint(f, x0, t, method, controller=cfg.controller, compile=True,
                                                        **tol)
    sol, ref = runs["gentool"](), runs["torchdiffeq"]()
    for extra in ("gentool_eager", "gentool_compiled"):
        if extra in runs:
            runs[extra]()
    stats = {"gentool_nfe_mean": float(sol.nfe.double().mean()), "gentool_nfe_max": int(sol.nfe.max()),
             "torchdiffeq_nfe": int(ref.nfe[0])}
    if importlib.util.find_spec("torchode") is None:
        stats["torchode"] = "not installed"
    elif method != "dopri5":
        stats["torchode"] = "no bosh3 in torchode"
    else:
        runs["torchode"] = lambda: torchode_solve(f, x0, float(t[-1]), **tol)
        stats.update(torchode="eager", torchode_nfe=runs["torchode"]()[2])
    return stats, runs


def adaptive_cases(cfg: BenchConfig) -> list[tuple[str, int]]:
    """The adaptive table's cases (method, batch), in table order."""
    return [(method, batch) for method in cfg.adaptive_methods for batch in cfg.batch_sizes]


def adaptive_row(cfg: BenchConfig, device: torch.device, f: Field, case: tuple[str, int]) -> dict:
    """One case's NFE and wall time at equal tolerance (rtol, atol = rtol/100) on [0, 1] of gentool and its
    peers, measured together; `f` is `make_field("mlp2", device, cfg.seed)`."""
    method, batch = case
    t = torch.tensor([0.0, 1.0], device=device)
    x0 = torch.randn(batch, 2, generator=make_generator(cfg.seed, device), device=device)
    with torch.no_grad():
        stats, runs = _adaptive_contenders(f, x0, t, cfg, method)  # ran each contender once
        times = best_times(runs, device, cfg.repeats, warmup=False)
    diffrax = DIFFRAX_H100_MS.get(batch) if device.type == "cuda" and method == "dopri5" else None
    return {"method": method, "batch": batch, "rtol": cfg.rtol, "controller": cfg.controller, **stats,
            **{f"{k}_s": v for k, v in times.items()},
            **({"diffrax_h100_ms": diffrax} if diffrax is not None else {})}


def adaptive_rows(cfg: BenchConfig, device: torch.device, progress: Callable[..., None]) -> list[dict]:
    """NFE and wall time at equal tolerance (rtol, atol = rtol/100) on [0, 1] for the adaptive methods."""
    rows, cases = [], adaptive_cases(cfg)
    f = make_field("mlp2", device, cfg.seed)
    for case in cases:
        rows.append(adaptive_row(cfg, device, f, case))
        progress(len(rows), len(cases))
    return rows


def check_methods(fixed_methods: Sequence[str], adaptive_methods: Sequence[str]) -> None:
    """Validate method names (BadInput naming the allowed ones)."""
    for m in fixed_methods:
        choose("fixed method", m, FIXED_METHODS)
    for m in adaptive_methods:
        choose("adaptive method", m, ADAPTIVE_METHODS)


def machine_facts(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: device name, torch version, CPU threads, load average."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    load = "/".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load": load}
