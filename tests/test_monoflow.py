"""MonoFlow (SPEC §3): h registry, exact-ratio KL flow, the official 2-D Gaussian toy, CLI outputs, resume, data and
network settings, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core.config import make_config
from gentool.core.errors import BadInput
from gentool.core.jobs.monoflow import MonoFlowJobConfig, build
from gentool.core.metrics import mmd2
from gentool.core.monoflow import (
    H_FUNCTIONS,
    AffineGenerator,
    MonoFlowConfig,
    get_h,
    h_prime,
    sample_generator,
    train_generator,
)
from gentool.core.monoflow.data import FreshSampler
from gentool.core.monoflow.exact import analytic_target, exact_flow, kl_flow_gaussian
from typer.testing import CliRunner

runner = CliRunner()


def test_saturation_of_vanilla_vs_ns() -> None:
    d = torch.tensor([-5.0])
    assert h_prime(get_h("vanilla"), d, 0.0).item() == pytest.approx(0.0067, abs=5e-5)
    assert h_prime(get_h("ns"), d).item() == pytest.approx(0.9933, abs=5e-5)
    assert h_prime(get_h("vanilla"), d, 5.0).item() == pytest.approx(0.5)  # shift C moves it off saturation


# f''(r) of f = -log r (reverse KL), r log r (forward KL), (r - 1)^2 (chi2), (sqrt(r) - 1)^2 (Hellinger)
F_SECOND_DERIVATIVES = [("logit", lambda r: 1 / r**2), ("forward-kl", lambda r: 1 / r),
                        ("chi2", lambda r: 2 + 0 * r), ("hellinger", lambda r: 0.5 * r**-1.5)]


@pytest.mark.parametrize(("name", "f2"), F_SECOND_DERIVATIVES)
def test_f_divergence_flows_satisfy_h_prime_equals_r2_fpp(name: str, f2) -> None:
    d = torch.linspace(-3, 3, 13, dtype=torch.float64)
    r = torch.exp(d)
    torch.testing.assert_close(h_prime(get_h(name), d), r**2 * f2(r))


def test_every_h_is_monotone_increasing() -> None:
    d = torch.linspace(-8, 8, 101, dtype=torch.float64)
    for h in H_FUNCTIONS.values():
        assert bool((h_prime(h, d, MonoFlowConfig(h=h.name).h_param) > 0).all()), h.name


def test_exact_kl_flow_keeps_1d_gaussians_gaussian() -> None:
    target = analytic_target("gaussian-1d")
    x0 = target.initial.sample(20_000, torch.Generator().manual_seed(0))
    x1 = exact_flow(x0, target.log_prob, get_h("logit"), 1.0, 20, method="rk4")
    mean, var = kl_flow_gaussian(2.0, 0.25, 1.0)
    assert (mean, var) == pytest.approx((0.7358, 0.8985), abs=5e-5)
    # Sampling error of 20k particles: the empirical mean moves as μ̂₀e^{−t}, the variance as the closed form.
    se_mean, se_var = 0.5 / math.sqrt(20_000) * math.exp(-1), 0.8985 * math.sqrt(2 / 20_000)
    assert x1.mean().item() == pytest.approx(mean, abs=4 * se_mean)
    assert x1.var().item() == pytest.approx(var, abs=4 * se_var)
    # Given the empirical initial moments the flow is deterministic: match the closed form tightly.
    m_hat, v_hat = kl_flow_gaussian(x0.mean().item(), x0.var().item(), 1.0)
    assert x1.mean().item() == pytest.approx(m_hat, abs=1e-6)
    assert x1.var().item() == pytest.approx(v_hat, rel=1e-5)


@pytest.mark.parametrize(("k_gen", "steps"), [(1, 1500), (3, 500)])  # k_gen > 1: distillation loss
def test_logit_generator_converges_on_2d_gaussian_toy(k_gen: int, steps: int) -> None:
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 0.89]])
    x = torch.randn(20_000, 2, generator=g) @ torch.linalg.cholesky(cov).T
    cfg = MonoFlowConfig(h="logit", steps=steps, k_gen=k_gen, lr_d=2e-3, lr_g=5e-3, hidden=32, depth=2,
                         batch_size=512)
    res = train_generator(x, cfg, generator=g, init_generator=AffineGenerator(torch.ones(2), torch.eye(2)))
    mean, a = res.generator.mean.detach(), res.generator.matrix.detach()
    assert float(mean.abs().max()) < 0.1
    assert float((a @ a.T - cov).abs().max()) < 0.15
    y = sample_generator(res.generator, 10, res.latent_dim, generator=torch.Generator().manual_seed(1))
    assert y.shape == (10, 2) and res.history[-1]["step"] == steps


def test_bad_config_and_data_are_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown h 'kl'"):
        MonoFlowConfig(h="kl")
    with pytest.raises(BadInput, match="lr_g"):
        MonoFlowConfig(lr_g=0.0)
    with pytest.raises(BadInput, match="lr_d"):
        MonoFlowConfig(lr_d=-1e-3)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(BadInput, match="shape"):
        train_generator(torch.zeros(10), MonoFlowConfig(steps=1), generator=g)
    with pytest.raises(BadInput, match="data shape mismatch"):
        train_generator(torch.zeros(10, 3), MonoFlowConfig(steps=1), generator=g,
                        init_generator=AffineGenerator(torch.ones(2), torch.eye(2)))


@pytest.mark.parametrize(("args", "needle"), [(["--h", "kl"], "unknown h"), (["--lr-g", "0"], "lr_g"),
                                              (["--lr-d", "-1"], "lr_d"), (["--mode", "gan"], "unknown mode"),
                                              (["--data", "mnist"], "unknown data")])
def test_cli_bad_input_exits_2(tmp_path, args: list[str], needle: str) -> None:
    res = runner.invoke(app, ["monoflow", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output


def _cli(out, *extra: str, steps: int = 40):
    batch = [] if "exact" in extra else ["--batch-size", "64"]  # (exact mode has no minibatches)
    return runner.invoke(app, ["monoflow", "--steps", str(steps), "--eval-every", "20", "-n", "300", *batch,
                               "--out", str(out), *extra])


def test_cli_generator_run_writes_outputs_and_resume_matches_straight_run(tmp_path) -> None:
    straight, split = tmp_path / "a", tmp_path / "b"
    assert _cli(straight).exit_code == 0
    for name in ("config.json", "metrics.jsonl", "state.pt", "samples.npz", "final.png", "snapshots/000001.npz"):
        assert (straight / name).exists(), name
    assert json.loads((straight / "config.json").read_text())["config"]["h"] == "logit"
    assert _cli(split, steps=20).exit_code == 0
    assert _cli(split, "--resume").exit_code == 0
    a = torch.load(straight / "state.pt", weights_only=False)["job"]["generator"]
    b = torch.load(split / "state.pt", weights_only=False)["job"]["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(r) for r in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]


def test_cli_resume_with_other_data_shape_is_bad_input(tmp_path) -> None:
    assert _cli(tmp_path).exit_code == 0
    res = _cli(tmp_path, "--data", "digits", "--resume")
    assert res.exit_code == 2 and "settings differ from the stored run: data" in res.output


@pytest.mark.parametrize("extra", [["--mode", "particles", "--solver-steps", "2", "--method", "heun"],
                                   ["--mode", "exact", "--target", "gaussian-2d", "--method", "rk4"]])
def test_cli_particle_and_exact_modes(tmp_path, extra: list[str]) -> None:
    res = _cli(tmp_path, *extra)
    assert res.exit_code == 0, res.output
    ckpt = torch.load(tmp_path / "state.pt", weights_only=False)["job"]
    assert ckpt["step"] == 40 and torch.isfinite(ckpt["particles"]).all()
    if "exact" in extra:  # KL flow: dμ/dt = −Σ_p⁻¹ μ, so μ(2) = expm(−2 Σ_p⁻¹)(1, 1) up to sampling error
        expected = torch.linalg.matrix_exp(-2 * torch.linalg.inv(torch.tensor([[1.0, 0.8], [0.8, 0.89]])))
        expected = expected @ torch.ones(2)
        assert float((ckpt["particles"].mean(0) - expected).abs().max()) < 0.1


def test_a_round_that_goes_non_finite_is_named_with_its_flow_time_and_knobs(tmp_path) -> None:
    """The exact-ratio flow on the ring (mode std 0.2) at dt = 0.05 grows ~9x a round until it overflows: the
    error names that round and its flow time (not step 0 of the round's own solve) and the knobs dt and
    solver_steps; exit 3, one line."""
    res = runner.invoke(app, ["monoflow", "--mode", "exact", "--target", "gmm-ring", "--steps", "60", "--out",
                              str(tmp_path / "ring"), "--no-progress"])
    line = res.output.strip().splitlines()[-1]
    assert res.exit_code == 3 and "became non-finite in round" in line and "(flow time " in line, res.output
    assert "lower dt (now 0.05) or raise solver_steps (now 1)" in line
    ok = runner.invoke(app, ["monoflow", "--mode", "exact", "--target", "gmm-ring", "--steps", "60", "--dt", "0.01",
                             "--out", str(tmp_path / "small"), "--no-progress"])
    assert ok.exit_code == 0, ok.output


def test_an_exact_flow_whose_particle_covariance_breaks_down_is_a_named_numerical_failure(tmp_path) -> None:
    """gaussian-2d at dt = 0.5: the explicit Euler rounds overshoot until the Gaussian fit of the cloud is not
    positive definite; exit 3 naming the round and the exact mode's knobs, not a linalg traceback."""
    res = runner.invoke(app, ["monoflow", "--mode", "exact", "--target", "gaussian-2d", "--dt", "0.5", "--steps",
                              "20", "--eval-every", "5", "-n", "100", "--out", str(tmp_path / "g"), "--no-progress"])
    line = res.output.strip().splitlines()[-1]
    assert res.exit_code == 3 and "became non-finite in round" in line, res.output
    assert "lower dt (now 0.5) or raise solver_steps (now 1)" in line and "Traceback" not in res.output


# ---- issue 16: the official Gaussian toy, every h of the official code, the researcher's data ---------------

TOY_COV = [[1.0, 0.8], [0.8, 0.89]]  # S Sᵀ, S = [[1, 0], [0.8, 0.5]]


def _official_toy(out: Path, steps: int, hidden: int) -> np.lib.npyio.NpzFile:
    res = runner.invoke(app, ["monoflow", "--data", "gaussian", "--data-cov", "1,0.8;0.8,0.89", "--generator",
                              "affine", "--fresh-real", "--lr-g", "1e-3", "--lr-d", "1e-3", "--beta1", "0.9",
                              "--batch-size", "32", "--hidden", str(hidden), "--depth", "2", "--activation",
                              "leaky_relu_0.2", "--steps", str(steps), "--eval-every", str(steps // 3), "-n", "1000",
                              "--out", str(out), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    samples = np.load(out / "samples.npz")
    assert set(samples.files) == {"x", "step", "mean", "matrix", "cov"} and int(samples["step"]) == steps
    np.testing.assert_allclose(samples["cov"], samples["matrix"] @ samples["matrix"].T, rtol=1e-6)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["cov_err"] == pytest.approx(np.linalg.norm(samples["cov"] - np.array(TOY_COV)), rel=1e-5)
    return samples


@pytest.mark.slow  # 3000 steps with a width-512 discriminator: ~30 s
def test_official_gaussian_toy_from_the_cli(tmp_path) -> None:
    """The official 2-D toy (r_gan notebook): data N(0, SSᵀ), affine generator from μ = (1, 1), A = I, Adam
    lr 1e-3 for both, β₁ 0.9, batch 32, a fresh real minibatch every step, D of width 512 with LeakyReLU(0.2);
    logit h. The generator's law N(μ, AAᵀ) recovers the covariance; samples.npz holds what is scored."""
    samples = _official_toy(tmp_path / "toy", 3000, 512)
    assert np.linalg.norm(samples["cov"] - np.array(TOY_COV)) < 0.1
    assert np.linalg.norm(samples["mean"]) < 0.1


def test_official_gaussian_toy_outputs_from_the_cli(tmp_path) -> None:
    """The official toy's settings from the CLI, 300 steps with a width-64 discriminator: samples.npz holds the
    affine generator's law N(μ, AAᵀ) and the trace's cov_err is its distance to SSᵀ; the generator has moved
    from its start μ = (1, 1), A = I towards the data (convergence: the slow test above and the 2-D toy)."""
    samples = _official_toy(tmp_path / "toy", 300, 64)
    start = np.linalg.norm(np.eye(2) - np.array(TOY_COV))
    assert np.linalg.norm(samples["cov"] - np.array(TOY_COV)) < start
    assert np.linalg.norm(samples["mean"]) < np.linalg.norm([1.0, 1.0])


def test_exp_h_of_the_official_toy() -> None:
    """h = exp(a d) with a = 1.5 by default (the notebooks' `Exp`): h' = a e^{a d} > 0."""
    d = torch.linspace(-3, 3, 13, dtype=torch.float64)
    torch.testing.assert_close(h_prime(get_h("exp"), d, 1.5), 1.5 * torch.exp(1.5 * d))
    assert MonoFlowConfig(h="exp").h_param == 1.5 and MonoFlowConfig(h="vanilla", shift=5.0).h_param == 5.0
    assert MonoFlowConfig(h="logit", shift=3.0).h_param == 0.0
    with pytest.raises(BadInput, match="rate must be > 0"):
        MonoFlowConfig(h="exp", rate=0.0)
    with pytest.raises(BadInput, match="rate applies to h exp"):
        make_config(MonoFlowJobConfig, {"h": "logit", "rate": 2.0})
    with pytest.raises(BadInput, match="shift applies to h vanilla"):
        make_config(MonoFlowJobConfig, {"h": "ns", "shift": 2.0})


def test_architecture_and_optimiser_settings_reach_the_networks() -> None:
    cfg = make_config(MonoFlowJobConfig, {"activation": "leaky_relu_0.2", "beta1": 0.9, "beta2": 0.99,
                                          "hidden": 16, "depth": 3, "n_train": 100, "n": 50})
    job = build(cfg, 0, torch.device("cpu"))
    for net in (job.run.generator, job.run.disc):
        acts = [m for m in net if isinstance(m, torch.nn.LeakyReLU)]
        assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
        assert sum(isinstance(m, torch.nn.Linear) for m in net) == 4
    for opt in (job.run.opt_g, job.run.opt_d):
        assert opt.param_groups[0]["betas"] == (0.9, 0.99)


def test_data_from_a_file_and_fresh_real_batches(tmp_path) -> None:
    """A data file trains on its rows (the metrics' reference is drawn from them); fresh_real draws a new real
    minibatch from the distribution each step (no fixed training sample)."""
    x = np.random.default_rng(0).normal(size=(300, 3)) + [3.0, 0.0, -1.0]
    np.save(tmp_path / "data.npy", x)
    out = tmp_path / "file"
    res = runner.invoke(app, ["monoflow", "--data", str(tmp_path / "data.npy"), "--mode", "particles", "--steps",
                              "4", "--eval-every", "2", "-n", "100", "--batch-size", "32", "--hidden", "16", "--out",
                              str(out), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    ref = np.load(out / "reference.npz")["x"]
    assert ref.shape == (100, 3) and np.isin(ref[:, 0], x[:, 0].astype(np.float32)).all()
    assert np.load(out / "samples.npz")["x"].shape == (100, 3)
    fresh = build(make_config(MonoFlowJobConfig, {"data": "gaussian", "fresh_real": True, "n": 50}), 0,
                  torch.device("cpu"))
    assert isinstance(fresh.data, FreshSampler)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(fresh.data.batch(8, g), fresh.data.batch(8, g))


def test_every_evaluation_writes_the_scored_samples(tmp_path) -> None:
    """snapshots/NNNNNN.npz after every evaluation hold the samples x the row's metrics were computed on."""
    out = tmp_path / "s"
    assert _cli(out, "--no-plots").exit_code == 0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    ref = torch.as_tensor(np.load(out / "reference.npz")["x"]).double()
    for unit, row in enumerate(rows, 1):
        snap = np.load(out / "snapshots" / f"{unit:06d}.npz")
        assert int(snap["step"]) == row["step"]
        assert mmd2(ref, torch.as_tensor(snap["x"]).double()) == pytest.approx(row["mmd2"], rel=1e-6)
