"""Smooth Top-k maps (SPEC §4b, `gentool.core.probspace.topk`) and `gentool optimize topk`: the τ → 0 limit,
the capped-simplex constraints under random inputs, exact gradients against central differences and the SPEC
Jacobians, shift invariance, sparsemax at k = 1, the entropic maximiser against scipy, n = 10⁶, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.errors import BadInput
from gentool.core.jobs.topk import PANELS, shown_entries
from gentool.core.probspace import project_simplex
from gentool.core.probspace.topk import TOPK_MAPS, project_capped_simplex, smooth_topk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import expit, logit
from typer.testing import CliRunner

SMOOTH = ("threshold", "entropic", "sparse")
F64 = torch.float64


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# ---- limits and closed forms -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TOPK_MAPS))
def test_small_tau_gives_hard_topk(name: str) -> None:
    """T_2([3,2,1,4]) = [1,0,0,1]; sparse is exact once τ ≤ the gap between the 2nd and 3rd largest."""
    x = _t([3.0, 2.0, 1.0, 4.0])
    p = smooth_topk(x, 2, 1e-2, name)
    if name in ("sparse", "hard"):
        assert p.tolist() == [1.0, 0.0, 0.0, 1.0]
        assert smooth_topk(x, 2, 1.0, name).tolist() == [1.0, 0.0, 0.0, 1.0]
    else:
        torch.testing.assert_close(p, _t([1.0, 0.0, 0.0, 1.0]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", SMOOTH)
def test_random_distinct_scores_tend_to_hard_topk(name: str) -> None:
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(3), dtype=F64)
    gap = (x.sort(-1).values.diff(dim=-1)).min().item()
    for k in (1, 7, 39):
        torch.testing.assert_close(smooth_topk(x, k, gap / 50, name), smooth_topk(x, k, 1.0, "hard"),
                                   atol=1e-12, rtol=0)


def test_threshold_closed_form() -> None:
    """x = [3,2,1,4] is symmetric about 2.5, so λ = 2.5: p = σ((x − 2.5)/τ)."""
    for tau in (0.1, 1.0, 30.0):
        torch.testing.assert_close(smooth_topk(_t([3.0, 2.0, 1.0, 4.0]), 2, tau),
                                   torch.sigmoid((_t([3.0, 2.0, 1.0, 4.0]) - 2.5) / tau), atol=2e-16, rtol=0)


def test_hard_breaks_ties_by_index_and_has_zero_gradient() -> None:
    assert smooth_topk(_t([1.0, 1.0, 1.0]), 2, 1.0, "hard").tolist() == [1.0, 1.0, 0.0]
    assert smooth_topk(_t([[0.0, 2.0, 2.0, 2.0]]), 2, 1.0, "hard").tolist() == [[0.0, 1.0, 1.0, 0.0]]
    x = torch.randn(3, 5, dtype=F64, requires_grad=True)
    (smooth_topk(x, 2, 1.0, "hard") * torch.randn(3, 5, dtype=F64)).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


# ---- the capped simplex under random inputs ----------------------------------------------------------------

@st.composite
def problems(draw, grid: bool = False):
    n = draw(st.integers(2, 24))
    rows = draw(st.integers(1, 3))
    entry = st.integers(-102400, 102400).map(lambda i: i / 1024) if grid else st.floats(-100, 100, allow_nan=False)
    x = draw(st.lists(st.lists(entry, min_size=n, max_size=n), min_size=rows, max_size=rows))
    return _t(x), draw(st.integers(1, n - 1)), 10.0 ** draw(st.floats(-3, 3))


@settings(max_examples=120, deadline=None)
@given(problems())
def test_sum_is_k_and_bounds_hold(problem) -> None:
    x, k, tau = problem
    for name in TOPK_MAPS:
        p = smooth_topk(x, k, tau, name)
        assert p.dtype == F64 and p.shape == x.shape
        assert bool(((p >= 0) & (p <= 1)).all()), (name, p)
        assert float((p.sum(-1) - k).abs().max()) <= 1e-12, (name, p.sum(-1) - k)
        rows = torch.stack([smooth_topk(r, k, tau, name) for r in x])
        torch.testing.assert_close(p, rows, atol=1e-15, rtol=1e-14)  # batched = one row at a time


@settings(max_examples=60, deadline=None)
@given(problems(grid=True), st.sampled_from([-1e3, -7.25, 0.5, 64.0]))
def test_adding_a_constant_changes_nothing(problem, shift: float) -> None:
    """x on a grid of 2⁻¹⁰ so that x + shift is exact (rounding could merge distinct entries)."""
    x, k, tau = problem
    for name in TOPK_MAPS:
        torch.testing.assert_close(smooth_topk(x + shift, k, tau, name), smooth_topk(x, k, tau, name),
                                   atol=1e-9, rtol=0)


def test_float32_half_and_batches_keep_dtype() -> None:
    x = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(1))
    for name in TOPK_MAPS:
        p = smooth_topk(x, 5, 0.3, name)
        assert p.dtype == torch.float32 and p.shape == x.shape and p.device == x.device
        assert float((p.sum(-1) - 5).abs().max()) <= 1e-4
        assert smooth_topk(x.half(), 5, 0.3, name).dtype == torch.float16
    assert smooth_topk(torch.empty(0, 4, dtype=F64), 2, 1.0).shape == (0, 4)


# ---- gradients ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize(("k", "tau"), [(1, 1.5), (3, 1.0), (5, 2.5)])
def test_gradients_match_central_differences(name: str, k: int, tau: float) -> None:
    x = torch.randn(2, 7, generator=torch.Generator().manual_seed(k), dtype=F64, requires_grad=True)
    p = smooth_topk(x, k, tau, name)
    assert bool((((p > 1e-6) & (p < 1 - 1e-6)).sum(-1) >= 2).all())  # not a piece where the map is constant
    assert torch.autograd.gradcheck(lambda v: smooth_topk(v, k, tau, name), (x,), eps=1e-6, atol=1e-7)


def test_threshold_second_derivatives() -> None:
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(5), dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda v: smooth_topk(v, 2, 0.7), (x,), eps=1e-6, atol=1e-6)


def test_jacobians_are_the_spec_formulas() -> None:
    """threshold: (1/τ)(diag(w) − w wᵀ/Σw), w = p(1 − p); sparse: (1/τ)(I_S − 1_S 1_Sᵀ/|S|) on S = {0 < p < 1}."""
    x, k, tau = torch.randn(9, generator=torch.Generator().manual_seed(2), dtype=F64), 3, 0.8
    p = smooth_topk(x, k, tau)
    w = p * (1 - p)
    expect = (torch.diag(w) - torch.outer(w, w) / w.sum()) / tau
    torch.testing.assert_close(torch.autograd.functional.jacobian(lambda v: smooth_topk(v, k, tau), x), expect,
                               atol=1e-14, rtol=0)
    p = smooth_topk(x, k, tau, "sparse")
    s = ((p > 0) & (p < 1)).to(F64)
    assert 2 <= s.sum() < 9
    expect = (torch.diag(s) - torch.outer(s, s) / s.sum()) / tau
    torch.testing.assert_close(torch.autograd.functional.jacobian(lambda v: smooth_topk(v, k, tau, "sparse"), x),
                               expect, atol=1e-14, rtol=0)


# ---- k = 1 -------------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(problems())
def test_sparse_with_k1_is_sparsemax(problem) -> None:
    x, _, tau = problem
    # two sort-based algorithms on x/τ: they agree to 1e-12, or to roundoff at the scale of x/τ when that is large
    atol = max(1e-12, 16 * torch.finfo(F64).eps * float((x / tau).abs().max()))
    torch.testing.assert_close(smooth_topk(x, 1, tau, "sparse"), project_simplex(x / tau), atol=atol, rtol=0)


def test_threshold_with_k1_relates_to_softmax_only_through_the_odds() -> None:
    """Exact: the odds p/(1 − p) normalised are softmax(x/τ). Approximate: |p − q| ≤ q m/(1 − m), m = max p."""
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(7), dtype=F64)
    for tau in (0.3, 1.0, 10.0):
        p, q = smooth_topk(x, 1, tau), torch.softmax(x / tau, -1)
        odds = p / (1 - p)
        torch.testing.assert_close(odds / odds.sum(-1, keepdim=True), q, atol=1e-13, rtol=1e-12)
        m = p.max(-1, keepdim=True).values
        assert bool(((p - q).abs() <= q * m / (1 - m) + 1e-15).all())
    assert float((smooth_topk(x, 1, 0.3) - torch.softmax(x / 0.3, -1)).abs().max()) > 0.05  # not softmax


# ---- the entropic map is the maximiser ---------------------------------------------------------------------

def _entropic_objective(p: np.ndarray, x: np.ndarray, tau: float) -> float:
    q = np.clip(p, 1e-300, 1 - 1e-16)
    return float(x @ p - tau * np.sum(q * np.log(q) + (1 - q) * np.log1p(-q)))


@pytest.mark.parametrize(("n", "k", "tau", "seed"), [(3, 1, 0.5, 0), (5, 2, 1.0, 1), (6, 3, 0.3, 2), (8, 5, 2.0, 3)])
def test_entropic_is_the_scipy_maximiser(n: int, k: int, tau: float, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=n)
    p = smooth_topk(_t(x), k, tau, "entropic").numpy()
    res = minimize(lambda v: -_entropic_objective(v, x, tau), np.full(n, k / n), method="SLSQP",
                   bounds=[(1e-12, 1 - 1e-12)] * n, constraints=[{"type": "eq", "fun": lambda v: v.sum() - k}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert res.success, res.message
    assert _entropic_objective(p, x, tau) >= -res.fun - 1e-12
    np.testing.assert_allclose(p, res.x, atol=1e-5)
    lam = x - tau * logit(p)  # KKT: x_i − τ logit(p_i) is the same λ for every i
    assert np.ptp(lam) <= 1e-12 * max(1.0, np.abs(lam).max())
    np.testing.assert_allclose(p, expit((x - lam.mean()) / tau), atol=1e-14)


# ---- large n -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TOPK_MAPS))
def test_a_million_entries(name: str) -> None:
    n, k, tau = 10**6, 1000, 0.05
    x = torch.randn(n, generator=torch.Generator().manual_seed(11), dtype=F64)
    p = smooth_topk(x, k, tau, name)
    assert abs(float(p.sum()) - k) <= 1e-9 and bool(((p >= 0) & (p <= 1)).all())
    top = torch.zeros(n, dtype=F64).scatter_(0, torch.topk(x, k).indices, 1.0)
    if name == "hard":
        assert torch.equal(p, top)
        return
    inner = (p > 1e-9) & (p < 1 - 1e-9)
    if name == "sparse":  # p = clip(x/τ − λ, 0, 1): one λ for the free entries, the rest clipped
        lam = (x / tau - p)[inner]
        assert inner.sum() > 1 and float(lam.max() - lam.min()) <= 1e-9
        assert bool((x[p == 1] / tau - lam[0] >= 1 - 1e-9).all()) and bool((x[p == 0] / tau - lam[0] <= 1e-9).all())
    else:  # p = σ((x − λ)/τ): one λ (logit is well conditioned for p ≤ 1/2)
        lam = (x - tau * torch.logit(p))[inner & (p <= 0.5)]
        assert float(lam.max() - lam.min()) <= 1e-9
    assert float((p - top).abs().sum()) < k  # mostly the k largest


# ---- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("x", "k", "tau", "message"), [
    (_t([3.0, 2.0, 1.0]), 0, 1.0, "k must be an integer in [1, 2] (x has n = 3 entries), got 0"),
    (_t([3.0, 2.0, 1.0]), 3, 1.0, "got 3"),
    (_t([3.0, 2.0, 1.0]), 1.5, 1.0, "k must be an integer"),
    (_t([3.0, 2.0, 1.0]), True, 1.0, "k must be an integer"),
    (_t([3.0, 2.0, 1.0]), 1, 0.0, "tau must be a finite number > 0, got 0.0"),
    (_t([3.0, 2.0, 1.0]), 1, float("inf"), "tau must be a finite number > 0"),
    (_t([3.0, 2.0, 1.0]), 1, float("nan"), "tau must be a finite number > 0"),
    (_t([3.0, float("nan"), 1.0]), 1, 1.0, "x must be finite"),
    (_t([3.0]), 1, 1.0, "at least 2 entries"),
    (torch.tensor([3, 2, 1]), 1, 1.0, "x must be a real floating-point tensor, got torch.int64"),
    (torch.tensor([3, 2, 1], dtype=torch.complex128), 1, 1.0, "real floating-point"),
])
@pytest.mark.parametrize("name", list(TOPK_MAPS))
def test_bad_input(x: torch.Tensor, k, tau, message: str, name: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)) as err:
        smooth_topk(x, k, tau, name)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", SMOOTH)
def test_scores_that_overflow_when_divided_by_tau(name: str) -> None:
    with pytest.raises(BadInput, match=r"^x/tau must stay below 4.49e\+307 in magnitude, got 1e\+308; use a larger"):
        smooth_topk(_t([1e300, 0.0, -1.0]), 1, 1e-8, name)


def test_unknown_map() -> None:
    with pytest.raises(BadInput, match="unknown map 'sparce' \\(did you mean 'sparse'\\?\\); allowed"):
        smooth_topk(_t([1.0, 2.0]), 1, 1.0, "sparce")


def test_maps_keep_the_digits_of_scores_far_from_zero() -> None:
    """Scores near 3.3e5 (one ulp ≈ 6e-11) that differ by less than 1: the threshold and the free entries are
    resolved next to them, so Σp = k to a few ulps of k (working at 3.3e5 would leave ~1e-10)."""
    z = 3.3e5 + torch.rand(4, 50, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.9
    p = project_capped_simplex(z, 20)
    assert bool(((p > 0) & (p < 1)).any()) and float((p.sum(-1) - 20).abs().max()) <= 1e-13
    for name in ("threshold", "sparse"):
        assert float((smooth_topk(z, 20, 0.01, name).sum(-1) - 20).abs().max()) <= 1e-13


# ---- the command ------------------------------------------------------------------------------------------

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["optimize", "topk", *args, "--no-progress"])


def test_cli_threshold_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "topk"
    res = _run("--x", "3,2,1,4", "--k", "2", "--map", "threshold", "--tau", "0.1", "--out", str(out))
    assert res.exit_code == 0, res.output
    expect = expit((np.array([3.0, 2.0, 1.0, 4.0]) - 2.5) / 0.1)
    result = json.loads((out / "result.json").read_text())
    assert set(result) == {"p", "k", "tau", "map", "sum"}
    assert result["k"] == 2 and result["tau"] == 0.1 and result["map"] == "threshold"
    np.testing.assert_allclose(result["p"], expect, atol=1e-15)
    assert abs(result["sum"] - 2) <= 1e-15
    assert "p=" + ", ".join(f"{v:.6g}" for v in expect) in res.stdout
    assert (out / "topk.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("form", ["npy", "csv"])
def test_cli_reads_x_from_a_file(tmp_path: Path, form: str) -> None:
    x = np.random.default_rng(0).normal(size=20)
    path = tmp_path / f"x.{form}"
    np.save(path, x) if form == "npy" else np.savetxt(path, x, delimiter=",")
    out = tmp_path / "run"
    res = _run("--x", str(path), "--k", "5", "--map", "sparse", "--tau", "0.5", "--out", str(out), "--no-plots")
    assert res.exit_code == 0, res.output
    p = json.loads((out / "result.json").read_text())["p"]
    np.testing.assert_allclose(p, smooth_topk(_t(x), 5, 0.5, "sparse").numpy(), atol=0)
    assert " p=" not in res.stdout  # n = 20: p is in result.json only


def test_figure_entries_surround_the_kth_largest() -> None:
    x = tuple(float(v) for v in range(20))  # rank r holds 19 − r
    assert shown_entries(x, 5) == [19 - r for r in range(1, 1 + PANELS)]
    assert shown_entries(x, 19) == [19 - r for r in range(20 - PANELS, 20)]
    assert sorted(shown_entries((1.0, 3.0, 2.0), 1)) == [0, 1, 2]


@pytest.mark.parametrize(("args", "message"), [
    (["--k", "0"], "error: k must be an integer in [1, 3] (x has n = 4 entries), got 0"),
    (["--tau", "-1"], "error: tau must be a finite number > 0, got -1.0"),
    (["--map", "soft"], "error: unknown map 'soft'"),
    (["--x", "1,nan", "--k", "1"], "error: x must be finite"),
])
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bad"
    res = _run(*args, "--out", str(out))
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.output
    assert not out.exists()
