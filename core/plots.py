"""Every gentool figure, drawn with matplotlib's Agg backend and saved atomically (one module for all plots).

Samples are drawn by kind: 1-D → histogram, 2-D (or more) → scatter of the first two coordinates (the
reference in grey), square images (64 = 8×8 digits, any `side²` with `image_side`) → a tile grid. Image samples are
also written as pixels: `image_grid_png` (one mosaic) and `image_pngs` (one file per image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gentool.core.io import atomic_savefig, atomic_write_bytes


def subplots(rows: int = 1, cols: int = 1, *, width: float = 4.2, height: float = 3.2) -> tuple[Any, Any]:
    """A figure with a `rows × cols` array of axes (always 2-D), on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


def save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save atomically and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = atomic_savefig(fig, path, dpi=dpi)
    plt.close(fig)
    return out


def as_numpy(x: Any) -> np.ndarray:
    """Tensors (any device) and arrays as a float numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def image_side(dim: int) -> int | None:
    """The side of a square image with `dim` pixels (None when `dim` is not a square > 4)."""
    side = math.isqrt(dim)
    return side if side * side == dim and dim > 4 else None


def image_grid(ax: Any, x: Any, *, max_tiles: int = 100, low: float = -1.0, high: float = 1.0) -> None:
    """Up to `max_tiles` flattened square images as one tiled picture (values clipped to [low, high])."""
    x = as_numpy(x)
    side = image_side(x.shape[1]) or 1
    k = max(1, min(int(math.isqrt(max_tiles)), int(math.isqrt(len(x)))))
    tiles = np.clip(x[: k * k], low, high).reshape(k, k, side, side).transpose(0, 2, 1, 3)
    ax.imshow(tiles.reshape(side * k, side * k), cmap="gray_r", vmin=low, vmax=high)
    ax.axis("off")


# Axis labels (with units) of the row fields that figures put on their x axes; other names are shown as they are.
AXIS_LABELS = {"generation": "generation", "iter": "iteration", "step": "optimisation step", "t": "flow time t",
               "nfe": "function evaluations (NFE)", "seconds": "time (s)", "sigma": "noise level σ"}
# x fields that count something: integer ticks only (no half generations)
INTEGER_AXES = {"generation", "iter", "step", "nfe", "steps", "epoch"}


def label_axes(ax: Any, x: str, y: str, labels: Mapping[str, str] | None = None) -> None:
    """x and y labels: `labels[name]`, else `AXIS_LABELS[name]`, else the name."""
    names = {**AXIS_LABELS, **(labels or {})}
    ax.set_xlabel(names.get(x, x))
    ax.set_ylabel(names.get(y, y))


def integer_ticks(ax: Any) -> None:
    """Ticks of the x axis at integers only (generations, iterations, steps)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_if_several(ax: Any) -> None:
    """A legend when the axes hold more than one labelled artist (a single line needs none)."""
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1:
        ax.legend(fontsize=7)


def log_floor(values: Sequence[float]) -> float | None:
    """Where zeros are drawn on a log axis: a decade below the smallest positive value (1e-16 when none is
    positive); None when no value is zero."""
    if all(v != 0 for v in values):
        return None
    pos = [v for v in values if v > 0]
    return min(pos) / 10 if pos else 1e-16


def set_log_y(ax: Any, values: Sequence[float], floor: float | None) -> None:
    """A log y axis for `values`: zeros (drawn at `floor`, see `log_floor`) are marked by a dotted line and a note;
    with negative values a symmetric log whose linear range is the smallest nonzero magnitude."""
    if any(v < 0 for v in values):
        small = min((abs(v) for v in values if v != 0), default=1.0)
        ax.set_yscale("symlog", linthresh=small)
        return
    ax.set_yscale("log")
    if floor is not None:
        ax.axhline(floor, color="0.5", ls=":", lw=0.8)
        ax.text(0.02, 0.02, f"exact 0 drawn at {floor:.1e}", transform=ax.transAxes, fontsize=7, color="0.35")


def _floored(ys: Sequence[float], floor: float | None) -> list[float]:
    return [floor if floor is not None and y == 0 else y for y in ys]


