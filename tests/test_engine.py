"""The engine under every integrator: plan combinations, the static-buffer adaptive chunks (the CUDA-graph
path's logic, run without a GPU), Euler–Maruyama, torch.compile, and the GPU paths (gpu-marked)."""

from __future__ import annotations

import warnings

import pytest
import torch
from gentool.core.diffusion import edm_grid, make_target, run_sampler
from gentool.core.solvers import CompileFallbackWarning, batch_odeint, sdeint
from gentool.core.solvers import api as solver_api
from gentool.core.solvers import compile as solver_compile
from gentool.core.solvers.adaptive_graph import StaticChunks, binary_parts
from gentool.core.solvers.fixed import tableau_plan
from gentool.core.solvers.plan import Head, combination, normalised
from gentool.core.solvers.tableau import FIXED_TABLEAUS
from hypothesis import given, settings
from hypothesis import strategies as st

F64 = torch.float64


def van_der_pol(mu: torch.Tensor):
    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p, q = x[:, 0], x[:, 1]
        return torch.stack([q, mu * (1 - p * p) * q - p], dim=1)

    return f


@settings(max_examples=40, deadline=None)
@given(coeffs=st.lists(st.floats(-3, 3).filter(lambda c: c != 0), min_size=1, max_size=5),
       kind=st.sampled_from(["free", "unit", "affine", "partial"]))
def test_combination_kernels_compute_the_sum(coeffs: list[float], kind: str) -> None:
    """Whatever kernels are chosen (add chain, lerp chain with added terms, scale), the result is sum c_j r_j."""
    if kind == "unit":
        coeffs[0] = 1.0
    if kind == "affine" and len(coeffs) > 1:
        coeffs[-1] = 1.0 - sum(coeffs[:-1]) or 0.5
        coeffs[0] += 1.0 - sum(coeffs)
    if kind == "partial" and len(coeffs) > 2:  # the first two an affine pair, the others added
        coeffs[1] = 1.0 - coeffs[0] or 0.5
    regs = list(torch.randn(len(coeffs), 7, 3, generator=torch.Generator().manual_seed(len(coeffs)), dtype=F64))
    comb = combination(list(enumerate(coeffs)))
    expected = sum(c * r for c, r in zip(coeffs, regs, strict=True))
    torch.testing.assert_close(comb(regs), expected, rtol=1e-12, atol=1e-12)


def test_combination_kernel_choice() -> None:
    assert combination([(0, 1.0)]).head is Head.COPY
    assert combination([(0, 1.0), (1, 0.3), (2, -2.0)]).head is Head.ADD
    assert combination([(0, 0.8), (1, 0.2)]).head is Head.LERP  # Euler on a denoiser: one kernel
    assert combination([(0, 0.7), (1, 0.9), (2, -0.6)]).head is Head.LERP  # DPM-Solver++(2M): two kernels
    assert combination([(0, 0.5), (1, 0.2)]).head is Head.SCALE
    noisy = combination([(0, 0.7), (1, 0.3), (2, 0.05)])  # ancestral step: a lerp, then the noise added
    assert noisy.head is Head.LERP and noisy.adds == ((2, 0.05),) and noisy.kernels == 2
    comb, g = normalised([(0, 0.25), (1, -0.25)])  # a kept direction (x - D)/sigma: stored as x - D
    assert comb.head is Head.ADD and comb.kernels == 1 and g == 0.25
    assert normalised([(3, 0.4)])[0].head is Head.COPY


