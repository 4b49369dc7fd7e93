"""torchdiffeq's calling convention over the solver core: `odeint(func, y0, t)` and `odeint_adjoint`.

    from gentool.core.solvers import odeint           # instead of: from torchdiffeq import odeint
    ys = odeint(func, y0, t)                           # func(t: scalar tensor, y) -> dy/dt; ys: (len(t), *y0.shape)

The state `y0` (any shape, or a tuple of tensors) is one sample of the batched solver core: it becomes
x0 = y0[None] (B = 1), `func` is called as func(t_b, y) with the 0-dim time t_b of that sample, and the
states at every entry of `t` are returned (save="times"), like `torchdiffeq.odeint`. The adaptive
error norm is the same as torchdiffeq's (root mean square over all elements of the state of
e / (atol + rtol max(|y|, |y'|))); the step-size controller is the solver core's (default "pi").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from gentool.core.errors import choose, require
from gentool.core.solvers.api import batch_odeint

# torchdiffeq method name -> the solver core's tableau (torchdiffeq's `rk4` is the 3/8-rule variant; ours is
# the classic RK4 — both fourth order, so results agree to the truncation error, not bit for bit)
METHODS = {"dopri5": "dopri5", "bosh3": "bosh3", "euler": "euler", "midpoint": "midpoint", "heun2": "heun",
           "heun": "heun", "rk4": "rk4"}
FIXED_OPTIONS = ("step_size",)
ADAPTIVE_OPTIONS = ("first_step", "max_num_steps", "controller")
ODE_FUNC = Callable[[torch.Tensor, Any], Any]


def _flatten(y0: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """(y0 as one tensor, the map back): a tuple of tensors is concatenated into one flat vector."""
    if isinstance(y0, torch.Tensor):
        return y0, lambda y: y
    require(isinstance(y0, tuple | list) and len(y0) > 0 and all(isinstance(v, torch.Tensor) for v in y0),
            "y0 must be a tensor or a tuple of tensors")
    shapes = [v.shape for v in y0]
    sizes = [v.numel() for v in y0]
    flat = torch.cat([v.reshape(-1) for v in y0])

    def unflatten(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        lead = y.shape[:-1]
        return tuple(p.reshape(*lead, *s) for p, s in zip(torch.split(y, sizes, dim=-1), shapes, strict=True))

    return flat, unflatten


def _fixed_grid(t: torch.Tensor, step_size: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(integration grid, index of each entry of `t` in it): with `step_size` h every interval of `t` is
    cut into ceil(|Δt| / h) equal steps, so the states at `t` are exact grid states (no interpolation)."""
    if step_size is None:
        return t, torch.arange(len(t))
    h = float(step_size)
    require(h > 0 and h < float("inf"), f"options['step_size'] must be a positive number, got {step_size}")
    pieces, index = [t[:1]], [0]
    for a, b in zip(t[:-1], t[1:], strict=True):
        n = max(1, int(torch.ceil((b - a).abs() / h).item()))
        pieces.append(a + (b - a) * torch.arange(1, n + 1, dtype=t.dtype, device=t.device) / n)
        index.append(index[-1] + n)
    return torch.cat(pieces), torch.tensor(index)