def draw_samples(ax: Any, x: Any, reference: Any | None = None, title: str = "",
                 reference_label: str = "target") -> None:
    """Histogram (1-D), image grid (square images) or scatter (first two coordinates) of `x`, with the
    `reference` (target samples, data) drawn under it in grey and a legend naming both."""
    x = as_numpy(x)
    if x.shape[1] == 1:
        data = [x[:, 0]] if reference is None else [as_numpy(reference)[:, 0], x[:, 0]]
        ax.hist(data, bins=60, density=True, label=[reference_label, "samples"][-len(data):])
        ax.set_xlabel("x (data units)")
        ax.set_ylabel("density")
    elif image_side(x.shape[1]) and x.shape[1] != 2:
        image_grid(ax, x)
    else:
        if reference is not None:
            ref = as_numpy(reference)
            ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.75", label=reference_label, zorder=1)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.6, label="samples", zorder=2)
        if reference is not None and len(ref) >= 200:
            density_contours(ax, ref[:, :2], f"{reference_label} density")
        of = f" of {x.shape[1]}" if x.shape[1] > 2 else ""
        ax.set_xlabel(f"x₁ (coordinate 1{of}, data units)")
        ax.set_ylabel(f"x₂ (coordinate 2{of}, data units)")
    legend_if_several(ax)
    ax.set_title(title, fontsize=9)


