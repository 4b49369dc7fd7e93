"""Every registered sampler, through the generic checks: plan = definition, peers (k-diffusion, the original
loops, a DEIS written from the paper), observed order, gradients against finite differences, NFE accounting,
noise (determinism, batch-split independence), the law of the SDE samplers, compiled = eager, GPU paths."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
import types

import pytest
import torch
from gentool.core.diffusion import SAMPLERS, edm_grid, make_grid, make_target, run_sampler, sampler_table
from gentool.core.diffusion.samplers import prepare_sampler, run_definition, sampler_plan, solve_sampler
from gentool.core.diffusion.targets import gaussian_target, point_target
from gentool.core.errors import BadInput
from gentool.core.solvers import NonFiniteState
from reference_loops import PLAIN_LOOPS

F64 = torch.float64
TARGETS = {"gaussian": gaussian_target(torch.tensor([0.5, -1.0]), 0.8), "gmm-ring": make_target("gmm-ring"),
           "point": point_target(torch.tensor([0.3, -1.0]))}
OPTIONS = {"ddim": [{"eta": 0.0}, {"eta": 0.6}], "amed": [{"r": 0.3}],
           "euler-ancestral": [{"eta": 0.5, "s_noise": 1.1}], "unipc": [{"order": 1}, {"order": 2}, {"order": 3}],
           "ipndm": [{"order": 1}, {"order": 2}, {"order": 4}],
           "ipndm-v": [{"order": 3}, {"order": 4}], "lms": [{"order": 2}, {"order": 4}], "deis": [{"order": 2},
           {"order": 3}], "dpmpp-2m-sde": [{"eta": 0.5}, {"solver": "heun"}], "dpmpp-sde": [{"eta": 0.7, "r": 0.4}],
           "edm-stochastic": [{"s_churn": 10.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.003}]}
PLAN_SAMPLERS = [name for name, spec in SAMPLERS.items() if spec.fn is not None]
CASES = [(name, opts) for name in PLAN_SAMPLERS for opts in OPTIONS.get(name, [{}])]
DETERMINISTIC = [name for name in PLAN_SAMPLERS if not SAMPLERS[name].noise]
STOCHASTIC = [name for name in PLAN_SAMPLERS if SAMPLERS[name].noise]
X0 = 80 * torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
GRIDS = (edm_grid(1), edm_grid(3), edm_grid(7), edm_grid(16), make_grid("log-sigma", 9), edm_grid(6)[:-1])


class ListNoise:
    """A k-diffusion-style noise sampler: the k-th call returns the k-th fixed draw (any sigma pair)."""

    def __init__(self, like: torch.Tensor, seed: int = 5) -> None:
        self.like, self.g = like, torch.Generator().manual_seed(seed)

    def __call__(self, sigma: object = None, sigma_next: object = None) -> torch.Tensor:
        return torch.randn(self.like.shape, generator=self.g, dtype=self.like.dtype)


@pytest.mark.parametrize(("name", "opts"), CASES)
def test_plan_equals_definition(name: str, opts: dict) -> None:
    """The recorded plan run by the solver core equals the definition run on tensors (float64, same noise)."""
    for sigmas in GRIDS:
        plan = run_sampler(TARGETS["gmm-ring"], X0, sigmas, name, noise_sampler=ListNoise(X0), **opts)
        spec = SAMPLERS[name]
        direct, _, nfe = run_definition(spec, TARGETS["gmm-ring"], X0, sigmas.tolist(), ListNoise(X0),
                                        spec.resolve(opts))
        torch.testing.assert_close(plan[0], direct, rtol=1e-12, atol=1e-12)
        assert plan[1] == nfe


@pytest.mark.parametrize(("name", "opts"), [(n, o) for n, o in CASES if n in PLAIN_LOOPS])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_equals_original_loops(name: str, opts: dict, target: str) -> None:
    """Same samples (float64, 1e-10) and NFE as the independent loops the samplers were first checked with."""
    for sigmas in GRIDS[1:]:
        ours = run_sampler(TARGETS[target], X0, sigmas, name, noise_sampler=ListNoise(X0), **opts)
        loop = PLAIN_LOOPS[name](TARGETS[target], X0, sigmas.tolist(), noise=ListNoise(X0), **opts)
        torch.testing.assert_close(ours[0], loop[0], rtol=1e-10, atol=1e-10)
        assert ours[1] == loop[1]


def _kdiffusion() -> types.ModuleType | None:
    """k-diffusion's `sampling.py` (the wheel installs without its heavy training dependencies: its package
    `__init__` is not run; `utils.append_dims` is the one helper the samplers use)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = [root]
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    saved = {k: sys.modules.get(k) for k in ("k_diffusion", "k_diffusion.utils")}
    sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    try:
        mod_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", f"{root}/sampling.py")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


