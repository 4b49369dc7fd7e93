"""The W2 <= score-matching bound (`gentool.core.diffusion.bound`, `gentool bound`): closed forms for a Gaussian
target with a mis-scaled Gaussian denoiser, the Lipschitz bound against autograd Hessians, bound >= measured W2 on
the ring (perturbed denoiser; a trained model in the slow suite), one-line errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.diffusion.bound import (
    ScoreLipschitz,
    bound_grid,
    dilated_target,
    initial_mismatch,
    w2_bound_curve,
)
from gentool.core.diffusion.targets import make_target
from gentool.core.errors import Interrupted
from gentool.core.jobs import run
from gentool.core.jobs.bound import BoundJob
from scipy.integrate import quad
from typer.testing import CliRunner

SMIN, SMAX = 1e-3, 80.0


# ---- closed forms for N(0, I_d) and the model N(0, s'^2 I_d), s' = 1 + eps --------------------------------


def gaussian_score_error(sigma: float, eps: float, d: int) -> float:
    """`ε(σ)`: `δ = |a' − a| ‖y‖/σ²` with `a = s²/(s²+σ²)`, `(a' − a)/σ² = (s'² − 1)/((s'²+σ²)(1+σ²))`, and
    `y ~ q_σ = N(0, r² σ_max² I)`, `r σ_max = σ_max √((s'²+σ²)/(s'²+σ_max²))`."""
    s2 = (1 + eps) ** 2
    rs = SMAX * math.sqrt((s2 + sigma**2) / (s2 + SMAX**2))
    return abs(s2 - 1) / ((s2 + sigma**2) * (1 + sigma**2)) * math.sqrt(d) * rs


def gaussian_bound(eps: float, d: int) -> float:
    """`e^{Λ(σ_max)} W_init + ∫ σ e^{Λ(σ)} ε(σ) dσ` with `e^{Λ(σ)} = √((1+σ_min²)/(1+σ²))` (L_σ = −1/(1+σ²))."""
    growth = lambda s: math.sqrt((1 + SMIN**2) / (1 + s**2))  # noqa: E731
    w_init = math.sqrt(d) * (math.sqrt(1 + SMAX**2) - SMAX)
    integral = quad(lambda s: s * growth(s) * gaussian_score_error(s, eps, d), SMIN, SMAX, limit=400,
                    epsabs=0, epsrel=1e-12, points=[0.1, 1, 10])[0]
    return growth(SMAX) * w_init + integral


def gaussian_w2(eps: float, d: int) -> float:
    """`W2(N(0, (1+σ_min²) I), N(0, r² σ_max² I))` at σ_min."""
    s2 = (1 + eps) ** 2
    return math.sqrt(d) * abs(math.sqrt(1 + SMIN**2) - SMAX * math.sqrt((s2 + SMIN**2) / (s2 + SMAX**2)))


@pytest.mark.parametrize("eps", [0.0, 0.1, -0.2, 0.5])
def test_gaussian_closed_form_bound_dominates_exact_w2(eps: float) -> None:
    d = 3
    bound, w2 = gaussian_bound(eps, d), gaussian_w2(eps, d)
    assert bound >= w2 * (1 - 1e-9)
    # the bound is asymptotically exact for a dilation: (s'² − 1)√d/(s' + 1) = (s' − 1)√d = W2 at σ_min → 0
    assert bound == pytest.approx(abs(eps) * math.sqrt(d), rel=2e-3, abs=2e-4)  # + the initial term (1.4e-4)


def test_quadrature_and_growth_match_the_closed_form() -> None:
    """`w2_bound_curve` fed the exact ε(σ) reproduces the quadrature of the closed form."""
    eps, d = 0.1, 2
    sig = bound_grid(400, SMIN, SMAX, 7.0).numpy()
    err = np.array([gaussian_score_error(s, eps, d) for s in sig])
    lip = ScoreLipschitz.of(make_target("gaussian", d).mixture)
    curve = w2_bound_curve(sig, err, np.zeros_like(err), lip, initial_mismatch(make_target("gaussian", d).mixture,
                                                                                SMAX))
    assert curve.bound[-1] == pytest.approx(gaussian_bound(eps, d), rel=1e-4)
    assert curve.bound[0] == pytest.approx(math.sqrt(d) * (math.sqrt(1 + SMAX**2) - SMAX), rel=1e-12)
    assert 10 ** curve.log10_bound[-1] == pytest.approx(curve.bound[-1], rel=1e-10)


def test_job_on_gaussian_matches_the_closed_forms(tmp_path: Path) -> None:
    eps, d = 0.1, 2
    run("bound", tmp_path / "g", target="gaussian", perturb=eps, dim=d, n=3000, steps=200, plots=False)
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert m["w2"] == pytest.approx(gaussian_w2(eps, d), rel=1e-10)
    assert m["w2_method"].startswith("Bures")
    expect = gaussian_bound(eps, d)
    assert abs(m["w2_bound"] - expect) <= 4 * m["w2_bound_se"] + 1e-3 * expect
    assert m["w2_bound"] + 4 * m["w2_bound_se"] >= m["w2"]
    assert m["initial_term"] == pytest.approx(math.sqrt(d) * (math.sqrt(1 + SMAX**2) - SMAX)
                                              * math.sqrt((1 + SMIN**2) / (1 + SMAX**2)), rel=1e-10)


# ---- the Lipschitz bound and the initial mismatch -----------------------------------------------------------


def _max_hessian_eig(target, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """`λ_max(∇² log p_σ(x))` per point by autograd on the mixture's log density."""
    mix = target.mixture
    noised = type(mix)(mix.means, torch.sqrt(mix.stds**2 + sigma**2), mix.weights)
    hess = torch.stack([torch.autograd.functional.hessian(lambda z: noised.log_prob(z[None])[0], xi) for xi in x])
    return torch.linalg.eigvalsh(hess)[:, -1]


