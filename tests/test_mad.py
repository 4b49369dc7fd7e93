"""Self-consuming loops: the Gaussian family against SPEC §5 closed forms, loop-type behaviour, the pieces."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from gentool.core.errors import BadInput
from gentool.core.jobs.mad import MadJob
from gentool.core.mad import (
    MadConfig,
    bures_w2,
    expected_cov_scale,
    log_variance_drift,
    make_family,
    mean_var_scale,
    summarize,
)
from gentool.core.mad.loops import LOOP_KINDS, Step
from gentool.core.run import execute


def run_loop(cfg: MadConfig, out) -> list[dict]:
    """The loop's rows, run through the run contract into `out`."""
    return execute(MadJob(cfg, seed=0), out, plots=False).rows

SEEDS = 4000


def _by_gen(rows: list[dict], key: str) -> dict[int, np.ndarray]:
    out: dict[int, list[float]] = {}
    for r in rows:
        out.setdefault(r["generation"], []).append(r[key])
    return {t: np.asarray(v) for t, v in out.items()}


def _within(samples: np.ndarray, expected: float, z: float = 4.5) -> None:
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(samples.mean() - expected) < z * se, (samples.mean(), expected, se)


@pytest.fixture(scope="module")
def unbiased_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    cfg = MadConfig(dim=1, generations=10, seeds=SEEDS, n_real=20, n_synth=20, n_test=50)
    return run_loop(cfg, tmp_path_factory.mktemp("unbiased"))


def test_closed_form_values() -> None:
    assert log_variance_drift(20) == pytest.approx(-0.0536, abs=5e-5)
    assert expected_cov_scale(3, 0.5, 20) == 0.25
    assert expected_cov_scale(2, 1.0, 20, "mle") == pytest.approx((19 / 20) ** 2)
    assert mean_var_scale(5, 1.0, 20) == pytest.approx(5 / 20)


def test_unbiased_covariance_mean_is_preserved(unbiased_rows: list[dict]) -> None:
    """E[σ²_t] = σ₀² for λ = 1 (σ₀² = 1), t = 1..10, over 4000 seeds."""
    for t, var in _by_gen(unbiased_rows, "trace_cov").items():
        _within(var, expected_cov_scale(t, 1.0, 20))


def test_mean_variance_grows_linearly(unbiased_rows: list[dict]) -> None:
    """Var μ_t = t σ₀² / n (mean_error = |μ_t| in 1-D)."""
    for t, err in _by_gen(unbiased_rows, "mean_error").items():
        _within(err**2, mean_var_scale(t, 1.0, 20))


def test_log_variance_drift(unbiased_rows: list[dict]) -> None:
    """Increments of log σ²_t have mean ψ((n−1)/2) + log(2/(n−1)) = −0.0536 at n = 20."""
    logv = _by_gen(unbiased_rows, "logdet_cov")
    inc = np.concatenate([logv[t + 1] - logv[t] for t in range(1, 10)])
    _within(inc, log_variance_drift(20))


def test_unbiased_covariance_with_sampling_bias(tmp_path) -> None:
    """E[Σ_t] = λ^{t−1} Σ₀ (λ = 0.7, 2-D, compared per diagonal entry through the trace, tr Σ₀ = 3)."""
    cfg = MadConfig(dim=2, generations=6, seeds=2000, n_real=20, n_synth=20, lam=0.7, n_test=50)
    for t, tr in _by_gen(run_loop(cfg, tmp_path), "trace_cov").items():
        _within(tr, 3.0 * expected_cov_scale(t, 0.7, 20))


def test_mle_variance_shrinks(tmp_path) -> None:
    """MLE: E[σ²_t] = σ₀² ((n−1)/n)^t."""
    cfg = MadConfig(dim=1, generations=8, seeds=SEEDS, n_real=10, n_synth=10, cov="mle", n_test=50)
    for t, var in _by_gen(run_loop(cfg, tmp_path), "trace_cov").items():
        _within(var, expected_cov_scale(t, 1.0, 10, "mle"))