def test_binary_parts() -> None:
    assert [binary_parts(n) for n in (1, 2, 3, 7, 8)] == [[1], [2], [2, 1], [4, 2, 1], [8]]
    with pytest.raises(ValueError):
        binary_parts(9)


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
@pytest.mark.parametrize("save", ["final", "times"])
def test_static_chunks_equal_eager_adaptive(monkeypatch: pytest.MonkeyPatch, method: str, save: str) -> None:
    """The CUDA-graph path's logic (static state, chunk bodies of 8/4/2/1 iterations, status vector computed
    in the body) run without capture: same values and per-sample NFE as the eager masked loop on the batched
    Van der Pol test."""
    mu = torch.linspace(0, 25, 8, dtype=F64)
    x0 = torch.stack([torch.linspace(0.5, 2.0, 8, dtype=F64), torch.zeros(8, dtype=F64)], dim=1)
    t = torch.tensor([0.0, 0.7, 3.0], dtype=F64)
    eager = batch_odeint(van_der_pol(mu), x0, t, method, rtol=1e-5, atol=1e-7, save=save)
    used: list[StaticChunks] = []

    def static(p, x0, save, graph, scope, key):  # noqa: ANN001, ANN202
        used.append(StaticChunks(p, x0, capture=False))
        return used[-1]

    monkeypatch.setattr(solver_api, "_adaptive_chunks", static)
    chunked = batch_odeint(van_der_pol(mu), x0, t, method, rtol=1e-5, atol=1e-7, save=save)
    again = used[0]  # a cached entry is reused: load a new x0 into the same buffers
    again.start(2 * x0)
    assert used and len(set(eager.nfe.tolist())) > 4
    for name in ("x", "nfe", "accepted", "rejected", "reached"):
        assert torch.equal(getattr(chunked, name), getattr(eager, name)), name
    if save == "times":
        assert torch.equal(chunked.xs, eager.xs)


def test_sdeint_is_euler_maruyama_with_the_generators_noise() -> None:
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    g = torch.Generator().manual_seed(1)
    x = x0
    for a, b in zip(t[:-1].tolist(), t[1:].tolist(), strict=True):
        x = x + (b - a) * (-x) + 0.7 * (b - a) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=F64)
    sol = sdeint(lambda t, x: -x, x0, t, 0.7, generator=torch.Generator().manual_seed(1), save="trajectory")
    torch.testing.assert_close(sol.x, x, rtol=1e-13, atol=1e-13)
    assert sol.xs.shape == (11, 5, 3) and sol.nfe.tolist() == [10] * 5
    ou = sdeint(lambda t, x: -x, torch.zeros(20000, 1, dtype=F64), torch.linspace(0, 3, 301, dtype=F64), 1.0,
                generator=torch.Generator().manual_seed(2)).x
    assert float(ou.var()) == pytest.approx(0.5 * (1 - torch.exp(torch.tensor(-6.0)).item()), rel=0.05)


