"""Learned sampler schedules (`gentool tune`): gradients, the parametrisation, exactness where the math allows
it, the run directory and `sample --tuned`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from gentool.cli.main import app
from gentool.core.diffusion import tuning as T
from gentool.core.diffusion.samplers import SAMPLERS
from gentool.core.diffusion.targets import make_target, reference_flow
from gentool.core.errors import BadInput
from gentool.core.jobs import JOBS, run
from gentool.core.jobs.tune import TuneJob
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner


def invoke(*args: str):
    return CliRunner().invoke(app, [*args, "--no-progress", "--device", "cpu"])


def _params(sampler: str, nfe: int, seed: int = 0) -> tuple[T.ScheduleParameters, T.SamplerSpec]:
    spec = SAMPLERS[sampler]
    steps = T.steps_for(spec, nfe)
    from gentool.core.diffusion.grids import edm_grid

    p = T.ScheduleParameters(edm_grid(steps, 0.01, 80.0), T.evaluations(spec, steps, {}), T.LEARNABLE)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in p.parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=g, dtype=q.dtype))
    return p, spec


@pytest.mark.parametrize("sampler,nfe", [("euler", 4), ("unipc", 5), ("heun", 5), ("dpmpp-2m", 4), ("ipndm-v", 5)])
def test_loss_gradient_matches_central_differences(sampler: str, nfe: int) -> None:
    target = make_target("gmm-ring")
    g = torch.Generator().manual_seed(1)
    x = 80.0 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    ref = torch.randn(6, 2, generator=g, dtype=torch.float64)
    p, spec = _params(sampler, nfe)

    def loss() -> torch.Tensor:
        out = T.run_schedule(spec, target, x, p.sigmas(), p.log_scale, p.log_shift)
        return (out - ref).pow(2).sum(1).mean()

    grads = torch.autograd.grad(loss(), list(p.parameters()))
    h = 1e-5
    with torch.no_grad():
        for q, grad in zip(p.parameters(), grads, strict=True):
            for i in range(q.numel()):
                flat, f = q.view(-1), {}
                for k in (-2, -1, 1, 2):
                    flat[i] += k * h
                    f[k] = float(loss())
                    flat[i] -= k * h
                fd = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * h)  # fourth-order central difference
                assert abs(float(grad.view(-1)[i]) - fd) <= 1e-6 * max(1.0, abs(fd)), (sampler, i, fd)


@settings(max_examples=60, deadline=None)
@given(theta=st.lists(st.floats(-8, 8), min_size=1, max_size=12), log_lo=st.floats(-8, 4.3))
def test_learned_grid_is_strictly_decreasing_from_sigma_max_to_zero(theta: list[float], log_lo: float) -> None:
    from gentool.core.diffusion.grids import edm_grid

    p = T.ScheduleParameters(edm_grid(len(theta) + 1), 0, ("grid", "sigma-min"))
    with torch.no_grad():
        p.theta.copy_(torch.tensor(theta, dtype=torch.float64))
        p.log_sigma_min.fill_(log_lo)
    s = p.sigmas().detach()
    assert float(s[0]) == pytest.approx(80.0, rel=1e-14) and float(s[-1]) == 0.0
    assert bool((s[1:] < s[:-1]).all())
    assert float(s[-2]) == pytest.approx(math.exp(log_lo), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(grid=st.lists(st.floats(1e-3, 79.0), min_size=1, max_size=6, unique=True))
def test_euler_grid_alone_cannot_be_exact_on_a_gaussian(grid: list[float]) -> None:
    """For N(0, 1) an Euler step σ → σ' multiplies x by (1 + σσ')/(1 + σ²) ≤ sqrt((1 + σ'²)/(1 + σ²)) (Cauchy–
    Schwarz, equality only at σ' = σ), and the last step to 0 by 1/(1 + σ²) < 1/sqrt(1 + σ²): on every
    decreasing grid Euler contracts strictly more than the flow, so on the 1-D Gaussian a learned grid alone
    cannot be exact; a learned scale can (next test)."""
    target = make_target("gaussian", 1)
    sigmas = torch.tensor([80.0, *sorted(grid, reverse=True), 0.0], dtype=torch.float64)
    x = torch.ones(1, 1, dtype=torch.float64) * 80.0
    out = T.run_schedule(SAMPLERS["euler"], target, x, sigmas)
    exact = reference_flow(target, x, 80.0)
    assert 0.0 < float(out) < float(exact)


def test_tuning_drives_the_error_to_zero_on_the_1d_gaussian() -> None:
    target = make_target("gaussian", 1)
    x = 80.0 * torch.randn(16, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = reference_flow(target, x, 80.0)
    schedule = T.tune(target, "euler", 3, x, ref, sigma_max=80.0, sigma_min=0.002, learn="grid,scale",
                      settings=T.Optimiser(iterations=300))
    assert T.endpoint_errors(schedule.run(target, x), ref)["rmse"] <= 1e-6
    assert schedule.nfe == 3 and len(schedule.log_scale) == 3 and schedule.log_shift == ()


def test_tuned_schedule_reloads_and_reproduces_its_heldout_error(tmp_path) -> None:
    settings_ = dict(target="gmm-ring", nfe=4, train_samples=16, eval_samples=32, steps=10)
    result = run("tune", tmp_path / "t", seed=3, plots=False, **settings_)
    schedule = T.load_tuned(tmp_path / "t")
    recorded = schedule.errors["heldout"]["tuned"]
    job = TuneJob(JOBS["tune"].config(**settings_), 3)
    job.advance()  # the teacher unit: the same held-out noises and endpoints
    again = T.endpoint_errors(schedule.run(job.source.denoiser, job.data["x_eval"]), job.data["ref_eval"])
    assert again == recorded
    assert result.summary["heldout_rmse"] == recorded["rmse"]
    assert recorded["rmse"] < schedule.errors["heldout"]["edm"]["rmse"]
    assert schedule.errors["teacher_error"] < 1e-6
    s = schedule.sigmas
    assert s[-1] == 0.0 and all(a > b for a, b in zip(s, s[1:], strict=False))


def test_tuned_json_round_trips_and_is_checked() -> None:
    schedule = T.TunedSchedule("unipc", 3, (80.0, 1.0, 0.1, 0.0), (0.1, 0.0, -0.1), (), {"order": 2},
                               ("grid", "scale"), {"target": "gmm-ring", "dim": 2})
    assert T.TunedSchedule.from_dict(json.loads(schedule.to_json())) == schedule
    bad = json.loads(schedule.to_json()) | {"sigmas": [80.0, 1.0, 2.0, 0.0]}
    with pytest.raises(BadInput, match="strictly decreasing"):
        T.TunedSchedule.from_dict(bad)
    with pytest.raises(BadInput, match="euler-ancestral"):
        T.TunedSchedule.from_dict(json.loads(schedule.to_json()) | {"sampler": "euler-ancestral"})


def test_sample_tuned_cli(tmp_path) -> None:
    out = tmp_path / "t"
    run("tune", out, plots=False, target="gmm-ring", nfe=3, train_samples=8, eval_samples=8, iterations=2)
    res = invoke("sample", "--target", "gmm-ring", "--tuned", str(out), "-n", "20", "--out", str(tmp_path / "s"),
                 "--no-reference")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["nfe"] == 3
    for extra, match in ((["--steps", "7"], "do not also set steps"), (["--sampler", "heun"], "sampler"),
                         (["--target", "gaussian"], "was made for")):
        args = ["sample", "--target", "gmm-ring", "--tuned", str(out), "-n", "5", "--out", str(tmp_path / "x")]
        if extra[0] == "--target":
            args[2] = extra[1]
        else:
            args += extra
        res = invoke(*args)
        assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("args,match", [(["--sampler", "euler-ancestral"], "unipc"),
                                        (["--learn", "scale"], "must include 'grid'"),
                                        (["--learn", "grid,steps"], "sigma-min"),
                                        (["--sampler", "euler", "--order", "2"], "does not take option 'order'"),
                                        (["--teacher-rtol", "1e-6"], "teacher_rtol applies to"),
                                        (["--learn", "grid", "--lr-coef", "0.01"], "lr_coef applies when learn"),
                                        (["--dim", "3"], "dim applies to source"),
                                        (["--steps", "0"], "steps must be an integer in [1, ")])
def test_tune_refuses_bad_settings(tmp_path, args: list[str], match: str) -> None:
    res = invoke("tune", "--target", "gmm-ring", *args, "--out", str(tmp_path / "t"))
    assert res.exit_code == 2 and match in res.output, res.output
    assert not (tmp_path / "t").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tune_runs_on_cuda_with_the_same_code(tmp_path) -> None:
    settings_ = dict(target="gmm-ring", nfe=4, train_samples=64, eval_samples=64, iterations=20)
    cpu = run("tune", tmp_path / "cpu", plots=False, device="cpu", **settings_).summary
    gpu = run("tune", tmp_path / "gpu", plots=False, device="cuda", **settings_).summary
    assert gpu["heldout_rmse"] == pytest.approx(cpu["heldout_rmse"], rel=1e-6)


def test_tune_a_trained_model_and_sample_with_it(tmp_path) -> None:
    model = tmp_path / "model"
    run("train", model, plots=False, data="ring", n_train=200, steps=4, batch_size=32, width=8, depth=1,
        checkpoint_every=4)
    res = run("tune", tmp_path / "t", plots=False, model=str(model), nfe=3, train_samples=8, eval_samples=8,
              iterations=3).summary
    schedule = T.load_tuned(tmp_path / "t")
    assert schedule.model["model_sha256"] and math.isfinite(res["heldout_rmse"]) and res["teacher_error"] < 1e-2
    out = invoke("sample", "--model", str(model), "--tuned", str(tmp_path / "t"), "-n", "16",
                 "--out", str(tmp_path / "s"))
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["nfe"] == schedule.nfe
    other = tmp_path / "other"
    run("train", other, plots=False, data="ring", n_train=200, steps=4, batch_size=32, width=8, depth=1, seed=1,
        checkpoint_every=4)
    out = invoke("sample", "--model", str(other), "--tuned", str(tmp_path / "t"), "-n", "4",
                 "--out", str(tmp_path / "s2"))
    assert out.exit_code == 2 and "was made for" in out.output


@pytest.mark.slow
def test_tune_a_diffusers_model_and_sample_with_it(tmp_path) -> None:
    """Images: a tiny random diffusers UNet (8x8, saved as a user would); the schedule is tied to its files."""
    pytest.importorskip("diffusers")
    from test_diffusers import saved, tiny_unet

    model = saved(tiny_unet().eval(), tmp_path / "unet", "epsilon")
    res = run("tune", tmp_path / "t", plots=False, model=str(model), nfe=3, train_samples=4, eval_samples=4,
              iterations=2).summary
    schedule = T.load_tuned(tmp_path / "t")
    assert schedule.model["model_sha256"] and math.isfinite(res["heldout_rmse"]) and schedule.nfe == 3
    out = invoke("sample", "--model", str(model), "--tuned", str(tmp_path / "t"), "-n", "4", "--out",
                 str(tmp_path / "s"))
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["nfe"] == 3


def test_a_resumed_tune_equals_an_uninterrupted_one() -> None:
    """State after the search and one Adam chunk, loaded into a fresh job (which rebuilds its trainer from the
    searched grid without searching again), continues to the same schedule as one job run through."""
    config = JOBS["tune"].config(target="gmm-ring", nfe=4, train_samples=16, eval_samples=8, steps=120)

    def finish(job: TuneJob) -> T.TunedSchedule:
        while not job.done:
            job.advance()
        return job.schedule()

    first = TuneJob(config, 2)
    for _ in range(3):  # teacher, search, the first 50 Adam steps
        first.advance()
    resumed = TuneJob(config, 2)
    resumed.load_state_dict(first.state_dict())
    assert finish(resumed) == finish(TuneJob(config, 2))


def test_tune_cli_writes_its_run_directory(tmp_path) -> None:
    out = tmp_path / "t"
    res = invoke("tune", "--target", "gmm-ring", "--nfe", "3", "--train-samples", "8", "--eval-samples", "8",
                 "--steps", "3", "--out", str(out))
    assert res.exit_code == 0, res.output
    for name in ("tuned.json", "tune.png", "metrics.json", "config.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] == 3 and metrics["heldout_rmse"] == T.load_tuned(out).errors["heldout"]["tuned"]["rmse"]


def test_a_non_finite_loss_names_its_iteration_and_the_knobs(tmp_path) -> None:
    """Learning rates of 10 blow the schedule up: exit 3 naming the unit, the iteration and the settings to turn."""
    res = invoke("tune", "--lr-grid", "10", "--lr-coef", "10", "--nfe", "4", "--train-samples", "32", "--eval-samples",
                 "32", "--steps", "40", "--out", str(tmp_path / "t"))
    line = res.output.strip().splitlines()[-1]
    assert res.exit_code == 3 and "non-finite loss at iteration " in line, res.output
    assert "use a larger sigma_min or smaller learning rates (lr_grid, lr_coef)" in line
