"""Metrics of a sample cloud against reference data (via `gentool.core.metrics`) and scatter plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from gentool.core.data import mixture_preset
from gentool.core.io import atomic_savefig


def _has_metrics() -> bool:
    try:
        from gentool.core.metrics import sliced_w2  # noqa: F401
    except ImportError:
        return False
    return True


def sample_metrics(real: torch.Tensor, fake: torch.Tensor, *, data: str | None,
                   seed: int = 0) -> dict[str, Any]:
    """Sliced W2, MMD², precision/recall and (for `ring`/`grid`) mode coverage of `fake` against `real`."""
    if not _has_metrics():
        return {}
    from gentool.core.metrics import mmd2, mode_coverage, precision_recall, sliced_w2

    real, fake = real.detach().double().cpu(), fake.detach().double().cpu()
    out: dict[str, Any] = {"sliced_w2": sliced_w2(real, fake, generator=torch.Generator().manual_seed(seed)),
                           "mmd2": mmd2(real, fake)}
    out["precision"], out["recall"] = precision_recall(real, fake)
    if data in ("ring", "grid"):
        mix = mixture_preset(data)
        cov = mode_coverage(fake, mix.means, float(mix.stds[0]))
        out["modes_covered"], out["mode_fraction"] = cov["covered"], cov["fraction"]
        out["high_quality"] = cov["high_quality"]
    return out


def scatter_png(path: str | Path, real: torch.Tensor, fakes: list[tuple[str, torch.Tensor]]) -> None:
    """One panel per `(title, samples)` with the reference `real` in grey (first two coordinates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fakes), figsize=(3.2 * len(fakes), 3.2), squeeze=False)
    r = real.detach().cpu()
    for ax, (title, x) in zip(axes[0], fakes, strict=True):
        x = x.detach().cpu()
        if r.shape[1] == 1:
            ax.hist([r[:, 0].numpy(), x[:, 0].numpy()], bins=60, density=True, label=["data", "model"])
        else:
            ax.scatter(r[:, 0], r[:, 1], s=1, c="0.7")
            ax.scatter(x[:, 0], x[:, 1], s=1, c="tab:blue")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=80)
    plt.close(fig)
