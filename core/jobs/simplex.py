"""The `optimize simplex` and `optimize compare` jobs: convex objectives over the probability simplex (SPEC §4).

`optimize simplex`: one unit = `SIMPLEX_CHUNK` iterations of one method (it stops early once the Frank–Wolfe
gap ≤ tol); outputs `final.npz` (p, gap, iters, converged), `objective.png`, `distribution.png`.
`optimize compare`: several methods on one problem, one after the other, one unit = `SIMPLEX_CHUNK`
iterations of the current method; outputs `table.csv` (method, gap, F − F*, iterations, seconds, converged),
`final.npz` (every method's p) and `compare.png` (gap against iterations and against time).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core import plots
from gentool.core.config import (
    check_float,
    check_int,
    derived_choice,
    file_digest,
    float64_tensor,
    matrix_parser,
    read_tensors,
    setting,
    vector_parser,
)
from gentool.core.errors import BadInput, NumericalFailure, choose, require
from gentool.core.io import atomic_save_npz, atomic_write_text
from gentool.core.probspace import FW_STEPS, METHODS, OBJECTIVES, SimplexObjective, make_objective
from gentool.core.probspace.objectives import Data, checking_user_code
from gentool.core.probspace.simplex import ITERS, TOL, FrankWolfe, SimplexRun, check_method, suitable_methods
from gentool.core.progress import Reports, one_step
from gentool.core.run.contract import JobSpec, Row

SIMPLEX_CHUNK = 1000
SHOW_P = 10  # the summary line lists p when it has at most this many entries




CUSTOM = "module:function"  # the objective_kind of a user's objective


@dataclass(frozen=True)
class SimplexProblem:
    """A convex objective over the probability simplex and the initial point."""

    objective: str = setting("sparsemax", f"Built-in ({', '.join(OBJECTIVES)}) or module:function returning "
                             "F, grad or (F, grad) (called as function(p, data) when data is given).")
    x: tuple[float, ...] | None = setting((1.0, 0.5, -1.0), "Vector x (sparsemax/softmax), target q (kl) or b "
                                          "(quadratic): '1,0.5,-1' or a .npy/.npz/.csv/.txt file (FILE.npz:NAME "
                                          "picks one array).", parse=vector_parser("x"), metavar="VECTOR")
    matrix: tuple[tuple[float, ...], ...] | None = setting(
        None, "Matrix A (quadratic) or returns R (portfolio): 'a,b;c,d' or a .npy/.npz/.csv/.txt file.",
        parse=matrix_parser("matrix"), metavar="MATRIX", applies={"objective_kind": ("quadratic", "portfolio")})
    tau: float = setting(1.0, "Entropy temperature of the softmax objective.",
                         applies={"objective_kind": ("softmax",)})
    data: Path | None = setting(None, "Data of a module:function objective, passed as its second argument: a "
                                ".npy/.csv/.txt file (a tensor) or .npz (a dict of tensors).", metavar="FILE",
                                applies={"objective_kind": (CUSTOM,)})
    dim: int | None = setting(None, "Dimension of a module:function objective (default: the length of p0, "
                              "else of x).", applies={"objective_kind": (CUSTOM,)})
    p0: tuple[float, ...] | None = setting(None, "Initial point on the simplex (default uniform).",
                                           parse=vector_parser("p0"), metavar="VECTOR")

    objective_kind = derived_choice(lambda cfg: CUSTOM if ":" in cfg.objective else cfg.objective,
                                    (*OBJECTIVES, CUSTOM), "The built-in objective's name, or module:function.")

    def __post_init__(self) -> None:
        check_float("tau", self.tau, 0.0, lo_open=True)
        if self.dim is not None:
            check_int("dim", self.dim, 1, 10**8)
        custom = ":" in self.objective
        require(self.data is None or custom, f"data is only read by a module:function objective, not by "
                f"{self.objective!r}")
        require(self.dim is None or custom, f"dim is only read by a module:function objective, not by "
                f"{self.objective!r}")
        self.check_objective(self.make_objective())

    def check_objective(self, obj: SimplexObjective) -> None:
        """Checks that need the objective (subclasses add theirs)."""
        uniform = torch.full((obj.dim,), 1.0 / obj.dim, dtype=torch.float64)
        with checking_user_code():  # a custom objective that fails or returns junk fails here (bad input)
            obj.value(uniform), obj.grad(uniform)
        if self.p0 is not None:
            require(len(self.p0) == obj.dim, f"p0 has {len(self.p0)} entries, the objective has {obj.dim}")

    def load_data(self) -> Data:
        """The data file as a float64 tensor (or a dict of them, from .npz), or None."""
        return read_tensors(self.data, "data")

    def data_digest(self) -> str:
        """sha256 of the data file ("" without one): a resumed run refuses a changed file."""
        return file_digest(self.data)

    def make_objective(self) -> SimplexObjective:
        dim = self.dim if self.dim is not None else (len(self.p0) if self.p0 is not None else None)
        return make_objective(self.objective, float64_tensor(self.x), tau=self.tau, matrix=float64_tensor(self.matrix),
                              data=self.load_data(), dim=dim)

    def start(self) -> torch.Tensor | None:
        return float64_tensor(self.p0)


GRADIENT_METHODS = tuple(name for name, cls in METHODS.items() if cls is not FrankWolfe)  # lr, backtracking


@dataclass(frozen=True)
class SolverSettings(SimplexProblem):
    """The problem plus the settings every method shares."""

    lr: float = setting(1.0, "Gradient methods: initial step size (kept fixed with no-backtrack).",
                        applies={"method": GRADIENT_METHODS})
    backtrack: bool = setting(True, "Gradient methods: adapt the step by backtracking (try twice the last "
                              "step, halve until a sufficient-decrease test holds).",
                              applies={"method": GRADIENT_METHODS})
    steps: int = setting(ITERS, "Maximum steps (iterations) per method.", old=("iters",))
    tol: float = setting(TOL, "Stop once the Frank-Wolfe gap p·∇F − min ∇F (>= F − F*) is <= tol (negative: never "
                         "stop early).")
    log_every: int = setting(1, "Trace every this many iterations.")

    def __post_init__(self) -> None:
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("tol", self.tol)
        check_int("steps", self.steps, 0, 10**9)
        check_int("log_every", self.log_every, 1)
        super().__post_init__()

    def make_run(self, obj: SimplexObjective, method: str, step: str, *, timed: bool = False) -> SimplexRun:
        return SimplexRun(obj, method, p0=self.start(), iters=self.steps, tol=self.tol, lr=self.lr, step=step,
                          backtrack=self.backtrack, log_every=self.log_every, timed=timed)


@dataclass(frozen=True)
class SimplexConfig(SolverSettings):
    """Minimise a convex objective over the probability simplex (SPEC §4)."""

    method: str = setting("frank-wolfe", "Optimiser (softmax-gd only for objectives with an entropy term).",
                          choices=tuple(METHODS))
    fw_step: str = setting("away", "Frank-Wolfe step: away (away steps, exact line search), line-search, or "
                           "open-loop 2/(t+2).", choices=FW_STEPS, old=("step",),
                           applies={"method": (FrankWolfe.name,)})

    def __post_init__(self) -> None:
        choose("method", self.method, METHODS)
        choose("fw_step", self.fw_step, FW_STEPS)
        super().__post_init__()

    def check_objective(self, obj: SimplexObjective) -> None:
        super().check_objective(obj)
        check_method(self.method, obj, self.start())


def _not_converged(run: SimplexRun, tol: float) -> str:
    return (f"not converged: gap {run.gap:.3g} > tol {tol:g} after {run.t} iterations; raise steps, or "
            "compare the methods on this problem (optimize compare)")


class SimplexJob(Reports):
    """State: the `SimplexRun` (point, iteration, step size, convergence) and the data file's digest."""

    command = "optimize simplex"
    hint = "lower lr"

    def __init__(self, config: SimplexConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device("cpu")
        self.digest = config.data_digest()
        self.run = config.make_run(config.make_objective(), config.method, config.fw_step)

    @property
    def units_total(self) -> int:
        return math.ceil((self.config.steps + 1) / SIMPLEX_CHUNK)

    @property
    def units_done(self) -> int:
        return math.ceil(self.run.t / SIMPLEX_CHUNK) if not self.run.finished else self.units_total

    @property
    def done(self) -> bool:
        return self.run.finished

    def progress_position(self) -> tuple[int, int]:
        """Iterations done of the most allowed (of those done once the run has converged)."""
        return self.run.t, self.run.t if self.run.finished else self.config.steps

    def progress_info(self, rows: list[Row]) -> dict[str, float]:
        """The key metric shown with the progress: the Frank-Wolfe gap at the latest iteration."""
        return {"gap": rows[-1]["gap"]}

    def advance(self) -> list[Row]:
        rows = self.run.iterate(SIMPLEX_CHUNK)
        if not bool(torch.isfinite(self.run.p).all()):
            raise NumericalFailure(f"the iterate became non-finite at iteration {self.run.t}; lower lr")
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {**self.run.state_dict(), "data_sha256": self.digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_digest(state, self.digest, self.config.data)
        self.run.load_state_dict(state)

    def samples(self) -> dict[str, Any]:
        return {"p": self.run.p}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        run = self.run
        atomic_save_npz(out / "final.npz", p=run.p.numpy(), gap=run.gap, iters=run.t, converged=run.converged)
        if plots_on:
            keys = ["objective", "gap"] if "objective" in rows[-1] else ["gap"]
            with one_step(self.progress, "figures"):
                plots.curves(out / "objective.png", {"trace": rows}, "iter", keys, log_keys=["gap"],
                             labels={"objective": "objective F(p)", "gap": "Frank-Wolfe gap"})
                plots.bar(out / "distribution.png", run.p)
        summary: Row = {k: rows[-1][k] for k in ("objective",) if k in rows[-1]}
        summary |= {"gap": run.gap, "iters": run.t, "converged": run.converged}
        if run.p.numel() <= SHOW_P:
            summary["p"] = ", ".join(f"{v:.6g}" for v in run.p.tolist())
        return summary | ({} if run.converged else {"warning": _not_converged(run, self.config.tol)})


def _check_digest(state: dict[str, Any], digest: str, path: Path | None) -> None:
    if state.get("data_sha256", "") != digest:
        raise BadInput(f"data file {path} changed since the run started; start a new run")


# ---- optimize compare -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompareConfig(SolverSettings):
    """Several methods on one simplex problem: one table and one convergence plot."""

    methods: tuple[str, ...] | None = setting(None, "Methods to compare (default: every method that can solve "
                                              "the objective from p0).", choices=tuple(METHODS), metavar="LIST")
    fw_steps: tuple[str, ...] = setting(("away",), "Frank-Wolfe steps to compare (one row each).",
                                        choices=FW_STEPS, metavar="LIST")

    def __post_init__(self) -> None:
        for m in self.methods or ():
            choose("methods", m, METHODS)
        require(self.methods is None or len(self.methods) > 0, "methods must name at least one method")
        require(len(self.fw_steps) > 0, "fw_steps must name at least one Frank-Wolfe step")
        for s in self.fw_steps:
            choose("fw_steps", s, FW_STEPS)
        self._check_applies()
        super().__post_init__()

    def _check_applies(self) -> None:
        """The applies rule over a list of methods: fw_steps needs frank-wolfe among the methods, lr and backtrack
        a gradient method (declared on `SimplexConfig` for its one method)."""
        if self.methods is None:
            return
        fields = {f.name: f for f in dataclasses.fields(self)}
        gradient = [m for m in self.methods if m in GRADIENT_METHODS]
        require(FrankWolfe.name in self.methods or self.fw_steps == fields["fw_steps"].default,
                f"fw_steps applies to method {FrankWolfe.name}, not among methods {', '.join(self.methods)}")
        for name in ("lr", "backtrack"):
            require(bool(gradient) or getattr(self, name) == fields[name].default, f"{name} applies to methods "
                    f"{', '.join(GRADIENT_METHODS)}, none of them among methods {', '.join(self.methods)}")

    def check_objective(self, obj: SimplexObjective) -> None:
        super().check_objective(obj)
        for m in self.methods or suitable_methods(obj, self.start()):
            check_method(m, obj, self.start())

    def entries(self, obj: SimplexObjective) -> list[tuple[str, str, str]]:
        """(label, method, Frank-Wolfe step) of every row, in order, without repeats."""
        out: list[tuple[str, str, str]] = []
        for m in dict.fromkeys(self.methods or suitable_methods(obj, self.start())):
            if m == FrankWolfe.name:
                out += [(f"frank-wolfe ({s})", m, s) for s in dict.fromkeys(self.fw_steps)]
            else:
                out.append((m, m, "away"))
        return out


class CompareJob(Reports):
    """State: the index of the method running, its `SimplexRun` state, and the results of those done."""

    command = "optimize compare"
    hint = "lower lr"

    def __init__(self, config: CompareConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device("cpu")
        self.obj = config.make_objective()
        self.digest = config.data_digest()
        self.entries = config.entries(self.obj)
        self.per_method = math.ceil((config.steps + 1) / SIMPLEX_CHUNK)
        self.index, self.results = 0, []
        self.chunks = 0  # units run: a method that converges early ends its units early, none are skipped
        self.run = self._new_run()

    def _new_run(self) -> SimplexRun | None:
        if self.index >= len(self.entries):
            return None
        _, method, step = self.entries[self.index]
        return self.config.make_run(self.obj, method, step, timed=True)

    @property
    def units_total(self) -> int:
        return self.per_method * len(self.entries)

    @property
    def units_done(self) -> int:
        return self.chunks

    @property
    def done(self) -> bool:
        return self.run is None

    def progress_position(self) -> tuple[int, int]:
        """Iterations: those of the finished methods plus the current one's, of those plus `steps` for every
        method still to finish."""
        finished = sum(int(r["iters"]) for r in self.results)
        current = 0 if self.run is None else self.run.t
        return finished + current, finished + (len(self.entries) - self.index) * self.config.steps

    def progress_info(self, rows: list[Row]) -> dict[str, Any]:
        """The key metric shown with the progress: the method's Frank-Wolfe gap at its latest iteration."""
        return {"gap": rows[-1]["gap"]}

    def advance(self) -> list[Row]:
        label = self.entries[self.index][0]
        run = self.run
        rows = [{"method": label, **r} for r in run.iterate(SIMPLEX_CHUNK)]
        if run.finished:
            self.results.append({"method": label, "p": run.p, "gap": run.gap, "iters": run.t,
                                 "seconds": run.seconds, "converged": run.converged})
            self.index += 1
            self.run = self._new_run()
        self.chunks += 1
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "results": self.results, "data_sha256": self.digest, "chunks": self.chunks,
                "run": None if self.run is None else self.run.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_digest(state, self.digest, self.config.data)
        self.index, self.results = int(state["index"]), list(state["results"])
        self.run = self._new_run()
        if self.run is not None and state["run"] is not None:
            self.run.load_state_dict(state["run"])
        current = 0 if self.run is None else math.ceil(self.run.t / SIMPLEX_CHUNK)
        self.chunks = int(state.get("chunks", self.index * self.per_method + current))  # runs before "chunks"

    def samples(self) -> dict[str, Any] | None:
        return {"p": torch.stack([r["p"] for r in self.results])} if self.results else None

    @staticmethod
    def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
        """The final state of the comparison of all entries from the final states of comparisons of
        consecutive entry ranges (shards): results in order, units summed."""
        return {"index": sum(int(s["index"]) for s in states), "results": [r for s in states for r in s["results"]],
                "data_sha256": states[0]["data_sha256"], "chunks": sum(int(s["chunks"]) for s in states),
                "run": None}

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        table, fstar, source = comparison_table(self.obj, self.results)
        atomic_write_text(out / "table.csv", _csv(table))
        atomic_save_npz(out / "final.npz", methods=np.array([r["method"] for r in self.results]),
                        p=torch.stack([r["p"] for r in self.results]).numpy(),
                        fstar=math.nan if fstar is None else fstar)
        if plots_on:
            series = {label: [r for r in rows if r["method"] == label] for label, _, _ in self.entries}
            with one_step(self.progress, "figure"):
                plots.convergence(out / "compare.png", series, "gap", {"iter": "iteration", "seconds": "time (s)"},
                                  ylabel="Frank-Wolfe gap")
        late = [r["method"] for r in self.results if not r["converged"]]
        summary: Row = {"fstar": fstar, "fstar_from": source, "table": table}
        return summary | ({"warning": f"not converged within {self.config.steps} iterations (gap > tol "
                                      f"{self.config.tol:g}): {', '.join(late)}"} if late else {})


def comparison_table(obj: SimplexObjective, results: list[dict[str, Any]]) -> tuple[list[Row], float | None, str]:
    """Rows (method, gap, F − F*, iterations, seconds, converged), F* and where F* comes from: the closed
    form where the objective has one, else the lowest F reached (each gap bounds that method's F − F*); F* is
    None when the objective gives no values."""
    values = [float(obj.value(r["p"])) for r in results]
    if obj.minimiser is not None:
        fstar, source = float(obj.value(obj.minimiser)), "closed form"
    elif all(math.isfinite(v) for v in values):
        fstar, source = min(values), "best found"
    else:
        fstar, source = None, "unknown (the objective gives no values)"
    table = [{"method": r["method"], "gap": r["gap"], "F - F*": None if fstar is None else v - fstar,
              "iterations": r["iters"], "seconds": r["seconds"], "converged": r["converged"]}
             for r, v in zip(results, values, strict=True)]
    return table, fstar, source


def _csv(table: list[Row]) -> str:
    keys = list(table[0])
    return "\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in table]) + "\n"


SIMPLEX = JobSpec("optimize simplex", SimplexConfig, SimplexJob,
                  "Minimise a convex objective over the probability simplex.")
COMPARE = JobSpec("optimize compare", CompareConfig, CompareJob,
                  "Run several simplex methods on one problem: one table (gap, F - F*, iterations, time) and "
                  "one plot.")
