"""`compute_metrics`: a named set of sample-based distances between a real and a generated sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from gentool.core.errors import choose
from gentool.core.metrics._checks import as_pair
from gentool.core.metrics.gaussian import frechet_distance, mean_cov
from gentool.core.metrics.kernels import energy_distance, mmd2
from gentool.core.metrics.knn import density_coverage, precision_recall
from gentool.core.metrics.wasserstein import exact_w2, sliced_w2

DEFAULT_METRICS = ("sliced_w2", "mmd2", "energy", "mean_error", "cov_error", "precision", "recall", "density",
                   "coverage")
PAIRED = {"precision": ("precision", "recall"), "recall": ("precision", "recall"),
          "density": ("density", "coverage"), "coverage": ("density", "coverage")}


def _mean_error(real: torch.Tensor, fake: torch.Tensor) -> float:
    """`|mean(real) - mean(fake)|_2`."""
    return float((real.mean(0) - fake.mean(0)).norm())


def _cov_error(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frobenius norm of the difference of the unbiased covariances."""
    return float((mean_cov(real)[1] - mean_cov(fake)[1]).norm())


Metric = Callable[[torch.Tensor, torch.Tensor], float]


def _single_metrics(generator: torch.Generator | None) -> dict[str, Metric]:
    """Metrics computed one name at a time."""
    return {"sliced_w2": lambda r, f: sliced_w2(r, f, generator=generator), "mmd2": mmd2,
            "energy": energy_distance, "mean_error": _mean_error, "cov_error": _cov_error,
            "exact_w2": exact_w2, "frechet": frechet_distance}


def compute_metrics(real: torch.Tensor, fake: torch.Tensor, names: Sequence[str] = DEFAULT_METRICS,
                    generator: torch.Generator | None = None, k: int = 5) -> dict[str, float]:
    """Compute each metric in `names` between `real (n, d)` and `fake (m, d)`.

    Allowed names: the defaults plus `exact_w2` (POT, small sets) and `frechet` (on raw coordinates).
    `precision`/`recall` and `density`/`coverage` are computed in pairs with k-NN parameter `k`.
    """
    real, fake = as_pair(real, fake, ("real", "fake"))
    single = _single_metrics(generator)
    allowed = (*single, *PAIRED)
    out: dict[str, float] = {}
    for name in names:
        choose("metric", name, allowed)
        if name in out:
            continue
        if name in PAIRED:
            fn = precision_recall if PAIRED[name][0] == "precision" else density_coverage
            out.update(zip(PAIRED[name], fn(real, fake, k=k), strict=True))
        else:
            out[name] = single[name](real, fake)
    return {name: out[name] for name in names}