KD = _kdiffusion()
KD_CASES = [  # (ours, options, k-diffusion function, its keyword arguments)
    ("euler", {}, "sample_euler", {}),
    ("euler-ancestral", {"eta": 0.5, "s_noise": 1.1}, "sample_euler_ancestral", {"eta": 0.5, "s_noise": 1.1}),
    ("ddim", {"eta": 1.0}, "sample_euler_ancestral", {"eta": 1.0}),
    ("heun", {}, "sample_heun", {}),
    ("edm-stochastic", {"s_churn": 10.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.003}, "sample_heun",
     {"s_churn": 10.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.003}),
    ("dpm-2", {}, "sample_dpm_2", {}),
    ("dpmpp-2m", {}, "sample_dpmpp_2m", {}),
    ("dpmpp-2m-sde", {"eta": 0.5}, "sample_dpmpp_2m_sde", {"eta": 0.5}),
    ("dpmpp-2m-sde", {"eta": 1.0, "solver": "heun", "s_noise": 0.9}, "sample_dpmpp_2m_sde",
     {"eta": 1.0, "solver_type": "heun", "s_noise": 0.9}),
    ("dpmpp-3m-sde", {"eta": 0.7}, "sample_dpmpp_3m_sde", {"eta": 0.7}),
    ("dpmpp-3m-kd", {}, "sample_dpmpp_3m_sde", {"eta": 0.0}),
    ("dpmpp-sde", {"eta": 1.0, "r": 0.5}, "sample_dpmpp_sde", {"eta": 1.0, "r": 0.5}),
    ("lms", {"order": 4}, "sample_lms", {"order": 4}),
    ("lms", {"order": 2}, "sample_lms", {"order": 2}),
]


@pytest.mark.skipif(KD is None, reason="k-diffusion is not installed (make setup installs it, --no-deps)")
@pytest.mark.parametrize(("name", "opts", "kd_name", "kd_opts"), KD_CASES)
def test_equals_k_diffusion(name: str, opts: dict, kd_name: str, kd_opts: dict, monkeypatch) -> None:
    """Each sampler equals k-diffusion's to 1e-10 in float64 with the same noise (its `noise_sampler`; EDM
    churn draws `randn_like`, patched to the same stream)."""
    den = TARGETS["gmm-ring"]
    for sigmas in (edm_grid(5), edm_grid(12), make_grid("log-sigma", 9)):
        ours = run_sampler(den, X0, sigmas, name, noise_sampler=ListNoise(X0), **opts)[0]
        noise = ListNoise(X0)
        extra = {"noise_sampler": noise} if "eta" in kd_opts and kd_opts["eta"] else {}
        if kd_name == "sample_heun" and kd_opts:
            monkeypatch.setattr(KD.torch, "randn_like", lambda x, noise=noise: noise())
        theirs = getattr(KD, kd_name)(lambda x, s: den(x, s), X0.clone(), sigmas.to(F64), disable=True,
                                      **kd_opts, **extra)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def _deis_reference(den: object, x: torch.Tensor, sigmas: list[float], order: int) -> torch.Tensor:
    """tAB-DEIS from the paper (Zhang & Chen 2023, eq. 14 in VE form): `x' = x + sum_j C_j eps_{i-j}`, C_j the
    integral over VP time of the Lagrange basis in t times dsigma/dt, by scipy's adaptive quadrature."""
    from scipy.integrate import quad

    b0, bd = 0.1, 19.9
    t_of = lambda s: (math.sqrt(b0**2 + 2 * bd * math.log1p(s * s)) - b0) / bd  # noqa: E731
    sig = lambda t: math.sqrt(math.expm1(bd * t * t / 2 + b0 * t))  # noqa: E731
    dsig = lambda t: (bd * t + b0) * math.exp(bd * t * t / 2 + b0 * t) / (2 * sig(t))  # noqa: E731
    eps: list[torch.Tensor] = []
    for i, (s, s1) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        D = den(x, x.new_full((len(x),), s))
        eps.insert(0, (x - D) / s)
        if s1 == 0:
            x = D
            continue
        k = min(order, i + 1)
        ts = [t_of(sigmas[i - j]) for j in range(k)]
        for j in range(k):
            c = quad(_basis_times, t_of(s), t_of(s1), args=(j, ts, dsig), epsabs=1e-14, epsrel=1e-13, limit=200)[0]
            x = x + c * eps[j]
    return x


def _basis_times(t: float, j: int, ts: list[float], dsig: object) -> float:
    return math.prod((t - ts[m]) / (ts[j] - ts[m]) for m in range(len(ts)) if m != j) * dsig(t)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_equals_reference_from_the_paper(order: int) -> None:
    den = TARGETS["gmm-ring"]
    for sigmas in (edm_grid(6), edm_grid(10)):
        ours = run_sampler(den, X0, sigmas, "deis", order=order)[0]
        torch.testing.assert_close(ours, _deis_reference(den, X0, sigmas.tolist(), order), rtol=1e-10, atol=1e-10)


def test_noise_sampler_is_called_in_order_with_sigma_pairs() -> None:
    calls = []

    def noise(s: float, s1: float) -> torch.Tensor:
        calls.append((round(float(s), 9), round(float(s1), 9)))
        return torch.zeros_like(X0)

    sigmas = edm_grid(4)
    run_sampler(TARGETS["gaussian"], X0, sigmas, "euler-ancestral", noise_sampler=noise)
    assert calls == [(round(float(a), 9), round(float(b), 9)) for a, b in zip(sigmas[:-2], sigmas[1:-1], strict=True)]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_noise_is_seeded_and_independent_of_batch_split(name: str) -> None:
    """Same seed, same numbers; another seed, others; 1000 samples at once = 4 batches of 250 (the default
    noise is a function of the seed and each sample's global index; dpmpp-sde's default Brownian path too)."""
    den, sigmas, x = TARGETS["gmm-ring"], edm_grid(6), 80 * torch.randn(1000, 2, dtype=F64,
                                                                       generator=torch.Generator().manual_seed(1))

    def run(x: torch.Tensor, seed: int, first: int) -> torch.Tensor:
        return run_sampler(den, x, sigmas, name, seed=seed, first_index=first)[0]

    whole = run(x, 3, 0)
    assert torch.equal(whole, run(x, 3, 0)) and not torch.equal(whole, run(x, 4, 0))
    q = len(x) // 4
    split = torch.cat([run(x[k * q:(k + 1) * q], 3, k * q) for k in range(4)])
    torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-12)