def test_compiled_steps_match_eager() -> None:
    """compile=True (inductor, C++ on CPU): the same solve to float32 rounding, with the trajectory; the
    plan runs as compiled segments of 8, 4, 2, 1 same-shape steps."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))
    field = lambda t, x: net(x) * t[:, None]  # noqa: E731
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(1.0, 0.0, 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        eager = batch_odeint(field, x0, t, "heun", save="trajectory").xs
        compiled = batch_odeint(field, x0, t, "heun", compile=True, save="trajectory").xs
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    eleven = tableau_plan(FIXED_TABLEAUS["heun"], tuple(torch.linspace(1, 0, 12).tolist()), 64, x0.dtype, x0.device)
    assert [s.length for s in solver_compile.segments(eleven)] == [8, 2, 1]


def test_compile_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(fn: object, **kwargs: object) -> object:
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(solver_compile.torch, "compile", unavailable)
    x0 = torch.ones(3, 2)
    with pytest.warns(CompileFallbackWarning, match="running eagerly"):
        sol = batch_odeint(lambda t, x: -x, x0, torch.linspace(0, 1, 5), "rk4", compile=True)
    torch.testing.assert_close(sol.x, batch_odeint(lambda t, x: -x, x0, torch.linspace(0, 1, 5), "rk4").x)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["euler", "ddim", "heun", "dpmpp-2m", "dpmpp-3m", "amed", "unipc", "ipndm",
                                  "ipndm-v"])
def test_compiled_samplers_match_eager(name: str) -> None:
    den = make_target("gmm-ring")
    x0 = 80 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    sig = edm_grid(12)
    runs = [run_sampler(den, x0, sig, name, compile=c, generator=torch.Generator().manual_seed(1))[0]
            for c in (False, True)]
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
@pytest.mark.parametrize("save", ["final", "times"])
def test_adaptive_cuda_graph_matches_eager(method: str, save: str) -> None:
    """Captured chunks replayed until every sample is done: same values and per-sample NFE as eager."""
    mu = torch.linspace(0, 25, 64, dtype=F64, device="cuda")
    x0 = torch.stack([torch.linspace(0.5, 2.0, 64, dtype=F64), torch.zeros(64, dtype=F64)], dim=1).cuda()
    t = torch.tensor([0.0, 0.7, 3.0], dtype=F64, device="cuda")
    f = van_der_pol(mu)
    with torch.no_grad():
        eager = batch_odeint(f, x0, t, method, rtol=1e-5, atol=1e-7, save=save, graph="off")
        graphed = batch_odeint(f, x0, t, method, rtol=1e-5, atol=1e-7, save=save, graph="on")
        replay = batch_odeint(f, x0 * 1.5, t, method, rtol=1e-5, atol=1e-7, save=save, graph="on")
        replay_eager = batch_odeint(f, x0 * 1.5, t, method, rtol=1e-5, atol=1e-7, save=save, graph="off")
    for a, b in ((graphed, eager), (replay, replay_eager)):
        torch.testing.assert_close(a.x, b.x, rtol=1e-12, atol=1e-12)
        assert torch.equal(a.nfe, b.nfe) and torch.equal(a.accepted, b.accepted)
        if save == "times":
            torch.testing.assert_close(a.xs, b.xs, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_compiled_graphs_on_cuda() -> None:
    """compile=True with the CUDA-graph path: fixed-step plan (whole solve) and adaptive (compiled field)."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2)).cuda()
    field = lambda t, x: net(x)  # noqa: E731
    x0 = torch.randn(1024, 2, device="cuda")
    with torch.no_grad():
        for method, t in (("rk4", torch.linspace(1, 0, 17, device="cuda")), ("dopri5", torch.tensor([0.0, 1.0]))):
            eager = batch_odeint(field, x0, t.cuda(), method, graph="off")
            compiled = batch_odeint(field, x0, t.cuda(), method, graph="on", compile=True)
            torch.testing.assert_close(compiled.x, eager.x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["euler-ancestral", "dpmpp-3m-sde", "edm-stochastic", "ipndm", "unipc", "dpmpp-sde"])
