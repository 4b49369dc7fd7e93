"""Metrics of a MonoFlow sample cloud against reference data (via `gentool.core.metrics`)."""

from __future__ import annotations

from typing import Any

import torch
from gentool.core.data import mixture_preset
from gentool.core.metrics import mmd2, mode_coverage, precision_recall, sliced_w2


def sample_metrics(real: torch.Tensor, fake: torch.Tensor, *, data: str | None, seed: int = 0) -> dict[str, Any]:
    """Sliced W2, MMD², precision/recall and (for `ring`/`grid`) mode coverage of `fake` against `real`."""
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