@pytest.mark.parametrize("name", STOCHASTIC)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_default_noise_folded_into_the_plan_equals_it_called(name: str, dtype: torch.dtype) -> None:
    """The plan takes the default noise as erfinv(u) = z / sqrt(2) and multiplies its coefficients by sqrt(2)
    (`noise_scale`); the same noise sampler wrapped as a plain callable (z itself, called pair by pair as in
    k-diffusion, coefficients as recorded) gives the same samples up to rounding."""
    from gentool.core.diffusion.samplers import default_noise

    den, sigmas, x = TARGETS["gmm-ring"], edm_grid(7), X0.to(dtype)
    spec, grid = SAMPLERS[name], edm_grid(7).tolist()
    folded = run_sampler(den, x, sigmas, name, seed=9, first_index=3)[0]
    noise = default_noise(spec, x, grid, 9, 3)
    called = run_sampler(den, x, sigmas, name, noise_sampler=lambda a, b: noise(a, b))[0]
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(folded, called, rtol=tol, atol=tol * 80)

@pytest.mark.parametrize(("name", "opts"), CASES)
def test_nfe_accounting(name: str, opts: dict) -> None:
    """The plan's NFE = model calls of the definition = what the registry declares per step."""
    spec = SAMPLERS[name]
    for sigmas in (edm_grid(5), edm_grid(5)[:-1]):
        grid = tuple(sigmas.tolist())
        plan, _ = sampler_plan(name, grid, tuple(sorted(spec.resolve(opts).items())), 2, F64, torch.device("cpu"))
        _, _, calls = run_definition(spec, TARGETS["gaussian"], X0[:2], list(grid), ListNoise(X0[:2]),
                                     spec.resolve(opts))
        steps = len(grid) - 1
        assert plan.nfe == calls == spec.nfe(steps, grid[-1] == 0)


X_START = torch.tensor([[104.0]], dtype=F64)
GAUSS = gaussian_target(torch.zeros(1), 1.0)


def observed_order(name: str, steps: tuple[int, int] = (128, 256), **opts) -> float:
    """log2 of the error ratio when halving the step, on the EDM grid 80 -> 0.002 (without the final
    jump to 0, whose O(sigma_min^2) error does not shrink with the step)."""
    exact = GAUSS.exact_flow(X_START, 80.0, 0.002)
    errs = [abs(float(run_sampler(GAUSS, X_START, edm_grid(n)[:-1], name, **opts)[0] - exact)) for n in steps]
    return math.log2(errs[0] / errs[1])


ORDERS = [("euler", {}, 1), ("heun", {}, 2), ("dpm-2", {}, 2), ("amed", {}, 2), ("amed", {"r": 0.3}, 1),
          ("dpmpp-2m", {}, 2),
          ("dpmpp-3m", {}, 3), ("dpmpp-3m-kd", {}, 2), ("unipc", {"order": 1}, 2), ("unipc", {"order": 2}, 3),
          ("unipc", {"order": 3}, 4), ("ipndm-v", {"order": 3}, 3), ("ipndm-v", {"order": 4}, 4), ("ipndm", {}, 2),
          ("lms", {"order": 3}, 3), ("lms", {"order": 4}, 4), ("deis", {"order": 2}, 2), ("deis", {"order": 3}, 3),
          ("dpmpp-2m-sde", {"eta": 0.0}, 2), ("dpmpp-3m-sde", {"eta": 0.0}, 2), ("euler-ancestral", {"eta": 0.0}, 1),
          ("pndm", {}, 2)]


def test_every_deterministic_sampler_has_an_order_check() -> None:
    assert set(DETERMINISTIC) <= {name for name, _, _ in ORDERS}


@pytest.mark.parametrize(("name", "opts", "order"), ORDERS)
def test_observed_order(name: str, opts: dict, order: int) -> None:
    """UniPC-p converges with order p + 1; fixed-weight iPNDM is second order on a non-uniform grid; the
    published DPM-Solver++(3M) weight is second order (SPEC 2b)."""
    assert observed_order(name, **opts) == pytest.approx(order, abs=0.25)


def _loss(name: str, sigmas: torch.Tensor, **opts) -> torch.Tensor:
    x, _ = run_sampler(TARGETS["gmm-ring"], X0[:8], sigmas, name, **opts)
    return (x * torch.linspace(-1, 1, 16, dtype=F64).reshape(8, 2)).sum()


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_gradient_matches_finite_differences(name: str) -> None:
    """d loss / d sigma (interior and first levels) carried by the result equals the central difference along
    a random direction to a relative 1e-6 (float64)."""
    sigmas = edm_grid(6, sigma_max=20.0).to(F64)
    v = torch.randn(len(sigmas), dtype=F64, generator=torch.Generator().manual_seed(2)) * sigmas * 1e-2
    v[-1] = 0.0  # the final 0 stays
    grid = sigmas.clone().requires_grad_()
    (grad,) = torch.autograd.grad(_loss(name, grid), grid)
    eps = 1e-3  # v is already 1e-2 sigma: steps of 1e-5 sigma (smaller ones meet rounding noise)
    with torch.no_grad():
        fd = (_loss(name, sigmas + eps * v) - _loss(name, sigmas - eps * v)) / (2 * eps)
    assert float(grad @ v) == pytest.approx(float(fd), rel=1e-6)