def test_straight_line_program_equals_the_step_loop(name: str) -> None:
    """The generated straight-line eager program launches the step loop's kernels in the same order on the
    same values: bit-identical states (float64, with the sampler's noise rows and kept scaled history)."""
    from gentool.core.diffusion import SAMPLERS
    from gentool.core.diffusion.samplers import DenoisedTerm, sampler_plan
    from gentool.core.solvers.runner import run_steps

    spec, den = SAMPLERS[name], make_target("gmm-ring")
    x0 = 80 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    plan, _ = sampler_plan(name, tuple(edm_grid(8).tolist()), tuple(sorted(spec.resolve({}).items())), 64, F64,
                           x0.device)
    noise = torch.randn(plan.noise_draws, 64, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    f = DenoisedTerm(den)
    looped = run_steps(f, x0, plan, noise if plan.noise_draws else None, None)[0]
    assert torch.equal(plan.program(f, x0, noise.unbind(0) if plan.noise_draws else None), looped)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_straight_line_program_runs_non_finite_coefficients_as_the_step_loop(bad: float) -> None:
    """A coefficient that overflowed (inf, nan) is a literal of the generated program too: it gives the step
    loop's values, NaN for NaN, and the solve then names the step (`NonFiniteState`)."""
    from gentool.core.solvers.errors import NonFiniteState
    from gentool.core.solvers.plan import H, K, X, make_plan, stage, step
    from gentool.core.solvers.runner import run_steps, solve_plan

    specs = [step([stage(1.0, {X: 1.0})], {X: 0.5, K(0): 0.5}, keep=[K(0)]),
             step([stage(0.5, {X: 1.0})], {X: 0.25, K(0): bad, H(0): 0.75 - bad})]
    plan = make_plan(("bad", bad), specs, (1.0, 0.5, 0.0), 3, F64, "cpu")
    f = lambda t, x: 2 * x + t[:, None]  # noqa: E731
    x0 = torch.tensor([[1.0], [-2.0], [0.0]], dtype=F64)
    torch.testing.assert_close(plan.program(f, x0, None), run_steps(f, x0, plan, None, None)[0], rtol=0, atol=0,
                               equal_nan=True)
    with pytest.raises(NonFiniteState, match=r"step 1 \(t=0.5 -> 0\)"):
        solve_plan(f, x0, plan)


def test_a_plan_with_mixing_reads_the_draws_and_equals_the_plan_on_the_mixed_rows() -> None:
    """`make_plan(mixing=M)`: noise row g is sum_j M[g][j] z_j; the plan reads the z_j its steps need (a draw two
    rows of one combination share is one term, its weights summed; a step's draws need not follow the last
    step's) and gives the plan on the rows M z, eagerly, stepwise and by the compiled path's segments (rounding
    only)."""
    from gentool.core.solvers.compile import segment_body, segments
    from gentool.core.solvers.plan import K, X, Zk, make_plan, stage, step
    from gentool.core.solvers.runner import run_steps

    def by_segments(plan, f, x, noise):  # what a compiled plan runs, its segments' bodies left uncompiled
        hist = ()
        for seg in segments(plan):
            times = plan.times[seg.time_at:seg.time_at + seg.length * len(seg.shape[0])]
            states, hist = segment_body(seg.shape, seg.length)(f, x, hist, noise[seg.noise_rows], times, seg.coeffs)
            x = states[-1]
        return x

    specs = [step([stage(1.0, {X: 1.0, Zk(0): 0.5})], {X: 0.3, K(0): 0.7, Zk(0): 0.2, Zk(1): -0.4}),
             step([stage(0.5, {X: 1.0})], {X: 0.5, K(0): 0.5, Zk(0): 1.5})]
    mixing = ((1.0, 0.0, 0.0), (2.0, 0.5, 0.0), (0.25, 0.0, -1.0))  # rows (0, 1): step 0; row 2: step 1
    grid, f = (1.0, 0.5, 0.0), (lambda t, x: torch.sin(x) + t[:, None])
    mixed = make_plan("mixed", specs, grid, 3, F64, "cpu", noise_scale=2.0, mixing=mixing)
    plain = make_plan("plain", specs, grid, 3, F64, "cpu", noise_scale=2.0)
    assert mixed.noise_draws == 3 and [st.noise for st in mixed.steps] == [(0, 1), (0, 2)]
    assert len(mixed.steps[0].update.terms) == 4  # x, K(0), z_0 (from rows 0 and 1), z_1
    x0 = torch.tensor([[1.0], [-2.0], [0.5]], dtype=F64)
    z = torch.randn(3, 3, 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    rows = torch.einsum("gj,jbd->gbd", torch.tensor(mixing, dtype=F64), z)
    want = run_steps(f, x0, plain, rows, None)[0]
    for got in (mixed.program(f, x0, z.unbind(0)), run_steps(f, x0, mixed, z, None)[0], by_segments(mixed, f, x0, z)):
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)


def test_a_stage_input_is_a_register_that_later_combinations_read() -> None:
    """I(s), the input a stage evaluated the term on, is a register of the rest of its step (a noised state that
    a Heun step reuses): the same values eagerly, stepwise and by the compiled path's segments as written out;
    reading it before its stage is refused."""
    from gentool.core.solvers.compile import segment_body, segments
    from gentool.core.solvers.plan import I, K, X, Zk, make_plan, stage, step
    from gentool.core.solvers.runner import run_steps

    f, grid = (lambda t, x: torch.cos(x) * t[:, None]), (1.0, 0.5, 0.2)
    x0 = torch.tensor([[1.0], [-2.0]], dtype=F64)
    z = torch.randn(2, 2, 1, generator=torch.Generator().manual_seed(5), dtype=F64)
    reads = [step([stage(1.0, {X: 1.0, Zk(0): 0.3}), stage(0.7, {I(0): 0.4, K(0): 0.6})],
                  {I(0): 0.2, K(0): 0.5, K(1): 0.3, I(1): -0.1}) for _ in range(2)]
    out = [step([stage(1.0, {X: 1.0, Zk(0): 0.3}), stage(0.7, {X: 0.4, Zk(0): 0.12, K(0): 0.6})],
                {X: 0.2 - 0.04, Zk(0): 0.06 - 0.012, K(0): 0.5 - 0.06, K(1): 0.3}) for _ in range(2)]
    plan, written = (make_plan(key, specs, grid, 2, F64, "cpu") for key, specs in (("i", reads), ("w", out)))
    assert plan.steps[0].stages[1].inputs.kernels == 1 < written.steps[0].stages[1].inputs.kernels
    want = run_steps(f, x0, written, z, None)[0]
    hist, x = (), x0
    for seg in segments(plan):
        times = plan.times[seg.time_at:seg.time_at + seg.length * len(seg.shape[0])]
        states, hist = segment_body(seg.shape, seg.length)(f, x, hist, z[seg.noise_rows], times, seg.coeffs)
        x = states[-1]
    for got in (plan.program(f, x0, z.unbind(0)), run_steps(f, x0, plan, z, None)[0], x):
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match=r"I\(0\) read before it is computed"):
        make_plan("early", [step([stage(1.0, {I(0): 1.0})], {X: 1.0}), *reads[1:]], grid, 2, F64, "cpu")


