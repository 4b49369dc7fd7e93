"""Samplers as plans on the solver core: equal to the plain-loop reference, orders, noise, errors, GPU paths."""

from __future__ import annotations

import math

import pytest
import torch
from gentool.core.diffusion import SAMPLERS, edm_grid, make_grid, make_target, run_sampler, sampler_table
from gentool.core.diffusion.plain_loops import PLAIN_LOOPS
from gentool.core.diffusion.samplers import solve_sampler
from gentool.core.diffusion.targets import gaussian_target, point_target
from gentool.core.errors import BadInput
from gentool.core.solvers import NonFiniteState

F64 = torch.float64
TARGETS = {"gaussian": gaussian_target(torch.tensor([0.5, -1.0]), 0.8), "gmm-ring": make_target("gmm-ring"),
           "point": point_target(torch.tensor([0.3, -1.0]))}
OPTIONS = {"ddim": [{"eta": 0.0}, {"eta": 0.6}, {"eta": 1.0}], "amed": [{"r": 0.3}],
           "unipc": [{"order": 1}, {"order": 2}, {"order": 3}],
           "ipndm": [{"order": 1}, {"order": 2}, {"order": 4}], "ipndm-v": [{"order": 3}, {"order": 4}]}
CASES = [(name, opts) for name in PLAIN_LOOPS for opts in OPTIONS.get(name, [{}])]
X0 = 80 * torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=F64)


def _both(name: str, opts: dict, target: str, sigmas: torch.Tensor) -> tuple:
    loop = PLAIN_LOOPS[name](TARGETS[target], X0, sigmas.tolist(), generator=torch.Generator().manual_seed(7), **opts)
    plan = run_sampler(TARGETS[target], X0, sigmas, name, generator=torch.Generator().manual_seed(7), **opts)
    return loop, plan


@pytest.mark.parametrize(("name", "opts"), CASES)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_plan_equals_plain_loop(name: str, opts: dict, target: str) -> None:
    """Same samples (float64, 1e-12) and NFE as the plain loop; ddim with eta > 0 from the same generator."""
    for sigmas in (edm_grid(1), edm_grid(3), edm_grid(7), edm_grid(16), make_grid("log-sigma", 9),
                   edm_grid(6)[:-1]):  # the last grid ends at sigma_min > 0
        (x_loop, nfe_loop), (x_plan, nfe_plan) = _both(name, opts, target, sigmas)
        torch.testing.assert_close(x_plan, x_loop, rtol=1e-12, atol=1e-12)
        assert nfe_plan == nfe_loop


@pytest.mark.parametrize("name", ["heun", "amed"])
def test_two_step_grid_is_ill_conditioned_for_both(name: str) -> None:
    """EDM grid of 2 levels: one step 80 -> 0.002, whose second stage is weighted by h / (2 sigma') ~ 2e4, so
    both forms round differently at ~1e-12 absolute; they agree to that amplification of float64 epsilon."""
    (x_loop, _), (x_plan, _) = _both(name, {}, "gmm-ring", edm_grid(2))
    torch.testing.assert_close(x_plan, x_loop, rtol=0, atol=2e4 * 80 * 2.3e-16)


def test_stochastic_noise_comes_from_the_generator() -> None:
    sigmas = edm_grid(8)
    a = run_sampler(TARGETS["gaussian"], X0, sigmas, "ddim", eta=1.0, generator=torch.Generator().manual_seed(3))[0]
    b = run_sampler(TARGETS["gaussian"], X0, sigmas, "ddim", eta=1.0, generator=torch.Generator().manual_seed(3))[0]
    c = run_sampler(TARGETS["gaussian"], X0, sigmas, "ddim", eta=1.0, generator=torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


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
    ({"sampler": "dpm3"}, "allowed: amed, ddim, dpmpp-2m, dpmpp-3m, dpmpp-3m-kd"),
    ({"sampler": "unipc", "order": 4}, "order must be an integer in"),
    ({"sampler": "euler", "eta": 1.0}, "unknown option of sampler 'euler'"),
    ({"sampler": "ddim", "eta": -1.0}, "eta must be"),
    ({"sigmas": [80.0, 0.0, 1.0]}, "strictly decreasing"),
    ({"sigmas": [80.0]}, "steps must be >= 1"),
])
def test_bad_input(kwargs: dict, match: str) -> None:
    args = {"sampler": "euler", "sigmas": edm_grid(4)} | kwargs
    with pytest.raises(BadInput, match=match):
        run_sampler(TARGETS["gaussian"], X0, args.pop("sigmas"), args.pop("sampler"), **args)