def test_gradient_through_a_per_step_option() -> None:
    """AMED's ratio r as a per-step tensor: its gradient equals finite differences."""
    sigmas = edm_grid(5, sigma_max=20.0).to(F64)
    r = torch.full((5,), 0.4, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(_loss("amed", sigmas, r=r), r)
    v, eps = torch.linspace(-1, 1, 5, dtype=F64), 1e-6
    with torch.no_grad():
        fd = (_loss("amed", sigmas, r=r + eps * v) - _loss("amed", sigmas, r=r - eps * v)) / (2 * eps)
    assert float(grad @ v) == pytest.approx(float(fd), rel=1e-6)


# steps at which the discretisation bias is below the test's resolution: the first-order ancestral step
# (k-diffusion's, equal to it to 1e-10) keeps a variance bias ~ 6/N on this target (0.514 instead of 0.64 at
# 50 EDM steps, 0.605 at 200), so it is checked at 1000 steps; the others at 50 (edm-stochastic at 200).
LAW = {"euler-ancestral": 1000, "ddim": 1000, "dpmpp-2m-sde": 50, "dpmpp-3m-sde": 50, "dpmpp-sde": 50,
       "edm-stochastic": 200}


def test_every_stochastic_sampler_has_a_law_check() -> None:
    assert set(STOCHASTIC) == set(LAW)


@pytest.mark.parametrize("name", sorted(LAW))
def test_sde_samplers_sample_the_gaussian(name: str) -> None:
    """1-D Gaussian N(0.5, 0.8^2), eta = 1, 20k samples: mean and variance within 4 s.e."""
    n, m, s = 20000, 0.5, 0.8
    target = gaussian_target(torch.tensor([m]), s)
    x0 = 80.0 * torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(11))
    x = run_sampler(target, x0, edm_grid(LAW[name]), name, seed=12)[0][:, 0]
    assert abs(float(x.mean()) - m) < 4 * s / math.sqrt(n)
    assert abs(float(x.var()) - s * s) < 4 * s * s * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if LAW[n] >= 200 else n for n in sorted(LAW)])
def test_sde_samplers_keep_the_ring_mode_weights(name: str) -> None:
    """gmm-ring (8 equal modes), 20k samples: each mode's share within 4 s.e. of 1/8 (samplers checked at 200
    steps or more are `slow` here; their Gaussian law check above runs in the default suite)."""
    n, ring = 20000, TARGETS["gmm-ring"]
    x0 = 80.0 * torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(13))
    x = run_sampler(ring, x0, edm_grid(LAW[name]), name, seed=14)[0]
    nearest = torch.cdist(x, ring.mixture.means.to(F64)).argmin(1)
    share = torch.bincount(nearest, minlength=8).to(F64) / n
    assert float((share - 1 / 8).abs().max()) < 4 * math.sqrt(1 / 8 * 7 / 8 / n)


def test_trajectory_and_per_sample_nfe() -> None:
    sigmas = edm_grid(6)
    sol = solve_sampler(TARGETS["gmm-ring"], X0, sigmas, "heun", save="trajectory")
    assert sol.xs.shape == (7, *X0.shape) and torch.equal(sol.xs[0], X0) and torch.equal(sol.xs[-1], sol.x)
    torch.testing.assert_close(sol.ts, sigmas)
    assert sol.nfe.tolist() == [11] * len(X0)
    partial = solve_sampler(TARGETS["gmm-ring"], X0, sigmas[:4], "heun").x  # the first three steps alone
    torch.testing.assert_close(sol.xs[3], partial, rtol=1e-13, atol=1e-13)


def test_non_finite_names_step_and_sigma() -> None:
    def poisoned(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.where(sigma[:, None] < 5.0, torch.full_like(x, float("nan")), x * 0.5)

    sigmas = edm_grid(10)
    bad = next(i for i, s in enumerate(sigmas.tolist()) if s < 5.0)
    with pytest.raises(NonFiniteState, match=rf"step {bad} \(sigma={float(sigmas[bad]):.6g} -> .*more steps"):
        run_sampler(poisoned, X0, sigmas, "dpmpp-3m")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sampler": "dpm3"}, "allowed: amed, ddim, deis, dpm-2"),
    ({"sampler": "unipc", "order": 4}, "order must be an integer in"),
    ({"sampler": "euler", "eta": 1.0}, "sampler 'euler' does not take option 'eta'; it takes: no options"),
    ({"sampler": "ddim", "s_noise": 1.0}, "does not take option 's_noise'; it takes: eta"),
    ({"sampler": "ddim", "eta": -1.0}, "eta must be a number in"),
    ({"sampler": "dpmpp-2m-sde", "solver": "rk4"}, "allowed: heun, midpoint"),
    ({"sigmas": [80.0, 0.0, 1.0]}, "strictly decreasing"),
    ({"sigmas": [80.0]}, "steps must be >= 1"),
])
def test_bad_input(kwargs: dict, match: str) -> None:
    """Refused by `run_sampler`, and by `prepare_sampler` before any batch."""
    args = {"sampler": "euler", "sigmas": edm_grid(4)} | kwargs
    sigmas, sampler = args.pop("sigmas"), args.pop("sampler")
    with pytest.raises(BadInput, match=match):
        run_sampler(TARGETS["gaussian"], X0, sigmas, sampler, **args)
    with pytest.raises(BadInput, match=match):
        prepare_sampler(sigmas, sampler, **args)


