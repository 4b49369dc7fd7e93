"""Progress lines (`gentool.cli._progress`) and the phases the core reports through its callback."""

from __future__ import annotations

import io
import re

import pytest
import torch
from gentool.cli._progress import ProgressLine, fmt_duration, fmt_rate, format_line
from gentool.cli.main import app
from gentool.core.diffusion.targets import MixtureTarget, make_target, reference_flow, reference_segments
from gentool.core.progress import Reports, attach, in_phase, one_step
from typer.testing import CliRunner


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_has_every_part_within_80_columns() -> None:
    line = format_line("train", 250, 1000, 10.0, 0, {"loss": 0.123456, "lr": 1e-3}, width=80)
    assert len(line) <= 80
    assert line.startswith("train  [")
    assert "250/1000" in line and "25/s" in line and "eta 0:30" in line and "loss=0.1235" in line
    assert "lr=" not in line  # one key metric
    bar = re.search(r"\[([#.]+)\]", line).group(1)
    assert bar.count("#") == int(len(bar) * 0.25)  # the bar's fraction is done / total


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_long_descriptions_and_metrics_are_cut_to_the_width(width: int) -> None:
    line = format_line("mad-loop: sliced Wasserstein-2 against the closed form", 123456, 10**7, 3.0, 0,
                       {"a_very_long_metric_name": 123456.789}, width=width)
    assert len(line) <= width
    assert "123456/10000000" in line


def test_rate_and_eta_count_from_the_units_done_when_the_phase_began() -> None:
    line = format_line("train", 60, 100, 10.0, done_at_start=50, width=80)  # resumed at 50: 1 unit/s
    assert "1/s" in line and "eta 0:40" in line
    assert "2.5s/it" in format_line("x", 4, 10, 10.0, width=80)


def test_unknown_total_shows_count_and_elapsed_without_bar() -> None:
    line = format_line("sweep: waiting for jobs", 3, 0, 65.0, width=80)
    assert "[" not in line and " 3 " in line + " " and "1:05" in line


def test_durations() -> None:
    assert fmt_duration(5) == "0:05" and fmt_duration(3725) == "1:02:05"
    assert fmt_rate(0.0) == "" and fmt_rate(2.0) == "2/s"