@pytest.mark.parametrize("name", ["gmm-ring", "gmm-grid", "gaussian"])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.3, 2.0])
def test_lipschitz_bound_dominates_the_hessian(name: str, sigma: float) -> None:
    target = make_target(name)
    g = torch.Generator().manual_seed(1)
    means = target.mixture.means
    k = torch.randint(0, len(means), (64,), generator=g)
    j = torch.randint(0, len(means), (64,), generator=g)
    t = torch.rand(64, 1, generator=g, dtype=torch.float64)
    x = torch.cat([t * means[k] + (1 - t) * means[j],  # segments between modes: where the score expands
                   3 * torch.randn(32, 2, generator=g, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)])
    lam = _max_hessian_eig(target, x, sigma)
    bound = float(ScoreLipschitz.of(target.mixture)(sigma))
    assert float(lam.max()) <= bound * (1 + 1e-9) + 1e-9
    if name == "gaussian":  # exact: −1/(1 + σ²) everywhere
        torch.testing.assert_close(lam, torch.full_like(lam, -1 / (1 + sigma**2)), rtol=1e-10, atol=1e-12)


def test_log_growth_is_the_integral_of_sigma_l() -> None:
    lip = ScoreLipschitz.of(make_target("gmm-ring").mixture)
    for hi in (0.01, 0.3, 5.0, 80.0):
        num = quad(lambda s: s * float(lip(s)), SMIN, hi, limit=200, epsrel=1e-12)[0]
        assert float(lip.log_growth(hi, SMIN)) == pytest.approx(num, rel=1e-9)


def test_initial_mismatch_dominates_the_exact_gaussian_distance() -> None:
    """One component: the convexity bound is the Bures distance itself; a mixture's is at least its mean's."""
    from gentool.core.metrics.gaussian import gaussian_w2 as bures

    t = make_target("gaussian", 3)
    exact = bures(torch.zeros(3), torch.eye(3) * (1 + SMAX**2), torch.zeros(3), torch.eye(3) * SMAX**2)
    assert initial_mismatch(t.mixture, SMAX) == pytest.approx(exact, rel=1e-7)  # Bures cancels 6401 − 6400
    assert initial_mismatch(make_target("gmm-ring").mixture, SMAX) >= 2.0  # ring radius


def test_dilation_scales_means_and_stds_about_the_mean() -> None:
    ring = make_target("gmm-ring")
    wide = dilated_target(ring, 0.5).mixture
    torch.testing.assert_close(wide.means, 1.5 * ring.mixture.means)
    torch.testing.assert_close(wide.stds, 1.5 * ring.mixture.stds)


# ---- the ring: bound >= measured W2 ------------------------------------------------------------------------


