"""Loop semantics beyond the closed forms: Accumulate-Subsample keeps history, schedules, from_previous, warm start,
seed independence of the new loops and families, truths, summaries against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gentool.core.errors import BadInput
from gentool.core.mad import MadConfig, Schedule, Simulation, describe, gaussian_truth
from gentool.core.mad.families import Context, make_family


def _record_fits(sim: Simulation) -> list[torch.Tensor]:
    """Make the simulation's family record every training set it is fitted on."""
    seen: list[torch.Tensor] = []
    fit = sim.family.fit

    def recording(x, gens, context=None):
        seen.append(x.clone())
        return fit(x, gens, context)

    sim.family.fit = recording
    return seen


def _values(x: torch.Tensor) -> set[float]:
    return {float(v) for v in x.reshape(-1)}


def test_accumulate_subsample_keeps_history() -> None:
    """Every fit draws `budget` points from the whole pool; a real point left out at generation t is drawn again
    later, and the pool holds n_real + T n_synth points. A reservoir forgets what it discards."""
    cfg = MadConfig(dim=1, loop="accumulate-subsample", budget=10, generations=12, n_real=10, n_synth=10, n_test=20)
    sim = Simulation(cfg, seed=0)
    real = _values(sim.groups[0].real)
    fits = _record_fits(sim)
    for _ in range(cfg.generations):
        sim.step()
    assert all(f.shape == (1, 10, 1) for f in fits)
    assert sim.groups[0].data.shape[1] == 10 + 12 * 10
    drawn = [_values(f) & real for f in fits]
    assert drawn[0] == real
    returned = [p for t in range(1, 12) for p in real - drawn[t] if any(p in later for later in drawn[t + 1:])]
    assert returned, "no real point left out at one generation was drawn again later"

    res = Simulation(MadConfig(dim=1, loop="reservoir", budget=10, generations=12, n_real=10, n_test=20), seed=0)
    res_fits = _record_fits(res)
    for _ in range(12):
        res.step()
    kept = [_values(f) & real for f in res_fits]
    assert all(kept[t + 1] <= kept[t] for t in range(11)), "a reservoir never brings a discarded point back"


def _rows_of(cfg: MadConfig, seed: int) -> dict[tuple[int, int], dict]:
    sim = Simulation(cfg, seed=seed)
    rows = []
    for _ in range(cfg.generations):
        rows += sim.step()[0]
    return {(r["seed"], r["generation"]): r for r in rows}


@pytest.mark.parametrize("kw", [
    {"family": "linear-regression", "dim": 3, "loop": "accumulate-subsample", "n_real": 12},
    {"family": "gaussian", "loop": "accumulate-subsample", "budget": 15, "truth": "isotropic:2"},
    {"family": "gaussian", "loop": "fresh", "n_real": "[30, 10]", "n_synth": "10 + t"},
    {"family": "gaussian", "loop": "fully-synthetic", "from_previous": 3},
    {"family": "kde", "data": "sklearn-moons", "loop": "accumulate-subsample", "bandwidth": 0.2},
])
def test_seed_numbers_do_not_depend_on_other_seeds(kw: dict) -> None:
    base = {"generations": 4, "n_real": 20, "n_test": 30, **kw}
    alone = _rows_of(MadConfig(seeds=1, **base), seed=5)
    together = _rows_of(MadConfig(seeds=3, **base), seed=4)
    for key, row in alone.items():
        assert together[key] == row


def test_schedules_set_each_generations_sizes() -> None:
    """First-generation size ≠ later real count; a growing synthetic sample; a real-fraction schedule."""
    cfg = MadConfig(dim=1, loop="fresh", generations=4, n_real="[50, 10]", n_synth="10 * t", n_test=20)
    assert cfg.plan.n_real == (50, 10, 10, 10) and cfg.plan.n_synth == (10, 20, 30, 40)
    rows = _rows_of(cfg, 0)
    assert [rows[(0, t)]["n_train"] for t in range(1, 5)] == [50, 10 + 10, 10 + 20, 10 + 30]
    frac = MadConfig(dim=1, loop="augment", generations=3, n_real=40, n_synth=20, real_fraction="[0, 0.5, 0.25]")
    assert [r["n_train"] for r in _rows_of(frac, 0).values()] == [40, 20, 20]
    assert Schedule.parse("1000 if t == 1 else max(10, 100 / t)", "n").ints(3) == [1000, 50, 33]
    for bad in ("10 * x", "__import__('os')", "[]", "t +"):
        with pytest.raises(BadInput, match="n_real"):
            MadConfig(n_real=bad)


