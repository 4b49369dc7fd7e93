"""Metrics checked against closed forms, POT/scipy peers, brute-force references and invariants."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import scipy.stats
import torch
from gentool.core.data import ring_mixture
from gentool.core.errors import BadInput
from gentool.core.metrics import (
    _checks,
    compute_metrics,
    density_coverage,
    energy_distance,
    exact_w2,
    frechet_distance,
    gaussian_w2,
    gaussian_w2_squared,
    heldout_nll,
    mean_cov,
    mmd2,
    mode_coverage,
    precision_recall,
    sliced_w2,
)
from gentool.core.metrics.wasserstein import random_directions, w2_1d_squared
from hypothesis import given, settings
from hypothesis import strategies as st


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def random_spd(g: torch.Generator, d: int) -> torch.Tensor:
    a = randn(g, d, d)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Gaussian closed forms -------------------------------------------------------------------------------

def test_gaussian_w2_1d_closed_form() -> None:
    """1-D: W2(N(m1, s1^2), N(m2, s2^2)) = sqrt((m1 - m2)^2 + (s1 - s2)^2)."""
    w = gaussian_w2(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[0.25]]))
    assert w == pytest.approx(math.sqrt(9 + 1.5**2), rel=1e-12)


def test_gaussian_w2_matches_pot_bures(gen: torch.Generator) -> None:
    for d in (2, 5):
        m1, m2, s1, s2 = randn(gen, d), randn(gen, d), random_spd(gen, d), random_spd(gen, d)
        ref = ot.gaussian.bures_wasserstein_distance(m1.numpy(), m2.numpy(), s1.numpy(), s2.numpy())
        assert gaussian_w2(m1, s1, m2, s2) == pytest.approx(float(ref), rel=1e-8)
        assert gaussian_w2(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_w2_batched_equals_loop(gen: torch.Generator) -> None:
    m1, m2 = randn(gen, 4, 3), randn(gen, 4, 3)
    s1 = torch.stack([random_spd(gen, 3) for _ in range(4)])
    s2 = torch.stack([random_spd(gen, 3) for _ in range(4)])
    batch = gaussian_w2_squared(m1, s1, m2, s2)
    loop = [gaussian_w2(m1[i], s1[i], m2[i], s2[i]) ** 2 for i in range(4)]
    np.testing.assert_allclose(batch.numpy(), loop, rtol=1e-10)


def test_mean_cov_is_unbiased(gen: torch.Generator) -> None:
    x = randn(gen, 50, 3)
    mean, cov = mean_cov(x)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy().T, ddof=1), rtol=1e-12)


def test_frechet_of_gaussian_samples_matches_bures(gen: torch.Generator) -> None:
    s1 = torch.tensor([[1.0, 0.8], [0.8, 0.89]], dtype=torch.float64)
    s2 = torch.eye(2, dtype=torch.float64) * 2
    m1, m2 = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    x = m1 + randn(gen, 20000, 2) @ torch.linalg.cholesky(s1).T
    y = m2 + randn(gen, 20000, 2) @ torch.linalg.cholesky(s2).T
    exact = gaussian_w2(m1, s1, m2, s2) ** 2
    assert frechet_distance(x, y) == pytest.approx(exact, rel=0.03)


# --- Wasserstein ---------------------------------------------------------------------------------------

def test_exact_w2_matches_pot(gen: torch.Generator) -> None:
    x, y = randn(gen, 30, 3), randn(gen, 45, 3) + 0.5
    a, b = np.full(30, 1 / 30), np.full(45, 1 / 45)
    ref = math.sqrt(ot.emd2(a, b, ot.dist(x.numpy(), y.numpy())))
    assert exact_w2(x, y) == pytest.approx(ref, rel=1e-10)
    assert exact_w2(x, x) == pytest.approx(0.0, abs=1e-10)


def test_exact_w2_1d_sorted_closed_form(gen: torch.Generator) -> None:
    """Equal sizes in 1-D: the optimal plan matches sorted points."""
    x, y = randn(gen, 40, 1), 2 * randn(gen, 40, 1) + 1
    closed = math.sqrt(float(((torch.sort(x[:, 0]).values - torch.sort(y[:, 0]).values) ** 2).mean()))
    assert exact_w2(x, y) == pytest.approx(closed, rel=1e-10)


def test_w2_1d_unequal_sizes_matches_emd(gen: torch.Generator) -> None:
    x, y = randn(gen, 17, 1), randn(gen, 29, 1) * 3
    emd = ot.emd2(np.full(17, 1 / 17), np.full(29, 1 / 29), ot.dist(x.numpy(), y.numpy()))
    assert float(w2_1d_squared(x, y)[0]) == pytest.approx(emd, rel=1e-10)


@pytest.mark.parametrize("m", [200, 137])
def test_sliced_w2_matches_pot_with_same_projections(gen: torch.Generator, m: int) -> None:
    x, y = randn(gen, 200, 3), randn(gen, m, 3) * 0.5 + 1
    theta = random_directions(3, 64, torch.Generator().manual_seed(1))
    ref = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), projections=theta.numpy(), p=2)
    assert sliced_w2(x, y, projections=theta) == pytest.approx(float(ref), rel=1e-9)


def test_sliced_w2_zero_for_identical_and_reproducible(gen: torch.Generator) -> None:
    x = randn(gen, 100, 4)
    assert sliced_w2(x, x, generator=torch.Generator().manual_seed(0)) == pytest.approx(0.0, abs=1e-12)
    y = x + 1.0
    a = sliced_w2(x, y, generator=torch.Generator().manual_seed(3))
    assert a == sliced_w2(x, y, generator=torch.Generator().manual_seed(3))
    # a translation t shifts every projection by theta.t: sliced W2 = |t| / sqrt(d) in expectation
    assert a == pytest.approx(2 / 2, rel=0.15)


# --- kernels ---------------------------------------------------------------------------------------------

def naive_mmd2(x: np.ndarray, y: np.ndarray, h: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h * h))

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * k(x, y).mean())


def test_mmd2_matches_naive_and_chunking(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = randn(gen, 60, 2), randn(gen, 45, 2) + 0.3
    ref = naive_mmd2(x.numpy(), y.numpy(), 0.7)
    assert mmd2(x, y, bandwidth=0.7) == pytest.approx(ref, rel=1e-10)
    monkeypatch.setattr(_checks, "CHUNK_ELEMENTS", 100)
    assert mmd2(x, y, bandwidth=0.7) == pytest.approx(ref, rel=1e-10)


def test_mmd2_same_vs_shifted(gen: torch.Generator) -> None:
    x, y = randn(gen, 500, 2), randn(gen, 500, 2)
    same = mmd2(x, y)
    assert abs(same) < 5e-3
    assert abs(mmd2(x, x)) < 5e-3
    assert mmd2(x, y + 1.0) > 0.05 > 10 * abs(same)


def test_energy_distance_matches_scipy_1d(gen: torch.Generator) -> None:
    x, y = randn(gen, 80, 1), randn(gen, 50, 1) * 2 + 1
    ref = scipy.stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()) ** 2
    assert energy_distance(x, y) == pytest.approx(ref, rel=1e-10)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-50, 50), d=st.integers(1, 4))
def test_invariants_translation_symmetry(seed: int, shift: float, d: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = randn(g, 20, d), randn(g, 15, d) * 1.5 + 0.5
    e, m = energy_distance(x, y), mmd2(x, y)
    assert e >= 0
    assert energy_distance(x + shift, y + shift) == pytest.approx(e, rel=1e-8, abs=1e-10)
    assert mmd2(x + shift, y + shift) == pytest.approx(m, rel=1e-8, abs=1e-10)
    assert energy_distance(y, x) == pytest.approx(e, rel=1e-12, abs=1e-14)
    assert mmd2(y, x) == pytest.approx(m, rel=1e-12, abs=1e-14)
    assert exact_w2(y, x) == pytest.approx(exact_w2(x, y), rel=1e-8, abs=1e-10)
    proj = random_directions(d, 16, torch.Generator().manual_seed(0))
    assert sliced_w2(x + shift, y + shift, projections=proj) == pytest.approx(
        sliced_w2(x, y, projections=proj), rel=1e-6, abs=1e-8)


# --- k-NN metrics ----------------------------------------------------------------------------------------

def brute_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r_r, r_f = np.sort(d_rr, axis=1)[:, k], np.sort(d_ff, axis=1)[:, k]
    precision = (d_fr <= r_r[None]).any(axis=1).mean()
    recall = (r_f[None] >= d_fr.T).any(axis=1).mean()
    density = (d_fr <= r_r[None]).sum() / (k * len(fake))
    coverage = (d_fr.min(axis=0) <= r_r).mean()
    return precision, recall, density, coverage


def test_prdc_matches_brute_force(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = randn(gen, 120, 2), randn(gen, 90, 2) * 1.3 + 0.4
    ref = brute_prdc(real.numpy(), fake.numpy(), 3)
    monkeypatch.setattr(_checks, "CHUNK_ELEMENTS", 500)
    got = (*precision_recall(real, fake, k=3), *density_coverage(real, fake, k=3))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_prdc_identical_and_far_apart(gen: torch.Generator) -> None:
    real = randn(gen, 300, 2)
    assert precision_recall(real, real) == (1.0, 1.0)
    density, coverage = density_coverage(real, real)
    assert coverage == 1.0 and density >= 1.0
    far = real + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    assert density_coverage(real, far) == (0.0, 0.0)
    density, coverage = density_coverage(real, randn(gen, 300, 2))
    assert 0.7 < density < 1.3 and coverage > 0.85


# --- modes, NLL, summary ---------------------------------------------------------------------------------

def test_mode_coverage_ring(gen: torch.Generator) -> None:
    mix = ring_mixture()
    res = mode_coverage(mix.sample(4000, gen), mix.means, 0.1)
    assert res["covered"] == 8 and res["fraction"] == 1.0 and res["high_quality"] > 0.97
    np.testing.assert_allclose(res["weights"], [1 / 8] * 8, atol=0.03)
    three = mix.means[torch.arange(600) % 3] + 0.1 * randn(gen, 600, 2)
    res3 = mode_coverage(three, mix.means, 0.1)
    assert res3["covered"] == 3 and res3["fraction"] == 3 / 8
    assert mode_coverage(three + 50, mix.means, 0.1)["covered"] == 0


def test_heldout_nll_standard_normal(gen: torch.Generator) -> None:
    x = randn(gen, 20000, 1)
    normal = torch.distributions.Normal(0.0, 1.0)
    nll = heldout_nll(lambda z: normal.log_prob(z).sum(-1), x)
    assert nll == pytest.approx(0.5 * math.log(2 * math.pi * math.e), abs=0.02)
    with pytest.raises(BadInput, match="not finite"):
        heldout_nll(lambda z: torch.full((z.shape[0],), float("nan")), x)


def test_compute_metrics_names_and_values(gen: torch.Generator) -> None:
    real, fake = randn(gen, 200, 2), randn(gen, 150, 2) + 1
    out = compute_metrics(real, fake, generator=torch.Generator().manual_seed(0))
    assert list(out) == ["sliced_w2", "mmd2", "energy", "mean_error", "cov_error", "precision", "recall",
                         "density", "coverage"]
    assert out["mean_error"] == pytest.approx(float((real.mean(0) - fake.mean(0)).norm()))
    assert out["mmd2"] == pytest.approx(mmd2(real, fake))
    assert (out["precision"], out["recall"]) == precision_recall(real, fake)
    few = compute_metrics(real, fake, names=("exact_w2", "frechet", "coverage"))
    assert list(few) == ["exact_w2", "frechet", "coverage"]
    with pytest.raises(BadInput, match="unknown metric 'mmd'"):
        compute_metrics(real, fake, names=("mmd",))


def test_bad_input_names_shapes() -> None:
    a, b = torch.zeros(5, 2), torch.zeros(5, 3)
    with pytest.raises(BadInput, match=r"\(5, 2\).*\(5, 3\)"):
        mmd2(a, b)
    with pytest.raises(BadInput, match="NaN"):
        sliced_w2(torch.tensor([[float("nan"), 0.0]]), a)
    with pytest.raises(BadInput, match=r"\(5,\)"):
        energy_distance(torch.zeros(5), a)
    with pytest.raises(BadInput, match="k must be"):
        precision_recall(a, a, k=5)


@pytest.mark.gpu
def test_gpu_matches_cpu(gen: torch.Generator) -> None:
    x, y = randn(gen, 3000, 2), randn(gen, 2500, 2) + 0.5
    cpu = compute_metrics(x, y, generator=torch.Generator().manual_seed(0))
    gpu = compute_metrics(x.cuda(), y.cuda(), generator=torch.Generator().manual_seed(0))
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 12), n=st.integers(2, 16), seed=st.integers(0, 2**16))
def test_psd_log_det_is_slogdet_for_regular_covariances_and_minus_inf_for_singular_ones(d: int, n: int,
                                                                                          seed: int) -> None:
    """The sample covariance of n Gaussian points in d dimensions is singular exactly when n <= d (rank
    n - 1); there its rounded eigenvalues are tiny or negative and slogdet returns a finite number that means
    nothing (or the wrong sign), so `psd_log_det` says -inf and not regular."""
    from gentool.core.metrics.gaussian import psd_log_det

    x = torch.randn(3, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cov = mean_cov(x)[1]
    logdet, regular = psd_log_det(cov)
    assert regular.tolist() == [n > d] * 3
    if n > d:  # both are rounded: each eigenvalue w_i to ~eps w_max, so log det to ~d eps cond
        w = torch.linalg.eigvalsh(cov)
        tol = 10 * d * torch.finfo(torch.float64).eps * (w[:, -1] / w[:, 0]) + 1e-12
        assert bool(((logdet - torch.linalg.slogdet(cov)[1]).abs() <= tol).all())
    else:
        assert bool((logdet == -math.inf).all())
