"""Per-generation metrics of a loop: cheap closed-form ones for every seed, sample-based ones for some."""

from __future__ import annotations

from typing import Any

import torch
from gentool.core.mad.closed_forms import bures_w2
from gentool.core.mad.reference import Reference

KNN_METRICS = ("precision", "recall", "density", "coverage")


def cheap_metrics(family: Any, model: Any, synth: torch.Tensor, ref: Reference) -> dict[str, list[float]]:
    """Vectorised per-seed metrics: Bures W2 to the reference Gaussian, mean error, trace and log det of the
    covariance (`family.moments`: the fitted Gaussian's, or the synthetic sample's), held-out NLL."""
    mean, cov = family.moments(model, synth)
    out = {"w2_gauss": bures_w2(mean, cov, ref.mean, ref.cov), "mean_error": (mean - ref.mean).norm(dim=-1),
           "trace_cov": torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1),
           "logdet_cov": torch.linalg.slogdet(cov)[1]}
    if family.has_density:
        out["nll"] = family.nll(model, ref.test)
    return {k: v.double().cpu().tolist() for k, v in out.items()}


def sample_metrics(synth: torch.Tensor, ref: Reference, names: tuple[str, ...], generator: torch.Generator
                   ) -> dict[str, float]:
    """Sample-based metrics of one seed's synthetic sample `(n, d)` against the held-out real data
    (Fréchet distance on the local feature net for digits)."""
    from gentool.core.metrics import compute_metrics, digits_features, frechet_distance

    fake = synth.float()
    k = min(5, fake.shape[0] - 1)
    on_features = "frechet" in names and ref.test_features is not None
    out = compute_metrics(ref.test.float(), fake, names=[n for n in names if not (on_features and n == "frechet")],
                          generator=generator, k=k)
    if on_features:
        out["frechet"] = frechet_distance(ref.test_features, digits_features(fake))
    return {k: float(v) for k, v in out.items()}


def metric_names(chosen: tuple[str, ...] | None, default: tuple[str, ...], n_synth: int) -> tuple[str, ...]:
    """The sample metrics to compute (k-NN metrics need at least 3 points)."""
    names = chosen if chosen is not None else default
    return tuple(n for n in names if n not in KNN_METRICS or n_synth >= 3)
