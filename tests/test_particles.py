"""Particle flows (SPEC §4, issue 16): exact moments, each method's time scale and defaults, the kernels, the
metrics against fresh exact samples, and the researcher's own inputs (files, custom targets, any Gaussian)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.core.errors import BadInput, NumericalFailure
from gentool.core.io import read_json
from gentool.core.jobs import run
from gentool.core.jobs.optimize import ParticlesConfig
from gentool.core.metrics import mmd2
from gentool.core.metrics.kernels import median_bandwidth as metrics_median
from gentool.core.probspace import (
    DEFAULTS,
    FreeEnergy,
    QuadraticFlow,
    gaussian_target,
    kl_energy,
    make_target,
    moment_errors,
    run_particles,
)
from gentool.core.probspace.kernels import (
    energy_witness_grad,
    median_bandwidth,
    mmd_witness_grad,
    silverman_factor,
    svgd_bandwidth,
    whitened_kde_score,
)
from scipy.integrate import solve_ivp


def _gaussian_start(n: int, mean: list[float], cov: list[list[float]], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m, c = torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64)
    return m + torch.randn(n, len(mean), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c).T


def _empirical(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


# ---- closed forms -----------------------------------------------------------------------------------------

def test_quadratic_flow_special_cases() -> None:
    """KL to N(0, I): m_t = m₀e^{−t}, C_t = I + (C₀ − I)e^{−2t}; heat flow: Σ₀ + 2t I (SPEC §4)."""
    m0, c0, t = torch.tensor([2.0, -1.0]), torch.tensor([[2.0, 0.5], [0.5, 0.5]]), 0.7
    eye = torch.eye(2, dtype=torch.float64)
    mean, cov = QuadraticFlow(eye, torch.zeros(2)).moments(t, m0, c0)
    torch.testing.assert_close(mean, m0.double() * math.exp(-t))
    torch.testing.assert_close(cov, eye + (c0.double() - eye) * math.exp(-2 * t))
    mean, cov = QuadraticFlow(0 * eye, torch.zeros(2)).moments(t, m0, c0)
    torch.testing.assert_close(mean, m0.double())
    torch.testing.assert_close(cov, c0.double() + 2 * t * eye)
    assert QuadraticFlow(0 * eye, torch.zeros(2)).limit(m0) is None


@pytest.mark.parametrize(("interaction", "entropy", "singular"), [(0.0, 1.0, False), (0.7, 0.5, False),
                                                                  (0.4, 2.0, True), (-0.2, 1.0, False)])
def test_quadratic_flow_matches_the_moment_ode(interaction: float, entropy: float, singular: bool) -> None:
    """μ' = −P(μ − m), Σ' = −KΣ − ΣK + 2εI (K = P + aI) integrated by scipy's DOP853 against the closed form."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    p = a @ a.T + (0.0 if singular else 0.3) * torch.eye(3, dtype=torch.float64)
    if singular:
        u = torch.linalg.eigh(p).eigenvectors
        p = p - (u[:, :1] * torch.linalg.eigvalsh(p)[0]) @ u[:, :1].T  # drop the smallest eigenvalue
    m, mu0 = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    b = torch.randn(3, 3, generator=g, dtype=torch.float64)
    s0 = b @ b.T + 0.1 * torch.eye(3, dtype=torch.float64)
    k = (p + interaction * torch.eye(3, dtype=torch.float64)).numpy()

    def rhs(_: float, y: np.ndarray) -> np.ndarray:
        mu, s = y[:3], y[3:].reshape(3, 3)
        return np.concatenate([-p.numpy() @ (mu - m.numpy()), (-k @ s - s @ k + 2 * entropy * np.eye(3)).ravel()])

    t = 1.3
    sol = solve_ivp(rhs, (0, t), np.concatenate([mu0.numpy(), s0.numpy().ravel()]), method="DOP853", rtol=1e-11,
                    atol=1e-12)
    mean, cov = QuadraticFlow(p, m, interaction, entropy).moments(t, mu0, s0)
    np.testing.assert_allclose(mean.numpy(), sol.y[:3, -1], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cov.numpy(), sol.y[3:, -1].reshape(3, 3), rtol=1e-7, atol=1e-9)
    lim = QuadraticFlow(p, m, interaction, entropy).limit(mu0)
    if interaction < 0 and not bool((torch.linalg.eigvalsh(p) + interaction > 0).all()):
        assert lim is None
    elif lim is not None:
        late = QuadraticFlow(p, m, interaction, entropy).moments(200.0, mu0, s0)
        torch.testing.assert_close(lim[0], late[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(lim[1], late[1], atol=1e-6, rtol=1e-6)


# ---- Fokker–Planck time: langevin and kde-flow against the exact moments ----------------------------------

def test_langevin_and_kde_flow_run_in_fokker_planck_time() -> None:
    """KL to N(m, C) from N(m₀, C₀) (empirical moments), t = 1: the exact moments `QuadraticFlow.moments`.
    Langevin is exact in law (sampling error of n = 2000); kde-flow is deterministic: its mean is exact, its
    covariance shrinks by the stated factor 1/(1 + h²)-ish (bounded here by 15%)."""
    target = gaussian_target(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    x0 = _gaussian_start(2000, [2.0, 0.0], [[2.0, 0.5], [0.5, 0.5]], seed=3)
    exact = QuadraticFlow(torch.linalg.inv(target.moments[1]), target.moments[0]).moments(1.0, *_empirical(x0))
    lang = run_particles(kl_energy(target), x0, "langevin", time=1.0, step_size=0.002,
                         generator=torch.Generator().manual_seed(4), log_every=500)
    mean_err, cov_err = moment_errors(lang.x, *exact)
    assert mean_err < 4 * math.sqrt(float(torch.trace(exact[1])) / 2000) and cov_err < 0.12
    kde = run_particles(kl_energy(target), x0, "kde-flow", time=1.0, step_size=0.01, log_every=100)
    mean_err, _ = moment_errors(kde.x, *exact)
    ratio = torch.linalg.eigvalsh(torch.cov(kde.x.T)) / torch.linalg.eigvalsh(exact[1])
    assert mean_err < 0.01 and bool(((ratio > 0.85) & (ratio < 1.0)).all()), ratio


@pytest.mark.parametrize("n", [500, 2000])
def test_heat_flow_kde_bias_is_the_stated_factor(n: int) -> None:
    """Heat flow from N(0, 1): Var_t = 1 + 2t (Langevin, exact in law). The KDE score is that of the density
    smoothed by N(0, h²Cov): the variance grows at the rate 2/(1 + h²) (the size the job prints), within 1.5%."""
    x0 = _gaussian_start(n, [0.0], [[1.0]], seed=1)
    t, h = 0.5, silverman_factor(n, 1)
    kde = run_particles(FreeEnergy(entropy=1.0), x0, "kde-flow", time=t, step_size=0.02, log_every=25)
    plain = float(x0.var()) + 2 * t
    assert float(kde.x.var()) / plain < 1 - 0.5 * h * h * 2 * t / plain  # the bias is real and visible
    assert float(kde.x.var()) == pytest.approx(float(x0.var()) + 2 * t / (1 + h * h), rel=0.015)
    lang = run_particles(FreeEnergy(entropy=1.0), x0, "langevin", time=t, step_size=0.02,
                         generator=torch.Generator().manual_seed(2), log_every=25)
    assert abs(float(lang.x.var()) - (1 + 2 * t)) < 4 * (1 + 2 * t) * math.sqrt(2 / n)


# ---- kernels and the one median convention ----------------------------------------------------------------

def test_one_median_convention() -> None:
    """The flows and the metrics use one median heuristic: the median pairwise distance of the pooled sample."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    z = torch.cat([x, y]).numpy()
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[~np.eye(len(z), dtype=bool)]
    assert median_bandwidth is metrics_median
    assert median_bandwidth(x, y) == pytest.approx(float(torch.tensor(d).median()), rel=1e-12)
    assert svgd_bandwidth(x) == pytest.approx(median_bandwidth(x) / math.sqrt(2 * math.log(40)), rel=1e-12)


def test_whitened_kde_score_shrinks_every_direction_alike() -> None:
    """On exact N(m, C) samples (n = 4000, centre of the cloud) the score is ≈ −((1 + h²)C)⁻¹(x − m): the
    anisotropic C = diag(0.2, 1.8) is shrunk by the same factor in both directions (an isotropic bandwidth
    would take h² off each variance: 45% of the small one)."""
    n, c = 4000, torch.diag(torch.tensor([0.2, 1.8], dtype=torch.float64))
    x = _gaussian_start(n, [0.0, 0.0], c.tolist(), seed=5)
    s, h = whitened_kde_score(x, silverman_factor(n, 2)), silverman_factor(n, 2)
    core = ((x**2) / torch.diagonal(c)).sum(1) < 1.5**2
    slope = -torch.linalg.lstsq(x[core] - x.mean(0), s[core]).solution
    np.testing.assert_allclose(torch.diagonal(slope * c).numpy(), 1 / (1 + h * h), rtol=0.03)


def test_witness_gradients() -> None:
    """Gaussian kernel: ∇f by autograd of f(z) = mean k(z, xⱼ) − mean k(z, yⱼ) (x, y held fixed). Energy kernel:
    ∇f(xᵢ) = −(1/n) Σ_{j≠i} unit(xᵢ − xⱼ) + (1/m) Σⱼ unit(xᵢ − yⱼ), summed term by term in numpy."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 2, generator=g, dtype=torch.float64), torch.randn(50, 2, generator=g, dtype=torch.float64)
    z = x.clone().requires_grad_(True)
    f = torch.exp(-torch.cdist(z, x) ** 2 / 0.98).mean(1) - torch.exp(-torch.cdist(z, y) ** 2 / 0.98).mean(1)
    (auto,) = torch.autograd.grad(f.sum(), z)
    torch.testing.assert_close(mmd_witness_grad(x, y, 0.7), auto)
    xn, yn = x.numpy(), y.numpy()

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    expected = [-sum(unit(xn[i] - xn[j]) for j in range(30) if j != i) / 30
                + sum(unit(xn[i] - yn[j]) for j in range(50)) / 50 for i in range(30)]
    np.testing.assert_allclose(energy_witness_grad(x, y).numpy(), np.array(expected), rtol=1e-10, atol=1e-12)


def test_multiscale_mmd2_is_the_mean_of_single_scales() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(60, 2, generator=g, dtype=torch.float64), torch.randn(50, 2, generator=g, dtype=torch.float64)
    hs = (0.3, 1.0, 2.5)
    assert mmd2(x, y, hs) == pytest.approx(sum(mmd2(x, y, h) for h in hs) / 3, rel=1e-12)


# ---- the job: defaults reach the target, metrics against fresh samples --------------------------------------

def _summary(out: Path) -> dict:
    return read_json(out / "DONE.json")["summary"]


DEFAULT_RUNS = [pytest.param("svgd", None, id="svgd", marks=pytest.mark.slow),  # 800 steps, n = 1000: ~50 s
                pytest.param("svgd", 300, id="svgd-n300"),
                pytest.param("mmd-flow", None, id="mmd-flow", marks=pytest.mark.slow),  # 500 steps, n = 1000: ~15 s
                pytest.param("mmd-flow", 300, id="mmd-flow-n300")]


@pytest.mark.parametrize(("method", "n"), DEFAULT_RUNS)
def test_svgd_and_mmd_flow_reach_the_correlated_gaussian_with_defaults(tmp_path: Path, method: str,
                                                                       n: int | None) -> None:
    """Issue 16: with every default (n = 1000 from N(0, I), the method's time and step) the 2-D correlated
    Gaussian N((1, −1), [[1, .8], [.8, 1]]) is reached: mean error ≤ 0.05 (Euclidean), covariance error ≤ 0.1
    (Frobenius). The old defaults (flow time 5 = 500 steps of 0.01) left SVGD at mean error > 0.2. The default
    suite runs both with 300 particles (every other setting default); the full default runs are `slow`."""
    res = run("optimize particles", tmp_path / method, target="gaussian-corr", method=method, n=n, plots=False)
    assert res.summary["mean_err"] <= 0.05 and res.summary["cov_err"] <= 0.1, res.summary
    assert res.summary["t"] == DEFAULTS[method].time
    if method == "svgd":
        old = run("optimize particles", tmp_path / "old", target="gaussian-corr", method=method, time=5.0,
                  step_size=0.05, n=n, plots=False)
        assert old.summary["mean_err"] > 0.2


STIFF_CASES = [pytest.param(m, t, 30, 40.0, id=f"{m}-{t}-n30") for m in ("svgd", "kde-flow", "mmd-flow")
               for t in ("gmm-ring", "gmm-grid", "double-well", "banana")
               if not (m == "mmd-flow" and t == "double-well")]  # mmd-flow needs an exact sampler
STIFF_CASES += [pytest.param(m, "double-well", 1000, 1.0, id=f"{m}-double-well-n1000") for m in ("svgd", "kde-flow")]


@pytest.mark.parametrize(("method", "target", "n", "time"), STIFF_CASES)
def test_default_steps_are_stable_on_the_stiff_targets(tmp_path: Path, method: str, target: str, n: int,
                                                       time: float) -> None:
    """The deterministic flows' default steps from N(0, I) on the built-in targets with stiff scores: 30
    particles for 40 time units (svgd's old step 0.5 diverged on gmm-ring and gmm-grid by t = 12-20 and on
    double-well), and 1000 particles for 1 time unit on double-well (kde-flow's old 0.02 broke its covariance
    in the first 0.2). The run ends with finite particles (a divergence is exit 3, `NumericalFailure`)."""
    res = run("optimize particles", tmp_path / "r", target=target, method=method, n=n, time=time, plots=False)
    assert res.summary["t"] == pytest.approx(time, rel=1e-12) and res.summary["step_size"] == DEFAULTS[method].step
    assert bool(torch.isfinite(torch.as_tensor(np.load(tmp_path / "r" / "final.npz")["x"])).all())


def test_reported_mmd_uses_a_fresh_sample_and_stated_bandwidths(tmp_path: Path) -> None:
    """The MMD² of the trace is against an exact target sample independent of the samples driving the MMD flow,
    with the bandwidths the summary states (multiples of the reference's median distance); its noise level
    (two independent exact samples) is reported beside it."""
    out = tmp_path / "mmd"
    res = run("optimize particles", out, target="gmm-ring", method="mmd-flow", n=200, n_target=400, time=20.0,
              plots=False)
    final = np.load(out / "final.npz")
    ref, x, hs = torch.as_tensor(final["reference"]), torch.as_tensor(final["x"]), tuple(final["mmd2_bandwidths"])
    assert res.summary["mmd2"] == pytest.approx(mmd2(x, ref, hs), rel=1e-9)
    assert res.summary["mmd2_bandwidths"] == ",".join(f"{h:.3g}" for h in hs)
    np.testing.assert_allclose(np.array(hs) / hs[3], [0.125, 0.25, 0.5, 1.0, 2.0])
    assert hs[3] == pytest.approx(median_bandwidth(ref), rel=1e-12)
    from gentool.core.jobs.optimize import ParticlesJob
    job = ParticlesJob(ParticlesConfig(target="gmm-ring", method="mmd-flow", n=200, n_target=400, time=20.0), 0)
    assert torch.cdist(job.driving, job.reference.x).min() > 0  # no shared points
    assert 0 < res.summary["mmd2_noise"] < 0.01


def test_time_is_the_knob_and_the_last_step_lands_on_it(tmp_path: Path) -> None:
    res = run("optimize particles", tmp_path / "t", target="gaussian", method="langevin", time=1.0, step_size=0.3,
              n=50, plots=False)
    assert res.summary["steps"] == 4 and res.summary["t"] == 1.0
    assert [r["t"] for r in res.rows][-2:] == [pytest.approx(0.9), 1.0]


def test_a_resumed_run_extends_time_like_a_straight_run(tmp_path: Path) -> None:
    opts = dict(target="banana", method="langevin", n=100, step_size=0.01, log_every=10, plots=False)
    run("optimize particles", tmp_path / "a", time=0.5, **opts)
    run("optimize particles", tmp_path / "a", time=1.0, resume="require", **opts)
    run("optimize particles", tmp_path / "b", time=1.0, **opts)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()


def test_svgd_without_a_target_is_refused() -> None:
    """Issue 16: SVGD on the heat flow silently ran repulsion only; target none now needs a confining
    interaction for svgd."""
    with pytest.raises(BadInput, match="repulsion only"):
        ParticlesConfig(target="none", method="svgd")
    ParticlesConfig(target="none", method="svgd", interaction=1.0)


def test_divergence_is_a_numerical_failure() -> None:
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(NumericalFailure, match="non-finite by t="):
        run_particles(kl_energy(make_target("double-well")), x0 * 10, "langevin", time=500.0, step_size=10.0)
    with pytest.raises(BadInput, match="allowed: "):
        run_particles(kl_energy(make_target("banana")), x0, "hmc", time=1.0)


@pytest.mark.parametrize(("method", "time", "step_size", "bandwidth"),
                         [("langevin", 1.5, 0.005, None), ("svgd", 6.0, 0.01, 0.3)])
def test_reaches_gmm_target(method: str, time: float, step_size: float, bandwidth: float | None) -> None:
    """MMD²(particles, fresh target sample) < 2 × the largest |MMD²| between two independent target samples
    (5 pairs), with the same n and bandwidth, at the median distance of a target sample (sees the ring) and at
    0.5 (resolves the 8 modes, std 0.2). The N(0, I) start fails both."""
    n, target, g = 400, make_target("gmm-ring"), torch.Generator().manual_seed(5)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    res = run_particles(kl_energy(target), x0, method, time=time, step_size=step_size, generator=g,
                        bandwidth=bandwidth, log_every=10**6)
    for h in (median_bandwidth(target.sample(n, g)), 0.5):
        noise = max(abs(mmd2(target.sample(n, g), target.sample(n, g), bandwidth=h)) for _ in range(5))
        assert mmd2(x0, target.sample(n, g), bandwidth=h) > 2 * noise
        assert mmd2(res.x, target.sample(n, g), bandwidth=h) < 2 * noise, h


# ---- the researcher's own problem ---------------------------------------------------------------------------

TARGET_MODULE = """
import torch

def shifted(x, data):
    '''log N(x; data['mean'], diag(data['var']))'''
    return -0.5 * (((x - data['mean']) ** 2) / data['var']).sum(1)


def plain(x):
    return -0.5 * (x ** 2).sum(1)


def wrong_shape(x):
    return x
"""


@pytest.fixture
def user_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"user_targets_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(TARGET_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_custom_target_receives_its_data(tmp_path: Path, user_targets: str) -> None:
    np.savez(tmp_path / "data.npz", mean=np.array([2.0, -1.0, 0.5]), var=np.array([0.5, 1.0, 2.0]))
    res = run("optimize particles", tmp_path / "run", target=f"{user_targets}:shifted", data=tmp_path / "data.npz",
              dim=3, method="svgd", time=100.0, step_size=0.5, n=300, plots=False)
    x = torch.as_tensor(np.load(tmp_path / "run" / "final.npz")["x"])
    np.testing.assert_allclose(x.mean(0).numpy(), [2.0, -1.0, 0.5], atol=0.05)
    np.testing.assert_allclose(x.var(0).numpy(), [0.5, 1.0, 2.0], rtol=0.15)
    assert "mmd2" not in res.summary  # no exact sampler: no MMD, and none is pretended
    with pytest.raises(BadInput, match="needs dim"):
        ParticlesConfig(target=f"{user_targets}:shifted", data=tmp_path / "data.npz")
    with pytest.raises(BadInput, match="define function\\(x, data\\)"):
        ParticlesConfig(target=f"{user_targets}:plain", dim=3, data=tmp_path / "data.npz")
    with pytest.raises(BadInput, match="must return a tensor of shape \\(n,\\)"):
        run("optimize particles", tmp_path / "bad", target=f"{user_targets}:wrong_shape", dim=2, n=10)
    assert not (tmp_path / "bad").exists()


def test_gaussian_target_of_any_dimension_and_initial_particles_from_files(tmp_path: Path) -> None:
    """A 3-D Gaussian target from a .npy mean and a .csv covariance, the particles from a .npz array: Langevin
    follows the exact Fokker–Planck moments (fp errors) and ends at the target (limit errors)."""
    g = torch.Generator().manual_seed(7)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    cov = (a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64)).numpy()
    np.save(tmp_path / "mean.npy", np.array([1.0, 0.0, -2.0]))
    np.savetxt(tmp_path / "cov.csv", cov, delimiter=",")
    x0 = torch.randn(800, 3, generator=g, dtype=torch.float64).numpy() + 3.0
    np.savez(tmp_path / "init.npz", particles=x0, other=np.zeros(2))
    res = run("optimize particles", tmp_path / "run", target="gaussian", target_mean=str(tmp_path / "mean.npy"),
              target_cov=str(tmp_path / "cov.csv"), init=f"{tmp_path / 'init.npz'}:particles", method="langevin",
              time=float(4 * np.linalg.eigvalsh(cov).max()), step_size=0.01, log_every=500, plots=False)
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "final.npz")["x0"], x0)
    se = math.sqrt(np.trace(cov) / 800)
    assert res.summary["fp_mean_err"] < 4 * se and res.summary["mean_err"] < 4 * se + 0.02
    assert res.summary["fp_cov_err"] < 0.25 * np.linalg.norm(cov)


