"""Samplers, schedules, grids, denoisers and analytic targets of `gentool.core.diffusion` (SPEC section 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gentool.core.data import ring_mixture
from gentool.core.diffusion import (
    SAMPLERS,
    EDMPrecond,
    EpsDenoiser,
    VDenoiser,
    edm_grid,
    get_schedule,
    make_grid,
    make_target,
    run_sampler,
    sample,
)
from gentool.core.diffusion.targets import MixtureTarget, gaussian_target, point_target, reference_flow
from gentool.core.errors import BadInput
from hypothesis import given, settings
from hypothesis import strategies as st

X_START = torch.tensor([[104.0]], dtype=torch.float64)
GAUSS = gaussian_target(torch.zeros(1), 1.0)
EXACT = float(GAUSS.exact_flow(X_START, 80.0, 0.0))


def endpoint_error(sampler: str, steps: int) -> float:
    x, _ = run_sampler(GAUSS, X_START, edm_grid(steps), sampler)
    return abs(float(x) - EXACT)


def euler_closed_form(steps: int, s: float = 1.0, x: float = 104.0) -> float:
    """Euler on the linear ODE dx/dsigma = sigma x/(s^2 + sigma^2): a product of step factors (numpy)."""
    g = np.append(
        (80 ** (1 / 7) + np.arange(steps) / (steps - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, 0
    )
    for a, b in zip(g[:-1], g[1:], strict=True):
        x *= 1 + (b - a) * a / (s * s + a * a)
    return abs(x - 104.0 * s / math.sqrt(s * s + 6400))


def test_exact_gaussian_flow_value() -> None:
    assert pytest.approx(104 / math.sqrt(6401), rel=1e-14) == EXACT


@pytest.mark.parametrize("steps", [4, 8, 16, 32, 64])
def test_euler_gaussian_matches_closed_form(steps: int) -> None:
    assert endpoint_error("euler", steps) == pytest.approx(euler_closed_form(steps), rel=1e-10)


def test_gaussian_errors_measured_values() -> None:
    """Measured with m=0, s=1, x=104, EDM grid of N noise levels + sigma_N = 0 (differs from SPEC figures)."""
    euler = [endpoint_error("euler", n) for n in (8, 16, 32, 64)]
    heun = [endpoint_error("heun", n) for n in (8, 16, 32, 64)]
    assert euler == pytest.approx([0.4005, 0.2049, 0.1036, 0.05204], rel=2e-3)
    assert heun == pytest.approx([0.3895, 0.07595, 0.01663, 0.003899], rel=2e-3)


@pytest.mark.parametrize(("sampler", "order"), [("euler", 1), ("heun", 2), ("dpmpp-2m", 2), ("amed", 2)])
def test_observed_order_gaussian(sampler: str, order: int) -> None:
    ratio = endpoint_error(sampler, 64) / endpoint_error(sampler, 128)
    assert math.log2(ratio) == pytest.approx(order, abs=0.2)


def test_heun_worse_than_euler_at_four_steps() -> None:
    assert endpoint_error("heun", 4) > 2 * endpoint_error("euler", 4)


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 40), rho=st.floats(1.0, 10.0), point=st.floats(-5, 5))
def test_euler_exact_on_point_mass(steps: int, rho: float, point: float) -> None:
    target = point_target(torch.tensor([point, -point]))
    x0 = torch.tensor([[30.0, -7.0], [1.0, 2.0]], dtype=torch.float64)
    x, nfe = run_sampler(target, x0, edm_grid(steps, rho=rho), "euler")
    assert nfe == steps
    torch.testing.assert_close(x, target.mixture.means.expand(2, 2), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def ring_problem() -> tuple[MixtureTarget, torch.Tensor, torch.Tensor]:
    target = make_target("gmm-ring")
    x0 = 80 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return target, x0, reference_flow(target, x0, 80.0)


def ring_error(problem, sampler: str, steps: int, **opts) -> float:
    target, x0, ref = problem
    x, _ = run_sampler(target, x0, edm_grid(steps), sampler, **opts)
    return float(((x - ref) ** 2).sum(1).mean().sqrt())


def test_dpmpp_second_order_on_ring_and_beats_euler(ring_problem) -> None:
    dpm = [ring_error(ring_problem, "dpmpp-2m", n) for n in (50, 100)]
    euler = [ring_error(ring_problem, "euler", n) for n in (50, 100)]
    assert math.log2(dpm[0] / dpm[1]) > 1.5
    assert math.log2(euler[0] / euler[1]) == pytest.approx(1.0, abs=0.25)
    assert euler[0] > 4 * dpm[0] and euler[1] > 6 * dpm[1]


def test_ode_sampler_matches_reference(ring_problem) -> None:
    assert ring_error(ring_problem, "ode", 10, method="dopri5", rtol=1e-8, atol=1e-8) < 1e-4
    assert ring_error(ring_problem, "ode", 40, method="rk4") < 1e-2


def test_reference_flow_agrees_with_exact_gaussian() -> None:
    one_comp = MixtureTarget(ring_mixture(k=1, std=0.7))
    x0 = torch.tensor([[30.0, -4.0], [2.0, 1.0]], dtype=torch.float64)
    exact = one_comp.exact_flow(x0, 80.0, 0.0)
    two = MixtureTarget(ring_mixture(k=1, std=0.7))
    two.exact_flow = lambda *a: None  # force the DOP853 path
    torch.testing.assert_close(reference_flow(two, x0, 80.0), exact, rtol=1e-9, atol=1e-9)


def test_mixture_denoiser_is_tweedie() -> None:
    """`D(x, sigma) = x + sigma^2 grad log p_sigma(x)`, p_sigma the mixture with variances s^2 + sigma^2."""
    mix = ring_mixture()
    target = MixtureTarget(mix)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for sigma in (0.05, 0.7, 5.0):
        wide = type(mix)(mix.means, torch.sqrt(mix.stds**2 + sigma**2), mix.weights)
        xr = x.clone().requires_grad_(True)
        (score,) = torch.autograd.grad(wide.log_prob(xr).sum(), xr)
        torch.testing.assert_close(
            target(x, torch.tensor(sigma, dtype=torch.float64)), x + sigma**2 * score, rtol=1e-10, atol=1e-10
        )


def test_ddim_eta_zero_is_euler(ring_problem) -> None:
    assert ring_error(ring_problem, "ddim", 12, eta=0.0) == pytest.approx(
        ring_error(ring_problem, "euler", 12), rel=1e-12
    )


def test_ddim_eta_one_samples_the_gaussian() -> None:
    g = torch.Generator().manual_seed(0)
    target = gaussian_target(torch.tensor([1.0]), 0.5)
    x, _ = run_sampler(
        target,
        80 * torch.randn(20000, 1, generator=g, dtype=torch.float64),
        edm_grid(400),
        "ddim",
        eta=1.0,
        generator=g,
    )
    assert float(x.mean()) == pytest.approx(1.0, abs=0.02)
    assert float(x.std()) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("name", ["ve", "vp-linear", "vp-cosine", "edm"])
def test_schedule_inverse(name: str) -> None:
    sch = get_schedule(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64) * (sch.t_max - sch.t_min) + sch.t_min
    torch.testing.assert_close(sch.t_of_sigma(sch.sigma(t)), t, rtol=1e-9, atol=1e-9)
    ab = sch.alpha(t) ** 2
    if name.startswith("vp"):  # sigma-form: sigma = sigma~/alpha with alpha^2 + sigma~^2 = 1
        torch.testing.assert_close(sch.sigma(t), torch.sqrt(1 - ab) / ab.sqrt())


@pytest.mark.parametrize("grid", ["edm", "uniform-t", "log-sigma"])
def test_grids_decrease_to_zero(grid: str) -> None:
    g = make_grid(grid, 12, sigma_min=0.01, sigma_max=50.0)
    assert len(g) == 13 and float(g[-1]) == 0.0
    assert float(g[0]) == pytest.approx(50.0) and float(g[-2]) == pytest.approx(0.01)
    assert bool((g[1:] < g[:-1]).all())


@pytest.mark.parametrize(
    ("adapter", "schedule"), [(EpsDenoiser, "vp-linear"), (VDenoiser, "vp-cosine"), (EpsDenoiser, "ve")]
)
def test_eps_and_v_adapters_recover_exact_denoiser(adapter, schedule: str) -> None:
    """Exact eps / v nets of a Gaussian target in the schedule's own variables; the adapter must give D."""
    sch = get_schedule(schedule)
    target = gaussian_target(torch.tensor([0.5, -1.0]), 0.8)

    def net(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha = sch.alpha(t)[:, None]
        sig = sch.sigma(t)[:, None]
        x = xt / alpha
        d = target(x, sig.reshape(-1))
        eps = (x - d) / sig
        return eps if adapter is EpsDenoiser else alpha * eps - alpha * sig * d

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    sigma = torch.full((16,), 1.7, dtype=torch.float64)
    torch.testing.assert_close(adapter(net, sch)(x, sigma), target(x, sigma), rtol=1e-9, atol=1e-9)


def test_edm_precond_with_zero_net_is_c_skip() -> None:
    class Zero(torch.nn.Module):
        dim = 2

        def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    d = EDMPrecond(Zero(), 0.5)
    x = torch.ones(3, 2)
    torch.testing.assert_close(
        d(x, torch.tensor([0.5, 1.0, 2.0])), x * (0.25 / torch.tensor([[0.5], [1.25], [4.25]]))
    )


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sample_api_shapes_and_nfe(sampler: str) -> None:
    g = torch.Generator().manual_seed(0)
    x, nfe = sample(
        make_target("gmm-ring"), 64, 2, sampler=sampler, steps=6, generator=g, dtype=torch.float64
    )
    assert x.shape == (64, 2) and bool(torch.isfinite(x).all())
    expected = {"euler": 6, "ddim": 6, "dpmpp-2m": 6, "heun": 11, "amed": 11}
    assert nfe == expected.get(sampler, nfe) and nfe >= 1


def test_init_scale_scales_initial_noise() -> None:
    calls: list[torch.Tensor] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(x.clone())
        return torch.zeros_like(x)

    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    sample(spy, 10, 2, sampler="euler", steps=2, generator=g(), init_scale=1.0)
    sample(spy, 10, 2, sampler="euler", steps=2, generator=g(), init_scale=0.5)
    torch.testing.assert_close(calls[2], 0.5 * calls[0])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"sampler": "rk9"}, "sampler"),
        ({"steps": 0}, "steps"),
        ({"grid": "cubic"}, "grid"),
        ({"grid": "uniform-t", "schedule": "xx"}, "schedule"),
    ],
)
def test_bad_input(kwargs: dict, word: str) -> None:
    with pytest.raises(BadInput, match=word):
        sample(make_target("point"), 4, 2, generator=torch.Generator(), **kwargs)


def test_unknown_target() -> None:
    with pytest.raises(BadInput, match="target"):
        make_target("banana")


@pytest.mark.parametrize("name", ["gmm-grid", "gmm-random", "gmm-ring"])
def test_reference_flow_finite_and_matches_tight_ode(name: str) -> None:
    target = make_target(name, dim=5)
    x0 = 80 * torch.randn(40, target.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = reference_flow(target, x0, 80.0)
    x, _ = run_sampler(
        target, x0, edm_grid(2, sigma_min=1e-4), "ode", method="dopri5", rtol=1e-10, atol=1e-10
    )
    assert bool(torch.isfinite(ref).all())
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)


def test_direction_matches_definition() -> None:
    target = make_target("gmm-random", dim=3)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    sigma = torch.tensor(0.8, dtype=torch.float64)
    torch.testing.assert_close(target.direction(x, sigma), (x - target(x, sigma)) / sigma)