class _NoCuda:
    """Stand-ins for torch.cuda's streams and graphs: capture runs the solve once, eagerly; replay does nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def wait_stream(self, other: object) -> None:
        pass

    def replay(self) -> None:
        pass


@pytest.mark.parametrize("name", ["euler-ancestral", "dpmpp-sde"])
def test_graph_capture_draws_noise_rows_from_its_own_buffer(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The CUDA-graph capture code run on the CPU with torch.cuda's streams and graphs stubbed out (no device
    here): the default noise reaches it as `NoiseRows`, which it draws from its own copy of their inputs (the
    captured solve equals the eager one), keyed apart from pre-drawn noise, and a call copies the next
    solve's inputs (another seed's keys) into that buffer. The replay itself is the `gpu` tests' part."""
    import contextlib

    from gentool.core.diffusion import SAMPLERS
    from gentool.core.diffusion.noise import BrownianPath, element_keys
    from gentool.core.diffusion.samplers import DenoisedTerm, default_noise, draw_all, noise_scale, sampler_plan
    from gentool.core.solvers import cuda_graph
    from gentool.core.solvers.runner import NoiseRows, run_steps

    for attr in ("Stream", "CUDAGraph"):
        monkeypatch.setattr(torch.cuda, attr, _NoCuda)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _NoCuda())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g: contextlib.nullcontext())
    spec, den, grid = SAMPLERS[name], make_target("gmm-ring"), tuple(edm_grid(6).tolist())
    x0 = 80 * torch.randn(32, 2, generator=torch.Generator().manual_seed(3))

    def rows(seed: int) -> NoiseRows:
        noise = default_noise(spec, x0, grid, seed, 0)
        source = noise.source if isinstance(noise, BrownianPath) else noise
        source.keys = element_keys(seed, 0, tuple(x0.shape), x0.device)  # the tensor keys a device holds
        return draw_all(noise, pairs, x0)

    plan, pairs = sampler_plan(name, grid, tuple(sorted(spec.resolve({}).items())), 32, x0.dtype, x0.device,
                               noise_scale(default_noise(spec, x0, grid, 0, 0)))
    f, drawn, second = DenoisedTerm(den), rows(1), rows(2)
    read = []  # the inputs each draw reads: in the graph, its own buffer
    first = NoiseRows(drawn.inputs, lambda inputs: read.append(inputs) or drawn.make(inputs), drawn.key)
    solve = cuda_graph.capture(f, x0, plan, first, False, None)
    assert torch.equal(solve.out, run_steps(f, x0, plan, first.rows(), None)[0])
    assert solve.rows is first and solve.static_noise is not first.inputs
    assert read[1] is solve.static_noise  # warm-up, then the captured draw
    solve(x0, second)
    assert torch.equal(solve.static_noise, second.inputs) and not torch.equal(second.inputs, first.inputs)
    scope = cuda_graph.cache.CacheScope(f)
    solver = cuda_graph.graphed_solver(f, x0, plan, first, False, scope, None, strict=True)
    assert solver is not cuda_graph.graphed_solver(f, x0, plan, first.rows(), False, scope, None, strict=True)