MISSES = [pytest.param("langevin", "banana", "still falling", {}, id="langevin-banana", marks=pytest.mark.slow),
          pytest.param("langevin", "banana", "still falling", {"n": 300, "time": 2.0}, id="langevin-banana-n300-t2"),
          # n = 1000, 500 whitened-KDE steps: ~60 s; at n <= 600 the KDE bias is within the MMD² noise level
          pytest.param("kde-flow", "gmm-ring", "lower bandwidth or step_size", {}, id="kde-flow-gmm-ring",
                       marks=pytest.mark.slow)]


@pytest.mark.parametrize(("method", "target", "knob", "sizes"), MISSES)
def test_a_run_that_misses_the_target_warns_with_the_knob_to_turn(tmp_path: Path, method: str, target: str,
                                                                  knob: str, sizes: dict) -> None:
    """With defaults, langevin on the banana (variance ~ 4) is still approaching it at t = 10 (time is the knob),
    while kde-flow on the ring has stalled above the noise level (its KDE bias: bandwidth is the knob); a
    smaller bandwidth reaches the ring. The default suite runs langevin with 300 particles to t = 2 (still
    falling there too); the runs at the defaults are `slow`."""
    res = run("optimize particles", tmp_path / "a", target=target, method=method, plots=False, **sizes)
    assert res.summary["mmd2"] > 2 * res.summary["mmd2_noise"]
    assert "not at the target" in res.summary["warning"] and knob in res.summary["warning"]
    if method == "kde-flow":
        fixed = run("optimize particles", tmp_path / "b", target=target, method=method, bandwidth=0.1, plots=False)
        assert "not at the target" not in fixed.summary["warning"]