def _w2_at(tmp_path, loop: str, t: int, **kw) -> float:
    cfg = MadConfig(dim=2, generations=t, seeds=300, n_real=20, n_synth=20, loop=loop, n_test=50, **kw)
    rows = run_loop(cfg, tmp_path / loop)
    return float(np.mean([r["w2_gauss"] for r in rows if r["generation"] == t]))


def test_fresh_bounded_replace_grows_accumulate_slower(tmp_path) -> None:
    replace = _w2_at(tmp_path, "fully-synthetic", 40)
    fresh = _w2_at(tmp_path, "fresh", 40)
    accumulate = _w2_at(tmp_path, "accumulate", 40)
    first = _w2_at(tmp_path / "g1", "fully-synthetic", 1)
    assert fresh < 1.5 * first < replace / 2
    assert accumulate < replace / 2


def test_summary_ci(tmp_path) -> None:
    rows = [{"seed": s, "generation": 1, "m": float(s)} for s in range(5)]
    (row,) = summarize(rows)
    assert row["mean"] == 2.0 and row["std"] == pytest.approx(math.sqrt(2.5))
    assert row["ci95_high"] - row["mean"] == pytest.approx(1.96 * math.sqrt(2.5 / 5))


def test_bures_matches_scalar_formula() -> None:
    s1 = torch.tensor([[[4.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    s2 = torch.eye(2, dtype=torch.float64)[None]
    m = torch.zeros(1, 2, dtype=torch.float64)
    # commuting covariances: W2² = Σ (√a − √b)² = (2 − 1)² = 1
    assert float(bures_w2(m + 1, s1, m, s2)) == pytest.approx(math.sqrt(2 + 1))


def test_loops_build_training_sets(gen: torch.Generator) -> None:
    data, real, synth = torch.zeros(2, 5, 1), torch.ones(2, 4, 1), torch.full((2, 6, 1), 2.0)

    def kept(loop: str, fraction: float | None = None, budget: int | None = None) -> torch.Tensor:
        return LOOP_KINDS[loop].kept(data, Step(synth, real, fraction, budget, [gen, gen]))

    assert kept("fully-synthetic").shape == (2, 6, 1)
    aug = kept("augment", 0.5)
    assert aug.shape == (2, 6, 1) and float(aug.sum()) == 2 * (3 * 1 + 3 * 2)
    assert kept("reservoir", budget=7).shape == (2, 7, 1)
    assert float(kept("accumulate").sum()) == 2 * 6 * 2 and kept("accumulate").shape == (2, 11, 1)
    pool = kept("accumulate-subsample")
    assert pool.shape == (2, 11, 1)
    assert LOOP_KINDS["accumulate-subsample"].fit_set(pool, 7, [gen, gen]).shape == (2, 7, 1)


@pytest.mark.parametrize("name", ["gmm", "kde"])
def test_mixture_families_shrink_with_lambda(name: str, gen: torch.Generator) -> None:
    x = torch.randn(1, 400, 2, generator=gen)
    fam = make_family(name, components=2)
    model = fam.fit(x, [gen])
    spread = [float(fam.sample(model, 4000, lam, [gen]).var(1).sum()) for lam in (1.0, 0.1)]
    assert spread[1] < spread[0]
    assert math.isfinite(float(fam.nll(model, x[0])))


def test_bad_config() -> None:
    for kw in ({"family": "vae"}, {"loop": "mixed"}, {"lam": 0.0}, {"lam": 1.5}, {"n_synth": 1}):
        with pytest.raises(BadInput):
            MadConfig(**kw)


@pytest.mark.parametrize("name", ["gaussian", "gmm", "kde", "diffusion", "monoflow", "linear-regression"])
def test_vectorised_families_are_the_ones_metric_seeds_applies_to(name: str) -> None:
    """`VECTORISED_FAMILIES` (what metric_seeds applies to, and what shards rewrite it for) is exactly the
    families whose class is vectorised over seeds; metric_seeds given with another family is refused."""
    from gentool.core.config import make_config
    from gentool.core.mad.families import FAMILIES, VECTORISED_FAMILIES, make_family

    assert name in FAMILIES
    assert make_family(name).vectorised == (name in VECTORISED_FAMILIES)
    if name in VECTORISED_FAMILIES:
        assert make_config(MadConfig, {"family": name, "metric_seeds": 5}).metric_seeds == 5
    else:
        refused = rf"metric_seeds applies to family gaussian, linear-regression, not '{name}'"
        with pytest.raises(BadInput, match=refused):
            make_config(MadConfig, {"family": name, "metric_seeds": 5})


def test_gaussian_loop_in_more_dimensions_than_points_runs_on_the_finite_metrics(tmp_path) -> None:
    """n ≤ d: every fitted covariance has rank ≤ n − 1, so det Σ_t = 0 (det_ratio 0) and log det Σ_t and the
    held-out NLL are infinite: those are left out of the rows (not a failure of the run, and not the finite
    numbers the rounded eigenvalues would give); with n > d every row keeps them."""
    rows = run_loop(MadConfig(dim=12, generations=3, seeds=3, n_real=8, n_synth=8, n_test=50), tmp_path / "wide")
    assert len(rows) == 9
    for r in rows:
        assert r["det_ratio"] == 0.0 and "logdet_cov" not in r and "nll" not in r
        assert all(math.isfinite(r[k]) for k in ("w2_gauss", "trace_cov", "mean_error"))
    rows = run_loop(MadConfig(dim=3, generations=2, seeds=3, n_real=8, n_synth=8, n_test=50), tmp_path / "tall")
    assert all(r["det_ratio"] > 0 and math.isfinite(r["logdet_cov"]) and math.isfinite(r["nll"]) for r in rows)


def test_a_loop_collapsed_to_a_point_finishes_with_its_exact_metrics(tmp_path) -> None:
    """λ = 1e-300: generation 2 fits points equal to generation 1's mean up to rounding, so Σ_t = 0 (det_ratio 0,
    trace ≈ 0; log det and NLL left out), and W2 to N(μ₀, Σ₀) is that of a point mass: W2² = |μ_t − μ₀|² + tr Σ₀
    (tr Σ₀ = 1 + 2 for the default truth in d = 2)."""
    rows = run_loop(MadConfig(dim=2, lam=1e-300, generations=3, seeds=2, n_test=50), tmp_path)
    later = [r for r in rows if r["generation"] >= 2]
    assert len(later) == 4
    for r in later:
        assert r["det_ratio"] == 0.0 and r["trace_ratio"] < 1e-20 and "logdet_cov" not in r and "nll" not in r
        assert r["w2_gauss"] ** 2 == pytest.approx(r["sq_mean_error"] + 3.0, rel=1e-9)


@pytest.mark.parametrize(("n", "finite"), [(6, False), (7, False), (8, True)])
def test_gaussian_nll_is_infinite_for_a_singular_fit(n: int, finite: bool) -> None:
    """In d = 7 a fit on n <= 7 points is singular: +inf. For n = 7 the seed is the first one where the rounded
    smallest eigenvalues of the two fits come out positive (~1e-16; which seeds do depends on the CPU's LAPACK
    rounding), the case a `w > 0` test took for a density."""
    fam = make_family("gaussian")

    def fitted(seed: int) -> tuple[Any, torch.Generator]:
        gen = torch.Generator().manual_seed(seed)
        return fam.fit(torch.randn(2, n, 7, generator=gen, dtype=torch.float64), [gen, gen]), gen

    seed = 3
    if n == 7:
        seed = next(s for s in range(500) if bool((torch.linalg.eigvalsh(fitted(s)[0].cov)[:, 0] > 0).all()))
    model, gen = fitted(seed)
    nll = fam.nll(model, torch.randn(30, 7, generator=gen, dtype=torch.float64))
    assert torch.isfinite(nll).tolist() == [finite] * 2
