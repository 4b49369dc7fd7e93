"""Figures of a loop run: metric vs generation (mean ± 95% band over seeds, closed form for Gaussians)
and snapshots (scatter for 2-D data, image grid for digits) of selected generations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gentool.core.io import atomic_savefig


def _figure(*args: Any, **kwargs: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def plot_metric_curves(summary: Sequence[Mapping[str, Any]], path: str | Path,
                       closed_form: Mapping[str, Sequence[float]] | None = None) -> Path:
    """One panel per metric: mean over seeds vs generation with its 95% CI band; `closed_form[metric]`
    (values at generations 1..T) drawn dashed."""
    metrics = sorted({s["metric"] for s in summary} - {"n_train"})
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = _figure(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, metrics, strict=False):
        part = [s for s in summary if s["metric"] == name]
        t = np.array([s["generation"] for s in part])
        ax.plot(t, [s["mean"] for s in part], label="mean")
        lo, hi = [s["ci95_low"] for s in part], [s["ci95_high"] for s in part]
        ax.fill_between(t, lo, hi, alpha=0.3, label="95% CI")
        if closed_form and name in closed_form:
            ax.plot(np.arange(1, len(closed_form[name]) + 1), closed_form[name], "k--", label="closed form")
        ax.set_title(name)
        ax.set_xlabel("generation")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=110)


def plot_snapshots(samples: Mapping[int, np.ndarray], path: str | Path, reference: np.ndarray | None = None
                   ) -> Path:
    """Scatter (2-D) or an 8x8-image grid (64-D digits) of the synthetic sample at each chosen generation."""
    gens = sorted(samples)
    fig, axes = _figure(1, len(gens), figsize=(3.2 * len(gens), 3.2), squeeze=False)
    for ax, t in zip(axes[0], gens, strict=True):
        x = np.asarray(samples[t])
        if x.shape[1] == 64:
            k = min(8, int(np.sqrt(len(x))))
            tiles = x[: k * k].reshape(k, k, 8, 8).transpose(0, 2, 1, 3).reshape(8 * k, 8 * k)
            ax.imshow(tiles, cmap="gray_r")
            ax.axis("off")
        else:
            if reference is not None:
                ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.8")
            ax.scatter(x[:, 0], x[:, -1], s=3)
        ax.set_title(f"generation {t}")
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=110)