def test_ring_perturbed_bound_dominates_measured_w2(tmp_path: Path) -> None:
    out = tmp_path / "ring"
    run("bound", out, target="gmm-ring", perturb=0.2, n=400, steps=60, n_w2=300, w2_levels=3)
    m = json.loads((out / "metrics.json").read_text())
    assert m["w2_method"].startswith("exact empirical")
    assert m["w2_bound"] - 4 * m["w2_bound_se"] >= m["w2"] > 0
    assert m["log10_gronwall_factor"] > 50  # the valid, uniform L_σ of a ring of 8 narrow modes
    rows = (out / "curve.csv").read_text().splitlines()
    assert rows[0].split(",")[-2:] == ["w2", "w2_pot_floor"] and len(rows) == 62
    assert (out / "bound.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_ring_trained_model_bound_dominates_measured_w2(tmp_path: Path) -> None:
    run("train", tmp_path / "model", data="ring", n_train=4000, steps=400, batch=256, width=64, depth=2,
        checkpoint_every=400, plots=False)
    out = tmp_path / "bound"
    run("bound", out, model=str(tmp_path / "model"), n=1000, steps=100, n_w2=500, w2_levels=4, plots=False)
    m = json.loads((out / "metrics.json").read_text())
    assert m["w2_bound"] - 4 * m["w2_bound_se"] >= m["w2"] > 0
    assert m["model"] == "model on ring"


def run_stopped(monkeypatch: pytest.MonkeyPatch, job_type: type, stop: Callable[[Any], bool], *args: Any,
                **kwargs: Any) -> None:
    """`run(*args, **kwargs)` stopped by `Interrupted` at the first unit where `stop(job)` holds (as a kill between
    units would), then `job_type.advance` put back for the resume."""
    advance = job_type.advance

    def stopping(job: Any) -> Any:
        if stop(job):
            raise Interrupted("stopped")
        return advance(job)

    monkeypatch.setattr(job_type, "advance", stopping)
    with pytest.raises(Interrupted):
        run(*args, **kwargs)
    monkeypatch.setattr(job_type, "advance", advance)


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dict(target="gmm-ring", perturb=0.1, n=200, batch_size=100, steps=30, n_w2=100, w2_levels=2,
                    plots=False)
    run("bound", tmp_path / "whole", **settings)
    run_stopped(monkeypatch, BoundJob, lambda job: job.units_done == 1, "bound", tmp_path / "split", **settings)
    run("bound", tmp_path / "split", resume="require", **settings)
    whole, split = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "split"))
    assert split == whole