@pytest.mark.parametrize("name", PLAN_SAMPLERS)
def test_a_prepared_sampler_serves_batch_after_batch(name: str) -> None:
    """One prepared sampler reused for batches of other sizes, offsets, seeds and dtypes gives each time what a
    fresh `run_sampler` call gives (nothing of one batch carries into the next), and its batches are the rows
    of the whole run."""
    target, sigmas = TARGETS["gmm-ring"], edm_grid(5)
    sampler = prepare_sampler(sigmas, name, **OPTIONS.get(name, [{}])[-1])
    whole, nfe = run_sampler(target, X0, sigmas, name, seed=3, **OPTIONS.get(name, [{}])[-1])
    parts = [sampler.run(target, X0[a:b], seed=3, first_index=a) for a, b in ((0, 16), (16, 40))]
    torch.testing.assert_close(torch.cat([x for x, _ in parts]), whole, rtol=1e-12, atol=1e-12)
    assert [n for _, n in parts] == [nfe, nfe]
    x32 = X0[:8].float()
    fresh = run_sampler(target, x32, sigmas, name, seed=4, first_index=5, **OPTIONS.get(name, [{}])[-1])
    assert torch.equal(sampler.run(target, x32, seed=4, first_index=5)[0], fresh[0])
    trajectory = sampler.solve(target, X0, seed=3, save="trajectory")
    assert torch.equal(trajectory.xs[-1], sampler.run(target, X0, seed=3)[0])


def test_a_prepared_sampler_follows_its_grid_changed_in_place() -> None:
    """A grid tensor changed in place after `prepare_sampler` (an optimiser step on a learned grid) is read and
    checked again, on the plan path and the differentiable one: no run uses stale values."""
    sigmas = edm_grid(4).double()
    sampler = prepare_sampler(sigmas, "dpmpp-2m")
    sigmas[1:-1] *= 0.7
    torch.testing.assert_close(sampler.run(TARGETS["gmm-ring"], X0)[0],
                               run_sampler(TARGETS["gmm-ring"], X0, sigmas.clone(), "dpmpp-2m")[0], rtol=0, atol=0)
    sigmas[2] = 100.0
    with pytest.raises(BadInput, match="strictly decreasing"):
        sampler.run(TARGETS["gmm-ring"], X0)