def test_sampler_table_lists_the_registry() -> None:
    lines = sampler_table().splitlines()
    assert lines[0].split()[:3] == ["sampler", "NFE/step", "order"]
    assert [line.split()[0] for line in lines[1:]] == list(SAMPLERS)


X_START = torch.tensor([[104.0]], dtype=F64)
GAUSS = gaussian_target(torch.zeros(1), 1.0)


def observed_order(name: str, steps: tuple[int, int] = (128, 256), **opts) -> float:
    """log2 of the error ratio when halving the step, on the EDM grid 80 -> 0.002 (without the final
    jump to 0, whose O(sigma_min^2) error does not shrink with the step)."""
    exact = GAUSS.exact_flow(X_START, 80.0, 0.002)
    errs = [abs(float(run_sampler(GAUSS, X_START, edm_grid(n)[:-1], name, **opts)[0] - exact)) for n in steps]
    return math.log2(errs[0] / errs[1])


@pytest.mark.parametrize(("name", "opts", "order"), [
    ("dpmpp-3m", {}, 3), ("dpmpp-3m-kd", {}, 2), ("unipc", {"order": 1}, 2), ("unipc", {"order": 2}, 3),
    ("unipc", {"order": 3}, 4),
    ("ipndm-v", {"order": 3}, 3), ("ipndm-v", {"order": 4}, 4), ("ipndm", {}, 2),
])
def test_observed_order(name: str, opts: dict, order: int) -> None:
    """UniPC-p converges with order p + 1 (its corrector adds one); fixed-weight iPNDM is second order on a
    non-uniform grid (its uniform-step weights leave an O(h^3) local error), ipndm-v keeps its order."""
    assert observed_order(name, **opts) == pytest.approx(order, abs=0.25)


def test_kdiffusion_3m_weight_is_second_order() -> None:
    """The DPM-Solver++(3M) update of k-diffusion/DPM-Solver weights d2 ~ h^2 D''/2 by -phi_3, half the
    Taylor coefficient: its step is not exact for a quadratic D (ours is), so it converges with order 2."""
    lam, h = 0.0, 0.2
    m = lambda t: 1.0 + 2 * t + 3 * t * t  # noqa: E731 - D as a quadratic in lambda
    exact = math.exp(-h) + (m(h) - 2 - 6 * h + 6) - math.exp(-h) * (m(0) - 2 + 6)  # x(0) = 1, dx/dl = m - x
    m0, m1, m2 = m(lam), m(lam - h), m(lam - 2 * h)
    d1 = (m0 - m1) + ((m0 - m1) - (m1 - m2)) / 2
    d2 = ((m0 - m1) - (m1 - m2)) / 2
    phi_2, phi_3 = math.expm1(-h) / h + 1, (math.expm1(-h) / h + 1) / h - 0.5
    base = math.exp(-h) - math.expm1(-h) * m0 + phi_2 * d1
    assert base - 2 * phi_3 * d2 == pytest.approx(exact, abs=1e-14)
    assert abs(base - phi_3 * d2 - exact) > 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "opts"), CASES)
def test_cuda_graph_matches_eager(name: str, opts: dict) -> None:
    """Every sampler: the replayed graph gives the eager samples (same noise for ddim), a second call replays."""
    den = make_target("gmm-ring")
    x0 = 80 * torch.randn(4096, 2, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for sigmas in (edm_grid(10), edm_grid(10)):
        runs = {g: solve_sampler(den, x0, sigmas, name, graph=g, generator=torch.Generator("cuda").manual_seed(1),
                                 save="trajectory", **opts) for g in ("off", "on")}
        torch.testing.assert_close(runs["on"].xs, runs["off"].xs, rtol=1e-5, atol=1e-5)
        assert torch.equal(runs["on"].nfe, runs["off"].nfe)


@pytest.mark.gpu
def test_cuda_graph_samplers_float64_exact_targets() -> None:
    """In float64 the graph path equals the plain loop to 1e-12 as well."""
    den = make_target("gmm-ring")
    x0 = X0.cuda()
    for name, opts in CASES:
        g = torch.Generator("cuda")
        graphed = run_sampler(den, x0, edm_grid(12), name, graph="on", generator=g.manual_seed(2), **opts)[0]
        loop = PLAIN_LOOPS[name](den, x0, edm_grid(12).tolist(), generator=g.manual_seed(2), **opts)[0]
        torch.testing.assert_close(graphed, loop, rtol=1e-12, atol=1e-12)