# ---- the command ------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_writes_metrics(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = runner.invoke(app, ["bound", "--target", "gaussian", "--perturb", "0.2", "-n", "200", "--steps", "40",
                              "--out", str(out), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert {"w2_bound", "w2", "w2_bound_se", "tightness"} <= set(m)
    assert "w2_bound=" in res.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "gaussian"], "error: target needs perturb"),
    (["--target", "gaussian", "--perturb", "-1"], "error: perturb must be a finite number > -1"),
    (["--target", "gaussian", "--perturb", "0.1", "--model", "x.pt"], "error: give a target or a model, not both"),
    (["--perturb", "0.1"], "error: give a target (one of: gaussian, gmm-ring, gmm-grid, gmm-random, point) or a model"),
    (["--target", "ring", "--perturb", "0.1"], "error: unknown target 'ring'"),
    (["--model", "missing.pt"], "error: checkpoint not found"),
    (["--target", "gmm-ring", "--perturb", "0.1", "--dim", "3"], "error: dim applies to source gaussian"),
])
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bad"
    res = runner.invoke(app, ["bound", *args, "--out", str(out), "--no-progress"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.output
    assert not out.exists()


def test_model_without_analytic_law_is_refused(tmp_path: Path) -> None:
    run("train", tmp_path / "moons", data="moons", n_train=100, steps=2, batch=16, width=8, depth=1,
        checkpoint_every=2, plots=False)
    res = runner.invoke(app, ["bound", "--model", str(tmp_path / "moons"), "--out", str(tmp_path / "b"),
                              "--no-progress"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: model") and "allowed: ring, grid" in res.output


# ---- over training: every checkpoint of a train run ---------------------------------------------------------


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory) -> Path:
    """A tiny ring model trained 3 units of 20 steps with snapshots (steps 20, 40, 60)."""
    out = tmp_path_factory.mktemp("train") / "ring"
    run("train", out, data="ring", n_train=1000, steps=60, batch=128, width=32, depth=2, checkpoint_every=20,
        snapshots=True, plots=False)
    return out


CHECKPOINT_RUN = dict(checkpoints=True, n=200, steps=30, n_w2=150, w2_levels=2)


def test_bound_over_training_checkpoints(ring_run: Path, tmp_path: Path) -> None:
    """Every snapshot is bounded (bound >= measured W2 at each, a theorem), the rows go to metrics.json with
    standard errors, the top-level numbers are the last checkpoint's, and training.png is drawn."""
    out = tmp_path / "bound"
    run("bound", out, model=str(ring_run), **CHECKPOINT_RUN)
    m = json.loads((out / "metrics.json").read_text())
    rows = m["checkpoints"]
    assert [r["step"] for r in rows] == [20, 40, 60]
    for r in rows:
        assert r["w2_bound"] - 4 * r["w2_bound_se"] >= r["w2"] + 4 * r["w2_se"] > 0
        assert r["w2_se"] > 0 and r["w2_pot_floor"] > 0
    assert m["w2"] == rows[-1]["w2"] and m["w2_bound"] == rows[-1]["w2_bound"]
    assert m["model"] == "model on ring at step 60"
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoints_use_the_same_draws_and_resume(ring_run: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped inside the second checkpoint resumes to the same numbers; each checkpoint's trajectories
    start from the same z (the last checkpoint alone gives its row of the run over training)."""
    settings = {**CHECKPOINT_RUN, "batch_size": 100}
    run("bound", tmp_path / "whole", model=str(ring_run), **settings, plots=False)
    run_stopped(monkeypatch, BoundJob, lambda job: job.units_done == 3, "bound", tmp_path / "split",
                model=str(ring_run), **settings, plots=False)
    run("bound", tmp_path / "split", model=str(ring_run), resume="require", **settings, plots=False)
    whole, split = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "split"))
    assert split == whole
    last = {k: v for k, v in settings.items() if k != "checkpoints"}
    run("bound", tmp_path / "last", model=str(ring_run / "snapshots" / "step_000000060.pt"), **last, plots=False)
    alone = json.loads((tmp_path / "last" / "metrics.json").read_text())
    assert alone["w2_bound"] == whole["checkpoints"][-1]["w2_bound"] and alone["w2"] == whole["w2"]


def test_training_figure_has_labels_legend_and_integer_ticks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gentool.core import plots
    from matplotlib.ticker import MaxNLocator

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi=110: figures.append(fig) or Path(path))
    rows = [{"step": s, "w2_bound": 10.0 * s, "w2_bound_se": 1.0, "w2": 0.5, "w2_se": 0.05, "w2_pot_floor": 0.1}
            for s in (100, 200, 300)]
    plots.bound_over_training(tmp_path / "t.png", rows, "POT", title="ring")
    left, right = figures[0].axes
    assert left.get_xlabel().startswith("training step") and left.get_ylabel().startswith("W2")
    assert right.get_ylabel().startswith("measured W2")
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert any("upper bound" in t for t in labels) and any("measured W2" in t for t in labels)
    assert any("floor" in t.get_text() for t in right.get_legend().get_texts())
    assert all(isinstance(loc, MaxNLocator) and loc._integer for loc in (left.xaxis.get_major_locator(),
                                                                         right.xaxis.get_major_locator()))


def test_checkpoints_need_snapshots(tmp_path: Path) -> None:
    run("train", tmp_path / "plain", data="ring", n_train=100, steps=2, batch=16, width=8, depth=1,
        checkpoint_every=1, plots=False)
    res = runner.invoke(app, ["bound", "--model", str(tmp_path / "plain"), "--checkpoints", "--out",
                              str(tmp_path / "b"), "--no-progress"])
    assert res.exit_code == 2 and "has no training snapshots" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
    res = runner.invoke(app, ["bound", "--target", "gaussian", "--perturb", "0.1", "--checkpoints", "--out",
                              str(tmp_path / "c"), "--no-progress"])
    assert res.exit_code == 2 and "checkpoints" in res.output, res.output


def test_train_snapshots_survive_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshots are kept in the run state: a train run stopped after its first unit and resumed writes the
    same snapshot files as an uninterrupted one; each snapshot is a checkpoint bound reads."""
    from gentool.core.diffusion.checkpoints import load_checkpoint, training_checkpoints
    from gentool.core.jobs.train import TrainJob

    settings = dict(data="ring", n_train=200, steps=40, batch=32, width=8, depth=1, checkpoint_every=20,
                    snapshots=True, plots=False)
    run("train", tmp_path / "whole", **settings)
    run_stopped(monkeypatch, TrainJob, lambda job: job.trainer.step == 20, "train", tmp_path / "split", **settings)
    run("train", tmp_path / "split", resume="require", **settings)
    whole, split = (training_checkpoints(tmp_path / d) for d in ("whole", "split"))
    assert [s for s, _ in whole] == [s for s, _ in split] == [20, 40]
    for (_, a), (_, b) in zip(whole, split, strict=True):
        ema_a, ema_b = load_checkpoint(a)["ema"], load_checkpoint(b)["ema"]
        assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    first, last = (load_checkpoint(p)["ema"] for _, p in whole)
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the snapshots are of different steps