def test_a_prepared_sampler_carries_the_gradient_of_its_grid() -> None:
    """A grid that requires grad, prepared once: each run is differentiable, as `run_sampler` is."""
    sigmas = edm_grid(4).double().requires_grad_()
    sampler = prepare_sampler(sigmas, "dpmpp-2m")
    grads = []
    for run in (lambda: sampler.run(TARGETS["gaussian"], X0)[0],
                lambda: run_sampler(TARGETS["gaussian"], X0, sigmas, "dpmpp-2m")[0]):
        (g,) = torch.autograd.grad(run().square().mean(), sigmas)
        grads.append(g)
    assert bool(grads[0].abs().sum() > 0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_sampler_table_lists_the_registry() -> None:
    """One row per sampler (long option lists continue on indented lines), within 76 columns."""
    lines = sampler_table().splitlines()
    assert lines[0].split()[:3] == ["sampler", "NFE/step", "order"]
    assert [line.split()[0] for line in lines[1:] if not line.startswith(" ")] == list(SAMPLERS)
    assert max(map(len, lines)) <= 76 and any(line.startswith(" ") for line in lines)


def test_a_definition_must_stay_linear() -> None:
    """Adding a constant is not a plan operation: the tracer refuses it instead of recording nonsense."""
    from gentool.core.diffusion.tracing import record

    def bad(model, noise, x, sigmas):  # noqa: ANN001, ANN202
        for _ in sigmas[1:]:
            x = x + 1.0
            yield x

    with pytest.raises(TypeError, match="linear"):
        record(bad, [2.0, 1.0], {})


@pytest.mark.parametrize("name", ["euler", "dpmpp-2m-sde"])
def test_compiled_equals_eager(name: str) -> None:
    """Inductor on CPU: the compiled plan gives the eager numbers (one compile per sampler, ~5 s each: a
    deterministic and a stochastic plan here; every sampler, multistep ones included, in the slow test below)."""
    _compiled_vs_eager(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", PLAN_SAMPLERS)
def test_compiled_equals_eager_every_sampler(name: str) -> None:
    _compiled_vs_eager(name)


def _compiled_vs_eager(name: str) -> None:
    """Two consecutive batches of a run, eager and compiled: the same samples; the second compiled batch reuses
    the code compiled for the first."""
    from torch._dynamo.utils import counters

    den = make_target("gmm-ring")
    x0 = 80 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    runs, graphs = {}, []
    for c in (False, True):
        sampler = prepare_sampler(edm_grid(10), name)
        for a in (0, 128):
            runs[c, a] = sampler.run(den, x0[a:a + 128], seed=1, first_index=a, compile=c)[0]
            graphs.append(counters["stats"]["unique_graphs"])
    for a in (0, 128):
        torch.testing.assert_close(runs[True, a], runs[False, a], rtol=1e-4, atol=1e-4)
    assert graphs[3] == graphs[2], "the run's second batch compiled again"


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_cuda_graph_and_compiled_match_eager(name: str, opts: dict) -> None:
    """Every sampler: the replayed graph and the compiled graph give the eager samples (same noise), a second
    call with another seed replays (stochastic samplers: the graph draws its noise from the new seed's keys)."""
    den = make_target("gmm-ring")
    x0 = 80 * torch.randn(4096, 2, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for seed in (1, 2):  # the second call replays the graphs, which draw the default noise for the new seed
        runs = {(g, c): solve_sampler(den, x0, edm_grid(10), name, graph=g, compile=c, seed=seed, save="trajectory",
                                      **opts) for g, c in (("off", False), ("on", False), ("on", True))}
        for key in (("on", False), ("on", True)):
            torch.testing.assert_close(runs[key].xs, runs["off", False].xs, rtol=1e-4, atol=1e-4)
            assert torch.equal(runs[key].nfe, runs["off", False].nfe)


@pytest.mark.gpu
def test_cuda_graph_samplers_float64_exact_targets() -> None:
    """In float64 the graph path equals the definition run on CUDA tensors to 1e-12."""
    den = make_target("gmm-ring")
    x0 = X0.cuda()
    for name, opts in CASES:
        spec = SAMPLERS[name]
        graphed = run_sampler(den, x0, edm_grid(12), name, graph="on", noise_sampler=ListNoiseCuda(x0), **opts)[0]
        direct = run_definition(spec, den, x0, edm_grid(12).tolist(), ListNoiseCuda(x0), spec.resolve(opts))[0]
        torch.testing.assert_close(graphed, direct, rtol=1e-12, atol=1e-12)


class ListNoiseCuda(ListNoise):
    def __call__(self, sigma: object = None, sigma_next: object = None) -> torch.Tensor:
        return torch.randn(self.like.shape, generator=self.g, dtype=self.like.dtype).to(self.like.device)


def test_brownian_path_has_the_law_of_brownian_motion_at_the_points_asked_for() -> None:
    """Increments over the sampler's pattern (σ, σ_s), (σ, σ'), σ' < σ_s < σ: W(σ_s) − W(σ) and W(σ') − W(σ_s)
    independent with variances |σ_s − σ| and |σ' − σ_s| (a point between known ones is a bridge draw: ask in
    the other order too); empirical moments over 20000 samples within 4 standard errors."""
    from gentool.core.diffusion.noise import BrownianPath

    like = torch.zeros(20000, 1, dtype=F64)
    for order in ((3.0, 2.0, 1.0), (3.0, 1.0, 2.0)):
        path = BrownianPath(like, seed=5)
        for a, b in zip(order, order[1:], strict=False):
            path(a, b)
        w = {q: path.points[q][:, 0] for q in (3.0, 2.0, 1.0)}
        first, second = w[2.0] - w[3.0], w[1.0] - w[2.0]
        n = len(first)
        for inc, var in ((first, 1.0), (second, 1.0)):
            assert abs(float(inc.mean())) < 4 * math.sqrt(var / n)
            assert abs(float(inc.var()) - var) < 4 * var * math.sqrt(2 / n)
        assert abs(float((first * second).mean())) < 4 / math.sqrt(n)
        assert torch.equal(path(3.0, 1.0)[:, 0], (w[1.0] - w[3.0]) / math.sqrt(2.0))


def test_a_churned_heun_step_reuses_its_noised_state() -> None:
    """edm-stochastic raises the noise level first, x^ = x + c z, then takes a Heun step from x^: the recorded
    plan reads x^ as the first stage's input I(0) (one register) in the Euler predictor and the update instead of
    writing out x and z in each: 4 kernels per churned step, not 6, the same samples as its definition."""
    from gentool.core.diffusion.tracing import record
    from gentool.core.solvers.plan import I, K, X, Zk, make_plan

    grid, spec = edm_grid(6).tolist(), SAMPLERS["edm-stochastic"]
    rec = record(spec.fn, grid, spec.resolve({}))
    churned = [st for st in rec.steps if st.draws]
    assert churned and all(dict(st.stages[0].inputs).keys() == {X, Zk(0)} for st in churned)
    assert all(dict(st.stages[1].inputs).keys() == {I(0), K(0)} for st in churned)
    assert all(dict(st.update).keys() == {I(0), K(0), K(1)} for st in churned)
    plan = make_plan("edm", rec.steps, grid, 4, F64, "cpu")
    assert [sum(c.kernels for c in (*(s.inputs for s in st.stages), st.update)) for st, recorded in
            zip(plan.steps, rec.steps, strict=True) if recorded.draws] == [4] * len(churned)
    ns = ListNoise(X0, 3)
    plan_x = run_sampler(TARGETS["gmm-ring"], X0, edm_grid(6), "edm-stochastic", noise_sampler=ns)[0]
    ns = ListNoise(X0, 3)
    loop_x = run_definition(spec, TARGETS["gmm-ring"], X0, grid, ns, spec.resolve({}))[0]
    torch.testing.assert_close(plan_x, loop_x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_plan_folds_a_new_brownian_paths_increments_into_its_coefficients(monkeypatch: pytest.MonkeyPatch,
                                                                             compile: bool) -> None:
    """dpmpp-sde's default noise is a new Brownian path: its plan reads the path's draws and combines them with
    the increment coefficients in the kernels it runs anyway (`make_plan`'s mixing), instead of a matrix product
    of increments per solve. Same samples as the plan on the increments (float64, rounding only), eagerly and
    compiled; the path then holds the points asked for, so a second solve continues it as before."""
    from gentool.core.diffusion import samplers
    from gentool.core.diffusion.noise import BrownianPath

    target, sigmas, x = TARGETS["gmm-ring"], edm_grid(6), X0
    spec, grid = SAMPLERS["dpmpp-sde"], tuple(edm_grid(6).tolist())
    options = tuple(sorted(spec.resolve({}).items()))
    plan, pairs = sampler_plan("dpmpp-sde", grid, options, len(x), F64, x.device, math.sqrt(2.0), True)
    assert plan.noise_draws == 2 * (len(grid) - 2) and len(pairs) == plan.noise_draws
    assert [st.noise for st in plan.steps[:2]] == [(0, 1), (2, 3)]  # each step reads its own two draws
    paths = {fold: BrownianPath(x, seed=4) for fold in (True, False)}
    runs = {}
    for fold, path in paths.items():
        monkeypatch.setattr(samplers, "folds", samplers.folds if fold else (lambda noise: False))
        runs[fold] = [run_sampler(target, x, sigmas, "dpmpp-sde", noise_sampler=path, compile=compile)[0]
                      for _ in range(2)]
    for folded, combined in zip(runs[True], runs[False], strict=True):
        torch.testing.assert_close(folded, combined, rtol=1e-12, atol=1e-12)
    assert not torch.equal(runs[True][0], runs[True][1])  # the second solve took new noise on the same path
    assert paths[True].levy.coef.keys() == paths[False].levy.coef.keys()


@pytest.mark.parametrize("name", STOCHASTIC)
def test_device_noise_rows_equal_the_cpu_draws(name: str) -> None:
    """On a device the default noise reaches the plan as `NoiseRows` (element keys in, the draws made by torch
    ops: what a CUDA graph replays). Forced here on CPU tensors: the same samples, bit for bit, as the numpy
    draws, and a second solve on the same noise object continues its stream as the numpy path does."""
    from gentool.core.diffusion.noise import BrownianPath, element_keys
    from gentool.core.diffusion.samplers import default_noise, draw_all
    from gentool.core.solvers.runner import NoiseRows

    den, sigmas, x = TARGETS["gmm-ring"], edm_grid(7), X0.float()
    spec, grid = SAMPLERS[name], edm_grid(7).tolist()

    def noise(device_keys: bool):
        ns = default_noise(spec, x, grid, 9, 3)
        source = ns.source if isinstance(ns, BrownianPath) else ns
        if device_keys:  # the tensor keys a device holds (on the CPU: numpy words of the same numbers)
            source.keys = element_keys(9, 3, tuple(x.shape), torch.device("cpu"))
        return ns

    pairs = sampler_plan(name, tuple(grid), tuple(sorted(spec.resolve({}).items())), len(x), x.dtype,
                         torch.device("cpu"))[1]
    assert isinstance(draw_all(noise(True), pairs, x), NoiseRows)
    assert torch.equal(draw_all(noise(True), pairs, x).rows(), draw_all(noise(False), pairs, x))
    runs = {}
    for device_keys in (False, True):
        ns = noise(device_keys)
        runs[device_keys] = [run_sampler(den, x, sigmas, name, noise_sampler=ns)[0] for _ in range(2)]
    for a, b in zip(runs[False], runs[True], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", [0, 7, 2**32 + 5, 2**64 - 1])
@pytest.mark.parametrize("wide", [False, True])
def test_the_cpu_noise_kernel_equals_the_torch_ops_every_device_runs(seed: int, wide: bool) -> None:
    """On the CPU the element keys and uniforms of a block of draws come from one pass of the `_noise` kernel;
    the torch int32 ops (CUDA's path, graph-safe) give bit-identical uniforms in (-1, 1), for global sample
    indices below, across and above 2^32 and 2^64, states of any rank, batches whose global element indices
    cross a multiple of 2^32 (a new high word), and draws far from 0."""
    from gentool.core.diffusion import noise

    assert noise.native is not None  # built by the install (`test_packaging` checks it is wherever a C compiler is)
    cases = [*itertools.product((0, 3, 2**32 - 2, 2**40 + 1, 2**64 + 7), ((5,), (4, 3), (3, 2, 2, 2))),
             (2**31 - 3, (8, 2)), (2**32 - 3, (7000, 3)), (11, (4096, 3))]
    for (first, shape), draws in itertools.product(cases, (range(0, 3), range(2**31 - 1, 2**31 + 4))):
        made = noise.cpu_uniforms(seed, first, shape, draws, wide)
        keys = noise.element_keys(seed, first, shape, torch.device("cpu"))
        reference = noise.uniform_tensor(keys, noise.draw_salts(draws.start, len(draws), len(shape),
                                                                torch.device("cpu")), wide)
        assert made.shape == (len(draws), *shape) and made.dtype == reference.dtype
        assert torch.equal(made, reference), (first, shape, draws)
        assert float(made.abs().max()) < 1


def test_without_the_cpu_noise_kernel_the_torch_ops_make_the_same_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel was not built (no C compiler at install), the CPU draws the same numbers in torch ops:
    a stochastic sampler's samples are bit for bit those of the kernel."""
    from gentool.core.diffusion import noise

    x, sigmas = X0.float(), edm_grid(6)
    with_kernel = run_sampler(TARGETS["gmm-ring"], x, sigmas, "dpmpp-2m-sde", seed=4, first_index=9)[0]
    monkeypatch.setattr(noise, "native", None)
    assert torch.equal(run_sampler(TARGETS["gmm-ring"], x, sigmas, "dpmpp-2m-sde", seed=4, first_index=9)[0],
                       with_kernel)


def test_the_cpu_noise_kernel_refuses_buffers_it_cannot_fill() -> None:
    """The kernel takes float32/float64 rows of equal length for 32-bit salts, else one ValueError line."""
    import numpy as np
    from gentool.core.diffusion import noise

    salts = noise.salt_words(0, 3)
    for out, message in ((np.empty((3, 4), np.int32), "float32 or float64"), (np.empty(7, np.float32), "equal"),
                         (np.empty((3, 4), np.float32)[:, ::2], "contiguous")):
        with pytest.raises((ValueError, BufferError), match=message):
            noise.native.uniforms(out, salts, 0, 1, 2)
    with pytest.raises(ValueError, match="32-bit"):
        noise.native.uniforms(np.empty((3, 4), np.float32), salts.astype(np.int64), 0, 1, 2)


def test_no_two_elements_of_a_run_share_their_noise() -> None:
    """Each element's key is mix32 (a bijection) of its global index's low word, offset by its high word's: the
    2^20 elements of a batch (here also of one across a multiple of 2^32 elements) all have distinct keys, so
    no two draw the same numbers (32-bit keys hashed from (sample, element) pairs would repeat ~2^40 / 2^33 = 128
    times here, and with them every draw of those elements)."""
    import numpy as np
    from gentool.core.diffusion.noise import element_keys

    for first, shape in ((0, (2**19, 2)), (5, (2**10, 3, 32, 32)), ((2**32 - 2**18) // 3, (2**19, 3))):
        words = element_keys(11, first, shape, torch.device("cpu")).numpy()
        assert np.unique(words).size == words.size, (first, shape)


def test_the_sampler_bench_times_a_new_batch_per_call() -> None:
    """Each timed call of the sampler bench is the run's next batch (new samples: their noise keys are made
    anew, as in `gentool sample`), not a repeat of one memoised batch."""
    from gentool.core.diffusion.benchmark import MLPDenoiser, SamplerBenchConfig, _contenders

    x0, sigmas = X0[:8].float(), edm_grid(3)
    runs = _contenders(SamplerBenchConfig(batch_sizes=(8,)), "euler-ancestral", MLPDenoiser(0), x0, sigmas,
                       ((80.0, 1.0),))
    with torch.no_grad():
        first, second = runs["eager"]()[0], runs["eager"]()[0]
        draws = runs["noise"](), runs["noise"]()
    assert not torch.equal(first, second) and not torch.equal(*draws)


@pytest.mark.parametrize("name", ["euler", "dpmpp-sde"])
def test_the_sampler_bench_floor_is_the_eager_solves_model_calls_on_their_inputs(name: str) -> None:
    """The floor replays the eager solve's denoiser calls: as many, in order, on the same sigmas and states (a
    model's time depends on its inputs' values, so a floor on one input is not a solve's floor)."""
    from gentool.core.diffusion.benchmark import MLPDenoiser, SamplerBenchConfig, _contenders

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Recording(MLPDenoiser):
        def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            seen.append((sigma.clone(), x.clone()))
            return super().forward(x, sigma)

    x0, sigmas = X0[:8].float(), edm_grid(4)
    runs = _contenders(SamplerBenchConfig(batch_sizes=(8,), seed=2), name, Recording(0), x0, sigmas, ((80.0, 1.0),))
    recorded = list(seen)
    seen.clear()
    with torch.no_grad():
        runs["floor"]()
    nfe = run_sampler(MLPDenoiser(0), x0, sigmas, name)[1]
    assert len(recorded) == len(seen) == nfe and len({float(s[0]) for s, _ in seen}) == nfe
    for (s, x), (t, y) in zip(recorded, seen, strict=True):
        assert torch.equal(s, t) and torch.equal(x, y)
    assert not torch.equal(seen[0][1], seen[-1][1])


def test_seeded_noise_float32_is_standard_normal_and_matches_float64() -> None:
    """The default noise in float32 (its fast path: 24-bit uniforms, float32 erfinv): finite, mean 0, variance 1,
    kurtosis 3 within 4 standard errors over 400k numbers, and the float64 numbers up to its 24-bit rounding."""
    from gentool.core.diffusion.noise import SeededNoise

    like = torch.zeros(20000, 2)
    z = SeededNoise(like, seed=7).draws(10)
    z64 = SeededNoise(like.double(), seed=7).draws(10)
    assert z.dtype == torch.float32 and bool(torch.isfinite(z).all())
    # float32 keeps 24 of the 32 hash bits: |du| <= 2^-24, |dz| <= |du| dz/du = |du| sqrt(pi/2) exp(z^2/2)
    bound = 2.0**-24 * math.sqrt(math.pi / 2) * torch.exp(z64**2 / 2) + 1e-6 * (1 + z64.abs())
    assert bool(((z.double() - z64).abs() <= bound).all())
    v = z.double().flatten()
    n = len(v)
    assert abs(float(v.mean())) < 4 / math.sqrt(n)
    assert abs(float(v.var()) - 1) < 4 * math.sqrt(2 / n)
    assert abs(float((v**4).mean()) - 3) < 4 * math.sqrt(96 / n)