def density_contours(ax: Any, points: np.ndarray, label: str, bins: int = 60) -> None:
    """Contour lines (on top, so dense samples cannot hide them) of the density of `points (n, 2)`: a 2-D
    histogram smoothed by a Gaussian of one bin, at 5 %, 20 % and 50 % of its peak."""
    from scipy.ndimage import gaussian_filter

    h, xe, ye = np.histogram2d(points[:, 0], points[:, 1], bins=bins, density=True)
    h = gaussian_filter(h, 1.0)
    if h.max() <= 0:
        return
    ax.contour((xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2, h.T, levels=h.max() * np.array([0.05, 0.2, 0.5]),
               colors="k", linewidths=0.6, zorder=3)
    ax.plot([], [], color="k", lw=0.6, label=label)  # the contours' legend entry


def sample_panels(path: str | Path, panels: Sequence[tuple[str, Any]], reference: Any | None = None,
                  reference_label: str = "target") -> Path:
    """One panel per `(title, samples)`, each over the same reference."""
    fig, axes = subplots(1, max(1, len(panels)), width=3.4, height=3.4)
    for ax, (title, x) in zip(axes[0], panels, strict=False):
        draw_samples(ax, x, reference, title, reference_label)
    return save(fig, path)


def curves(path: str | Path, series: Mapping[str, Sequence[Mapping[str, Any]]], x: str,
           keys: Sequence[str], *, log_keys: Sequence[str] = (), overlay: Mapping[str, Sequence[float]] | None = None,
           overlay_label: str = "closed form", overlay_labels: Mapping[str, str] | None = None,
           dashed: Sequence[str] = (), log_x: bool = False, markers: bool = False,
           labels: Mapping[str, str] | None = None, integer_x: bool | None = None, title: str = "",
           titles: Mapping[str, str] | None = None) -> Path:
    """One panel per key: `series[label]` rows plotted as `key` vs `x` (labels in `dashed` drawn dashed, e.g.
    exact solutions); rows with `key_low`/`key_high` get a band. `overlay[key]` (values at x = 1, 2, ...) is
    drawn dashed and named by `overlay_labels[key]` (default `overlay_label`); keys in `log_keys` (or whose
    values span more than three decades) get a log y-axis (zeros drawn at a floor with a note, symmetric-log
    when a value is negative, `set_log_y`); `log_x` puts x on a log axis; `markers` marks every point. Axis
    labels come from `labels` (else `AXIS_LABELS`), integer x ticks when `integer_x` (default: x counts
    something, `INTEGER_AXES`), a legend when a panel has more than one line, `title` over all panels and
    `titles[key]` over one (say what is averaged, over how many seeds)."""
    cols = min(3, max(1, len(keys)))
    fig, axes = subplots(-(-len(keys) // cols) or 1, cols)
    for ax, key in zip(axes.flat, keys, strict=False):
        _curve_panel(ax, series, x, key, log=key in log_keys, dashed=dashed, markers=markers)
        if overlay and key in overlay:
            label_ = (overlay_labels or {}).get(key, overlay_label)
            ax.plot(np.arange(1, len(overlay[key]) + 1), overlay[key], "k--", label=label_)
        if log_x:
            ax.set_xscale("log")
        elif integer_x or (integer_x is None and x in INTEGER_AXES):
            integer_ticks(ax)
        ax.set_title((titles or {}).get(key, key), fontsize=9)
        label_axes(ax, x, key, labels)
        legend_if_several(ax)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path)


def _curve_panel(ax: Any, series: Mapping[str, Sequence[Mapping[str, Any]]], x: str, key: str, *, log: bool,
                 dashed: Sequence[str], markers: bool) -> None:
    """The lines (and bands) of `key` against `x` for every series, on a log axis when asked or when the values
    span decades."""
    lines = []
    for label, rows in series.items():
        pts = [r for r in rows if _finite(r.get(key)) and _finite(r.get(x))]
        lines.append((label, pts, [r[key] for r in pts]))
    values = [v for *_, ys in lines for v in ys]
    log = bool(values) and (log or _spans_decades(values))
    floor = log_floor(values) if log else None
    for label, pts, ys in lines:
        xs = [r[x] for r in pts]
        ax.plot(xs, _floored(ys, floor), "--" if label in dashed else "-", label=label,
                marker="o" if markers else None, ms=3)
        if pts and f"{key}_low" in pts[0]:
            low, high = [r[f"{key}_low"] for r in pts], [r[f"{key}_high"] for r in pts]
            ax.fill_between(xs, _floored(low, floor), _floored(high, floor), alpha=0.25)
    if log:
        set_log_y(ax, values, floor)


def convergence(path: str | Path, series: Mapping[str, Sequence[Mapping[str, Any]]], key: str,
                xs: Mapping[str, str], ylabel: str | None = None) -> Path:
    """One panel per x in `xs` (row field -> axis label): `key` (log scale; an exact 0, e.g. the Frank-Wolfe
    gap at the optimum, drawn at a floor with a note) against it, one curve per label of `series` (e.g. the gap
    of each method against iterations and against seconds)."""
    fig, axes = subplots(1, len(xs), width=4.8)
    values = [r[key] for rows in series.values() for r in rows if _finite(r.get(key)) and r[key] >= 0]
    floor = log_floor(values)
    for ax, (x, label) in zip(axes.flat, xs.items(), strict=False):
        for name, rows in series.items():
            pts = [r for r in rows if _finite(r.get(key)) and _finite(r.get(x)) and r[key] >= 0]
            ax.plot([r[x] for r in pts], _floored([r[key] for r in pts], floor), label=name)
        set_log_y(ax, values, floor)
        if x in INTEGER_AXES:
            integer_ticks(ax)
        label_axes(ax, x, key, {x: label, key: ylabel or key})
        legend_if_several(ax)
    return save(fig, path)


def bar(path: str | Path, values: Any, xlabel: str = "coordinate i", ylabel: str = "probability p_i") -> Path:
    """A bar chart of a vector (integer ticks: one bar per coordinate)."""
    fig, axes = subplots(width=4.5)
    v = as_numpy(values).ravel()
    axes[0, 0].bar(range(v.size), v)
    axes[0, 0].set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    integer_ticks(axes[0, 0])
    return save(fig, path)


def topk_paths(path: str | Path, taus: Any, paths: Mapping[str, Any], x: Any, entries: Sequence[int],
               k: int, mark: float | None = None) -> Path:
    """One panel per entry i of `entries`: p_i against τ (log axis), one line per Top-k map (each its own line
    style, so maps that coincide stay visible); `paths[map]` is an array (len(taus), n) of the map's p at each
    τ, `x` the scores (shown in the panel titles), `mark` a τ drawn as a dotted vertical line."""
    cols = min(4, max(1, len(entries)))
    fig, axes = subplots(-(-len(entries) // cols) or 1, cols, width=3.4, height=2.8)
    taus, xs = as_numpy(taus).ravel(), as_numpy(x).ravel()
    styles = ("-", "--", "-.", ":")
    for ax, i in zip(axes.flat, entries, strict=False):
        for j, (name, p) in enumerate(paths.items()):
            ax.plot(taus, as_numpy(p)[:, i], styles[j % len(styles)], label=name, lw=1.6)
        if mark is not None:
            ax.axvline(mark, color="0.6", ls=":", lw=1, label=f"τ = {mark:g}")
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"entry {i} (x = {xs[i]:.4g}), k = {k}", fontsize=9)
        ax.set_xlabel("temperature τ (log scale)")
        ax.set_ylabel(f"p_{i} (probability mass)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(entries):]:
        ax.axis("off")
    return save(fig, path)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _spans_decades(values: Sequence[float], decades: float = 3.0) -> bool:
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and len(pos) > 1 and math.log10(max(pos) / min(pos)) > decades


# ---- image files: samples written as pixels (PNG), not as plots ------------------------------------------------

def to_pixels(images: Any, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Images `(n, C, H, W)` (C = 1 or 3) with values in `[low, high]` as uint8 `(n, H, W, C)`:
    `round(255 (x - low) / (high - low))`, clipped."""
    x = as_numpy(images)
    scaled = np.clip((x - low) / (high - low), 0.0, 1.0) * 255
    return np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1)


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG encoding of uint8 pixels `(H, W, C)`, C = 1 (grey) or 3 (RGB)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue()


def tile_pixels(pixels: np.ndarray, max_tiles: int = 100, pad: int = 1, min_side: int = 320) -> np.ndarray:
    """Up to `max_tiles` images `(n, H, W, C)` as a square mosaic with `pad` grey pixels between tiles, enlarged
    by an integer factor (nearest neighbour) until its side reaches `min_side`."""
    k = max(1, min(math.isqrt(max_tiles), math.isqrt(len(pixels))))
    n, h, w, c = pixels[: k * k].shape
    canvas = np.full((k * (h + pad) + pad, k * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, k)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = \
            pixels[i]
    factor = max(1, -(-min_side // canvas.shape[0]))
    return canvas.repeat(factor, axis=0).repeat(factor, axis=1)


def image_grid_png(path: str | Path, images: Any, max_tiles: int = 100) -> Path:
    """The first `max_tiles` images `(n, C, H, W)` in `[-1, 1]` as one PNG mosaic, written atomically."""
    return atomic_write_bytes(path, png_bytes(tile_pixels(to_pixels(images), max_tiles)))


def image_pngs(directory: str | Path, images: Any, first: int = 0) -> list[Path]:
    """One PNG per image `(n, C, H, W)` in `[-1, 1]`, named `{first + i:06d}.png` in `directory` (atomic writes)."""
    return [atomic_write_bytes(Path(directory) / f"{first + i:06d}.png", png_bytes(p))
            for i, p in enumerate(to_pixels(images))]


def w2_bound_figure(path: str | Path, sigmas: Any, bound: Any, eps: Any, eps_se: Any, w2_sigmas: Any,
                    measured: Mapping[str, Any], title: str = "") -> Path:
    """Left: the W2 upper bound B(σ) and the `measured` curves (label -> W2(p_σ, q_σ) at `w2_sigmas`) against σ
    (log-log); right: the RMS score error ε(σ) of the model on its own PF-ODE marginals with its ±2 s.e. band."""
    sig, eps, se = as_numpy(sigmas), as_numpy(eps), as_numpy(eps_se)
    fig, axes = subplots(1, 2, width=4.8)
    ax = axes[0, 0]
    ax.plot(sig, as_numpy(bound), label="upper bound B(σ)")
    for label, w2 in measured.items():
        ax.plot(as_numpy(w2_sigmas), as_numpy(w2), "o--", ms=3, label=label)
    ax.set(xscale="log", yscale="log", xlabel="noise level σ (data units)", ylabel="W2(p_σ, q_σ) (data units)",
           title=title)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.plot(sig, eps, label="ε(σ), Monte Carlo")
    ax.fill_between(sig, np.maximum(eps - 2 * se, eps * 1e-3), eps + 2 * se, alpha=0.25, label="± 2 s.e.")
    ax.set(xscale="log", yscale="log", xlabel="noise level σ (data units)",
           ylabel="RMS score error ε(σ) (1 / data units)", title="score error on the model's marginals")
    ax.legend(fontsize=7)
    return save(fig, path)


def bound_over_training(path: str | Path, rows: Sequence[Mapping[str, Any]], method: str, title: str = "") -> Path:
    """Both sides of the W2 bound against the training step. Left: `w2_bound` ± `w2_bound_se` and the measured
    `w2` ± `w2_se` of every row (log y: the bound may be many decades above; points with a non-finite bound are
    left out); right: the measured side alone on a linear axis, with `w2_pot_floor` (the estimator's reading
    for a perfect model) where given. Integer x ticks."""
    steps = np.array([r["step"] for r in rows], dtype=float)

    def column(key: str, missing: float) -> np.ndarray:
        return np.array([missing if r.get(key) is None else r[key] for r in rows], dtype=float)

    fig, axes = subplots(1, 2, width=4.8)
    measured = f"measured W2 ({method}) ± s.e."
    ax = axes[0, 0]
    for key, label, style in (("w2_bound", "upper bound B(σ_min) ± s.e.", "o-"), ("w2", measured, "s--")):
        y, se = column(key, np.nan), column(f"{key}_se", 0.0)
        ok = np.isfinite(y)
        ax.errorbar(steps[ok], y[ok], yerr=se[ok], fmt=style, ms=4, capsize=3, label=label)
    ax.set(yscale="log", xlabel="training step (optimisation steps)", ylabel="W2(p_σmin, q_σmin) (data units)",
           title=title)
    ax = axes[0, 1]
    ax.errorbar(steps, column("w2", np.nan), yerr=column("w2_se", 0.0), fmt="s--", ms=4, capsize=3,
                color="C1", label=measured)
    floor = column("w2_pot_floor", np.nan)
    if np.isfinite(floor).all():
        ax.plot(steps, floor, ":", color="gray", label="POT estimator floor (two exact samples)")
    ax.set(xlabel="training step (optimisation steps)", ylabel="measured W2 (data units)",
           title="the measured side")
    for ax in axes[0]:
        integer_ticks(ax)
        ax.legend(fontsize=7)
    return save(fig, path)