def test_plain_lines_one_per_phase_end_and_throttled(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out, clock = io.StringIO(), Clock()
    line = ProgressLine("sample", out, tty=False, plain_every=5.0, clock=clock)
    for i in range(1, 11):  # 10 units over 10 s: written at the first, after 5 s, and at the end
        clock.now = float(i)
        line(i, 10, seconds=0.5)
    ref = in_phase(line, "reference solve")
    for i in range(4):
        clock.now += 1.0
        ref(i, 3, sigma=80.0 / (i + 1))
    line.close()
    lines = out.getvalue().splitlines()
    assert all(len(x) <= 80 for x in lines)
    assert [x.split("  ")[0] for x in lines] == ["sample"] * 3 + ["sample: reference solve"] * 2
    assert "10/10" in lines[2] and "3/3" in lines[-1] and "sigma=20" in lines[-1]


def test_a_phase_left_unfinished_ends_with_its_latest_state() -> None:
    out, clock = io.StringIO(), Clock()
    line = ProgressLine("sweep", out, tty=False, clock=clock)
    line(0, 4)
    clock.now = 1.0
    line(2, 4)  # throttled: not written yet
    line(0, 0, phase="waiting for jobs")
    line.close()
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("sweep  [") and "2/4" in lines[1]
    assert lines[2].startswith("sweep: waiting for jobs")


def test_terminal_redraws_in_place_and_ends_each_phase_with_a_newline() -> None:
    out, clock = io.StringIO(), Clock()
    line = ProgressLine("train", out, tty=True, width=81, clock=clock)
    for i in range(1, 4):
        clock.now = float(i)
        line(i, 3, loss=1.0 / i)
    with one_step(line, "figures"):
        clock.now += 1.0
    line.close()
    text = out.getvalue()
    assert text.count("\n") == 2  # one finished line per phase
    assert all(len(x.strip("\r").replace("\x1b[K", "")) <= 80 for x in text.replace("\n", "\r").split("\r"))
    assert "train: figures" in text.splitlines()[-1]


def test_attach_reaches_only_jobs_that_report() -> None:
    seen = []

    class Reporting(Reports):
        pass

    job, other = Reporting(), object()
    attach(job, lambda d, t, **i: seen.append((d, t, i)))
    attach(other, print)
    with one_step(job.progress, "figure"):
        pass
    assert seen == [(0, 1, {"phase": "figure"}), (1, 1, {"phase": "figure"})]
    assert not hasattr(other, "progress")


def test_reference_solve_reports_segments_down_to_sigma1() -> None:
    target = make_target("gmm-ring")
    x0 = 80 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    seen: list[tuple[int, int, float]] = []
    ref = reference_flow(target, x0, 80.0, progress=lambda d, t, **i: seen.append((d, t, i["sigma"])))
    n = len(reference_segments(80.0, 0.0)) - 1
    assert [(d, t) for d, t, _ in seen] == [(i, n) for i in range(n + 1)]
    sigmas = [s for *_, s in seen]
    assert sigmas[0] == 80.0 and sigmas[-1] == 0.0 and sigmas == sorted(sigmas, reverse=True)
    assert bool(torch.isfinite(ref).all())


def test_reference_flow_matches_scipy_dop853() -> None:
    from scipy.integrate import solve_ivp

    target = make_target("gmm-random", dim=3)
    x0 = 80 * torch.randn(8, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def rhs(sigma: float, y):
        xs = torch.from_numpy(y).reshape(x0.shape)
        return target.direction(xs, torch.tensor(sigma, dtype=torch.float64)).reshape(-1).numpy()

    peer = solve_ivp(rhs, (80.0, 0.0), x0.reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1]
    torch.testing.assert_close(reference_flow(target, x0, 80.0), torch.from_numpy(peer).reshape(x0.shape),
                               rtol=0, atol=1e-7)


def test_direction_is_the_definition_in_every_layout() -> None:
    target: MixtureTarget = make_target("gmm-random", dim=4)
    x = 3 * torch.randn(50, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sigma = torch.rand(50, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.05
    torch.testing.assert_close(target.direction(x, sigma), (x - target(x, sigma)) / sigma[:, None])


def test_sample_shows_every_phase_at_80_columns(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    res = CliRunner().invoke(app, ["sample", "--target", "gmm-ring", "--steps", "5", "-n", "200", "--out",
                                   str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("sample")]
    phases = [x.split("  ")[0] for x in lines if "[" in x]
    for phase in ("sample", "sample: reference solve", "sample: sliced W2, MMD vs", "sample: figure"):
        assert any(p.startswith(phase) for p in phases), (phase, phases)
    assert all(len(x) <= 80 for x in res.output.splitlines() if "[" in x)


def test_simplex_progress_counts_iterations_not_chunks(tmp_path, monkeypatch) -> None:
    """An optimiser that converges after a few iterations shows those iterations (k/k), not every chunk of
    the allowed maximum as done; the key metric is the latest gap, not a mean over the chunk."""
    monkeypatch.setenv("COLUMNS", "80")
    res = CliRunner().invoke(app, ["optimize", "simplex", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    iters = int(re.search(r"iters=(\d+)", res.output).group(1))
    bar = [x for x in res.output.splitlines() if x.startswith("optimize simplex  [")][-1]
    assert f"  {iters}/{iters}  " in bar and "gap=" in bar
    res = CliRunner().invoke(app, ["optimize", "compare", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    counts = [tuple(map(int, m)) for m in re.findall(r"  (\d+)/(\d+)  ", res.output)]
    assert all(d <= t for d, t in counts) and counts[-1][0] == counts[-1][1]


def test_a_short_metric_is_kept_next_to_a_full_bar() -> None:
    line = format_line("sample: reference solve", 5, 5, 33.0, 0, {"sigma": 0.0}, width=80)
    assert line.endswith("sigma=0") and "5/5" in line and len(line) <= 80