def _solve(func: ODE_FUNC, y0: Any, t: torch.Tensor | Sequence[float], rtol: float, atol: float, method: str,
           options: dict[str, Any] | None) -> Any:
    method = choose("method", method, METHODS)
    options = dict(options or {})
    fixed = method not in ("dopri5", "bosh3")
    for key in options:
        choose(f"{method} option", key, FIXED_OPTIONS if fixed else ADAPTIVE_OPTIONS)
    flat, unflatten = _flatten(y0)
    t = torch.as_tensor(t, device=flat.device).detach()
    t = t.to(flat.dtype) if flat.is_floating_point() and t.is_floating_point() else t
    require(t.dim() == 1 and len(t) >= 1, f"t must be a 1-D tensor of time points, got shape {tuple(t.shape)}")
    if len(t) == 1:
        return unflatten(flat[None])

    def field(tb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dy = func(tb[0], unflatten(x[0]))
        return (torch.cat([d.reshape(-1) for d in dy]) if isinstance(dy, tuple | list) else dy)[None]

    if fixed:
        grid, index = _fixed_grid(t, options.get("step_size"))
        sol = batch_odeint(field, flat[None], grid, METHODS[method], save="times", graph="off")
        return unflatten(sol.xs[index.to(sol.xs.device), 0])
    sol = batch_odeint(field, flat[None], t, METHODS[method], save="times", graph="off", rtol=float(rtol),
                       atol=float(atol), h0=options.get("first_step"),
                       max_steps=int(options.get("max_num_steps", 2**31 - 1)),
                       controller=options.get("controller", "pi"))
    return unflatten(sol.xs[:, 0])


def odeint(func: ODE_FUNC, y0: torch.Tensor | tuple[torch.Tensor, ...], t: torch.Tensor | Sequence[float], *,
           rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
           options: dict[str, Any] | None = None) -> Any:
    """Solve dy/dt = func(t, y), y(t[0]) = y0, and return y at every time of `t` (shape (len(t), *y0.shape),
    or a tuple of such tensors for a tuple `y0`): torchdiffeq's `odeint` signature and defaults (dopri5,
    rtol 1e-7, atol 1e-9) on the solver core.

    Adaptive methods (dopri5, bosh3) step with the embedded error estimate
    err = RMS(e / (atol + rtol max(|y|, |y'|))) <= 1 and land exactly on every time of `t`; options
    `first_step`, `max_num_steps` and `controller` ("pi" or "integral"). Fixed methods (euler, midpoint, heun2,
    rk4) take one step per interval of `t`, or ceil(|Δt| / step_size) equal steps with
    options={"step_size": h}. `t` may decrease. Differentiable by backpropagation through the steps (with
    respect to y0 and the parameters of `func`, not to `t`; step sizes are not differentiated); see
    `odeint_adjoint` for memory that does not grow with the number of steps. Not supported: torchdiffeq's
    `event_fn`, per-element tensor tolerances, and its other methods (dopri8, adaptive_heun, adams, ...).
    """
    return _solve(func, y0, t, rtol, atol, method or "dopri5", options)


def odeint_adjoint(func: torch.nn.Module, y0: torch.Tensor | tuple[torch.Tensor, ...],
                   t: torch.Tensor | Sequence[float], *, rtol: float = 1e-7, atol: float = 1e-9,
                   method: str | None = None, options: dict[str, Any] | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None, **adjoint: Any) -> Any:
    """`odeint` whose gradients come from the adjoint ODE instead of backpropagation through the steps:
    for a loss L(y(t_1)), a(t) = dL/dy(t) solves da/dt = -a^T ∂f/∂y backwards from a(t_1) = ∂L/∂y(t_1),
    and dL/dθ = ∫_{t_1}^{t_0} -a^T ∂f/∂θ dt, so memory does not grow with the number of steps.

    Delegates to `torchdiffeq.odeint_adjoint` (method names as there; `adjoint_rtol`, `adjoint_atol`,
    `adjoint_method`, `adjoint_options` passed through). `func` must be an `nn.Module`, or its parameters
    given as `adjoint_params`.
    """
    import torchdiffeq

    method = choose("method", method or "dopri5", METHODS)
    allowed = ("adjoint_rtol", "adjoint_atol", "adjoint_method", "adjoint_options")
    for key in adjoint:
        choose("odeint_adjoint argument", key, allowed)
    require(adjoint_params is not None or isinstance(func, torch.nn.Module),
            "odeint_adjoint: func must be a torch.nn.Module, or give its parameters as adjoint_params")
    torchdiffeq_name = {"heun": "heun2"}.get(method, method)
    return torchdiffeq.odeint_adjoint(func, y0, torch.as_tensor(t), rtol=rtol, atol=atol, method=torchdiffeq_name,
                                      options=options, adjoint_params=adjoint_params, **adjoint)