def test_from_previous_trains_on_the_last_k_samples() -> None:
    cfg = MadConfig(dim=1, generations=5, n_real=10, n_synth=10, from_previous=3, n_test=20)
    assert [r["n_train"] for r in _rows_of(cfg, 0).values()] == [10, 10, 20, 30, 30]


def test_warm_start_fine_tunes_the_previous_model(gen: torch.Generator) -> None:
    """One training step from the previous weights stays within a few Adam steps of them; a cold start does not."""
    x = torch.randn(1, 64, 2, generator=gen)
    for name in ("diffusion", "monoflow"):
        fam = make_family(name, train_steps=1, steps=2, sampler="euler", warm_start=True)
        first = fam.fit(x, [torch.Generator().manual_seed(1)])
        warm = fam.fit(x, [torch.Generator().manual_seed(2)], Context(previous=first))
        cold = fam.fit(x, [torch.Generator().manual_seed(2)])
        net = (lambda m: m.model) if name == "diffusion" else (lambda m: m.generator)
        a, w, c = (torch.cat([p.detach().ravel() for p in net(m).parameters()]) for m in (first, warm, cold))
        assert (w - a).abs().max() < 0.02 < (c - a).abs().max(), name


def test_warm_start_resumes_bit_identically() -> None:
    """The previous model is part of the state: stop after generation 1, restore, continue = one clean run."""
    cfg = MadConfig(family="diffusion", data="sklearn-moons", warm_start=True, generations=3, n_real=32,
                    train_steps=3, steps=2, sampler="euler", metrics=(), n_test=32)
    clean = Simulation(cfg, seed=0)
    want = [clean.step()[0] for _ in range(3)]
    first = Simulation(cfg, seed=0)
    got = [first.step()[0]]
    resumed = Simulation(cfg, seed=0)
    resumed.load_state_dict(first.state_dict())
    got += [resumed.step()[0] for _ in range(2)]
    assert got == want


def test_truths(tmp_path) -> None:
    assert torch.equal(gaussian_truth(3, "isotropic:2")[1], 2 * torch.eye(3, dtype=torch.float64))
    assert torch.equal(gaussian_truth(2, "spectrum:1,4")[1], torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64)))
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    np.save(tmp_path / "cov.npy", cov)
    assert np.allclose(gaussian_truth(2, str(tmp_path / "cov.npy"))[1].numpy(), cov)
    np.savez(tmp_path / "t.npz", mean=np.array([1.0, -1.0]), cov=cov)
    assert gaussian_truth(2, str(tmp_path / "t.npz"))[0].tolist() == [1.0, -1.0]
    sim = Simulation(MadConfig(dim=2, truth=str(tmp_path / "t.npz"), seeds=1, n_real=4000, n_test=10), 0)
    assert np.allclose(np.cov(sim.groups[0].real[0].numpy().T), cov, atol=0.1)
    for kw in ({"dim": 3, "truth": "spectrum:1,2"}, {"truth": "wide"}, {"truth": "isotropic:-1"},
               {"data": "moons", "truth": "isotropic"}, {"truth": str(tmp_path / "missing.npy")}):
        with pytest.raises(BadInput):
            MadConfig(**kw)


def test_describe_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    v = rng.lognormal(size=101)
    got = describe(np.concatenate([v, [np.nan, np.inf]]))
    assert got["count"] == 101 and got["mean"] == pytest.approx(v.mean())
    assert got["std"] == pytest.approx(v.std(ddof=1)) and got["sem"] == pytest.approx(v.std(ddof=1) / math.sqrt(101))
    assert got["median"] == pytest.approx(np.median(v))
    for name, q in (("q05", 0.05), ("q25", 0.25), ("q75", 0.75), ("q95", 0.95)):
        assert got[name] == pytest.approx(np.quantile(v, q))


@pytest.mark.parametrize("kw", [
    {"budget": 10}, {"loop": "reservoir"}, {"loop": "accumulate", "from_previous": 2}, {"warm_start": True},
    {"family": "linear-regression", "n_synth": 50}, {"family": "linear-regression", "data": "moons"},
    {"data_noise": 0.1}, {"real_fraction": 0.5}, {"loop": "augment", "real_fraction": 1.2},
])
def test_bad_combinations(kw: dict) -> None:
    with pytest.raises(BadInput):
        MadConfig(**kw)
