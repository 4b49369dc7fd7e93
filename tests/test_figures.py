"""Every figure kind, checked through matplotlib's objects: axis labels, legends wherever a panel has more than
one line, integer ticks on counting axes, exact zeros kept on log axes, the target under sample scatters, and
titles that say over how many seeds a statistic is taken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gentool.cli.main import app
from gentool.core import plots
from gentool.core.jobs.train import loss_figure
from matplotlib.ticker import MaxNLocator
from typer.testing import CliRunner


@pytest.fixture
def figures(monkeypatch) -> dict[str, Any]:
    """Figures by file name, captured when `plots.save` is called (before they are closed)."""
    seen: dict[str, Any] = {}
    original = plots.save

    def capture(fig: Any, path: str | Path, dpi: int = 110) -> Path:
        fig.canvas.draw()  # ticks and texts as they are rendered
        seen[Path(path).name] = fig
        return original(fig, path, dpi)

    monkeypatch.setattr(plots, "save", capture)
    return seen


def panels(fig: Any) -> list[Any]:
    """The axes that show something (not the blank ones of a partly filled grid, not image tiles)."""
    return [ax for ax in fig.axes if ax.axison]


def check_panel(ax: Any) -> None:
    assert ax.get_xlabel() and ax.get_ylabel(), f"axes {ax.get_title()!r} lacks a label"
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1:
        assert ax.get_legend() is not None, f"axes {ax.get_title()!r} has {len(handles)} lines and no legend"
    assert "mean over 1" not in ax.get_title()


def check_figure(fig: Any) -> None:
    assert panels(fig)
    for ax in panels(fig):
        check_panel(ax)


def integer_locator(ax: Any) -> bool:
    loc = ax.xaxis.get_major_locator()
    return isinstance(loc, MaxNLocator) and loc._integer and all(float(t).is_integer() for t in ax.get_xticks())


def test_sample_panels_draw_the_target_under_the_samples(tmp_path, figures) -> None:
    g = torch.Generator().manual_seed(0)
    target, x = torch.randn(500, 2, generator=g), torch.randn(300, 2, generator=g) + 1
    plots.sample_panels(tmp_path / "s2.png", [("a", x), ("b", x)], target)
    plots.sample_panels(tmp_path / "s1.png", [("a", x[:, :1])], target[:, :1], reference_label="data")
    plots.sample_panels(tmp_path / "s5.png", [("a", torch.randn(100, 5, generator=g))])
    for name in ("s2.png", "s1.png", "s5.png"):
        check_figure(figures[name])
    ax = figures["s2.png"].axes[0]
    ref, samples = ax.collections[:2]
    assert ref.get_label() == "target" and samples.get_label() == "samples" and ref.get_zorder() < samples.get_zorder()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["target", "samples", "target density"]
    assert len(ax.get_lines()) == 1 and any(c.get_zorder() > samples.get_zorder() for c in ax.collections[2:])
    assert [t.get_text() for t in figures["s1.png"].axes[0].get_legend().get_texts()] == ["data", "samples"]
    assert "of 5" in figures["s5.png"].axes[0].get_xlabel()
    plots.sample_panels(tmp_path / "img.png", [("digits", torch.rand(16, 64))])
    assert not panels(figures["img.png"])  # an image grid has no axes to label


def test_curves_label_ticks_and_keep_zeros_on_log_axes(tmp_path, figures) -> None:
    rows = [{"iter": i, "gap": 10.0 ** -i if i < 5 else 0.0, "objective": 1 + 1 / (i + 1)} for i in range(8)]
    plots.curves(tmp_path / "c.png", {"trace": rows}, "iter", ["objective", "gap"], log_keys=["gap"],
                 labels={"gap": "Frank-Wolfe gap"})
    fig = figures["c.png"]
    check_figure(fig)
    obj, gap = fig.axes[:2]
    assert all(integer_locator(ax) for ax in (obj, gap))
    assert gap.get_yscale() == "log" and gap.get_ylabel() == "Frank-Wolfe gap" and obj.get_xlabel() == "iteration"
    ys = gap.get_lines()[0].get_ydata()
    assert len(ys) == 8 and (ys > 0).all() and ys[-1] == pytest.approx(1e-5)  # zeros drawn a decade below 1e-4
    assert any("exact 0" in t.get_text() for t in gap.texts)
    assert obj.get_legend() is None  # one line, no legend


def test_negative_values_get_a_symlog_axis_that_resolves_small_values(tmp_path, figures) -> None:
    rows = [{"t": float(i), "mmd2": v} for i, v in enumerate([1.0, 1e-2, 1e-4, -1e-5, 2e-6])]
    plots.curves(tmp_path / "m.png", {"a": rows, "b": rows}, "t", ["mmd2"], log_keys=["mmd2"])
    ax = figures["m.png"].axes[0]
    check_panel(ax)
    assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == pytest.approx(2e-6)
    assert ax.get_xlabel() == "flow time t" and not integer_locator(ax)


def test_convergence_keeps_an_exact_zero_gap(tmp_path, figures) -> None:
    series = {"frank-wolfe": [{"iter": 0, "seconds": 0.0, "gap": 0.5}, {"iter": 1, "seconds": 0.1, "gap": 0.0}],
              "projected": [{"iter": i, "seconds": 0.1 * i, "gap": 2.0 ** -i} for i in range(6)]}
    plots.convergence(tmp_path / "cmp.png", series, "gap", {"iter": "iteration", "seconds": "time (s)"},
                      ylabel="Frank-Wolfe gap")
    fig = figures["cmp.png"]
    check_figure(fig)
    by_iter, by_time = fig.axes
    assert len(by_iter.get_lines()[0].get_ydata()) == 2  # the zero is drawn, not dropped
    assert integer_locator(by_iter) and by_time.get_xlabel() == "time (s)"


def test_bar_and_topk_paths(tmp_path, figures) -> None:
    plots.bar(tmp_path / "bar.png", np.array([0.5, 0.25, 0.25]))
    taus = np.geomspace(1e-2, 10, 20)
    paths = {m: np.random.default_rng(0).random((20, 4)) for m in ("sparse", "entropic")}
    plots.topk_paths(tmp_path / "topk.png", taus, paths, np.arange(4.0), [0, 1, 2], k=2, mark=1.0)
    check_figure(figures["bar.png"])
    assert integer_locator(figures["bar.png"].axes[0])
    check_figure(figures["topk.png"])


def test_train_loss_figure_names_its_mean(tmp_path, figures) -> None:
    loss_figure(tmp_path / "loss.png", [2.0 - 0.001 * i for i in range(500)])
    loss_figure(tmp_path / "short.png", [2.0, 1.9, 1.8])
    ax = figures["loss.png"].axes[0]
    check_panel(ax)
    assert integer_locator(ax) and "mean of blocks of 10 steps" in [t.get_text() for t in ax.get_legend().get_texts()]
    short = figures["short.png"].axes[0]
    check_panel(short)
    assert short.get_legend() is None and len(short.get_lines()) == 1  # no "mean over 1" line


@pytest.mark.slow
def test_job_figures(tmp_path, figures) -> None:
    """The figures the commands write, with the labels, legends, ticks and titles above."""
    runner = CliRunner()

    def run(*args: str) -> None:
        res = runner.invoke(app, [*args, "--no-progress", "--device", "cpu"])
        assert res.exit_code == 0, res.output

    run("optimize", "simplex", "--out", str(tmp_path / "s"))
    run("optimize", "compare", "--out", str(tmp_path / "c"))
    run("mad-loop", "--generations", "3", "--out", str(tmp_path / "m"))
    run("sample", "--target", "gmm-ring", "--steps", "4", "-n", "200", "--out", str(tmp_path / "x"))
    for name in ("objective.png", "distribution.png", "compare.png", "metrics.png", "snapshots.png",
                 "scatter.png"):
        check_figure(figures[name])
    assert any("exact 0" in t.get_text() for ax in figures["objective.png"].axes for t in ax.texts)
    mad = figures["metrics.png"]
    assert all(integer_locator(ax) for ax in panels(mad))
    assert all("one seed" in ax.get_title() for ax in panels(mad))
    assert figures["scatter.png"].axes[0].collections[0].get_label() == "target"


def test_report_figures_say_how_many_seeds_each_point_averages(tmp_path, figures) -> None:
    from gentool.core.experiments.report import plot_report

    rows = [{"lam": lam, "seed": s, "generation": g, "w2": 0.1 * g + 0.01 * s} for lam in (0.5, 1.0)
            for s in (0, 1, 2) for g in (1, 2, 3)]
    plot_report(tmp_path, ["lam"], rows)
    fig = figures["w2_vs_generation.png"]
    check_figure(fig)
    assert fig._suptitle.get_text() == "mean over 3 seeds per point"
    assert integer_locator(fig.axes[0]) and fig.axes[0].get_legend() is not None
    plot_report(tmp_path / "one", ["lam"], [r for r in rows if r["seed"] == 0])
    assert "one seed" in figures["w2_vs_generation.png"]._suptitle.get_text()
