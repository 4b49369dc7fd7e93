"""Per-generation metrics of a loop: cheap closed-form ones for every seed, sample-based ones for some.

Distribution families (fitted moments μ_t, Σ_t against the truth μ₀, Σ₀, or the held-out moments):
`w2_gauss` (Bures W2), `mean_error = ‖μ_t − μ₀‖`, `sq_mean_error = ‖μ_t − μ₀‖²`, `trace_cov = tr Σ_t`,
`logdet_cov = log det Σ_t`, the ratios to generation 0 `trace_ratio = tr Σ_t / tr Σ₀` and
`det_ratio = det Σ_t / det Σ₀` (Collapse-or-Thrive; both omitted when Σ₀ is singular), held-out `nll` where
the model has a density. Where Σ_t is singular (`regular_spectrum`; always when it is the covariance of n ≤ d
points) `det_ratio` is 0, and a seed's row leaves out `logdet_cov` (−∞) and, for the Gaussian family, whose Σ_t
is the model's, its infinite `nll`, so a loop in d ≥ n runs on with the metrics that stay finite. On mixture
data (`ring`, `grid`): `modes` (modes covered by the synthetic sample) and `mode_var` (mean over covered modes
of the per-coordinate variance of the points assigned to a mode; MAD Fig. 15).
Linear regression: `test_error = (ŵ − w*)ᵀ Σ_x (ŵ − w*)`.
"""

from __future__ import annotations

from typing import Any

import torch
from gentool.core.mad.closed_forms import bures_w2
from gentool.core.mad.reference import Reference
from gentool.core.metrics.gaussian import psd_log_det

KNN_METRICS = ("precision", "recall", "density", "coverage")
PerSeed = dict[str, list[float | None]]  # a metric's value for each seed; None: left out of that seed's row


def distribution_metrics(family: Any, model: Any, synth: torch.Tensor, ref: Reference) -> PerSeed:
    """The moment metrics of the module docstring, per seed (`family.moments`: the fitted Gaussian's, or the
    synthetic sample's)."""
    mean, cov = family.moments(model, synth)
    err = mean - ref.mean
    logdet, regular = psd_log_det(cov)
    logdet0, regular0 = ref.log_det
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    out = {"w2_gauss": bures_w2(mean, cov, ref.mean, ref.cov), "mean_error": err.norm(dim=-1),
           "sq_mean_error": (err**2).sum(-1), "trace_cov": trace, "trace_ratio": trace / torch.trace(ref.cov)}
    kept = {}
    if bool(regular0):  # undefined for data of singular covariance (digits: constant pixels)
        out.update(logdet_cov=logdet, det_ratio=torch.exp(logdet - logdet0))
        kept["logdet_cov"] = regular
    if family.has_density:
        out["nll"] = family.nll(model, ref.test)
        if getattr(family, "fitted_moments", False):  # a singular fitted Gaussian: +inf, left out
            kept["nll"] = regular | torch.isfinite(out["nll"])
    if ref.modes is not None:
        out.update(mode_metrics(synth, ref))
    return {k: per_seed(v, kept.get(k)) for k, v in out.items()}


def per_seed(values: torch.Tensor, kept: torch.Tensor | None = None) -> list[float | None]:
    """`values (S,)` as floats, None where `kept` is False."""
    flags = [True] * len(values) if kept is None else kept.tolist()
    return [v if k else None for v, k in zip(values.double().cpu().tolist(), flags, strict=True)]


def mode_metrics(synth: torch.Tensor, ref: Reference, n_std: float = 3.0) -> dict[str, torch.Tensor]:
    """`modes`: modes covered (`gentool.core.metrics.mode_coverage`: ≥ 10% of a fair share of the points lie within
    `n_std` mode std of it); `mode_var`: mean over covered modes of the per-coordinate variance of those points
    (0 when no mode is covered)."""
    from gentool.core.metrics import mode_coverage

    counts, variances = [], []
    for x in synth.double():
        covered = mode_coverage(x, ref.modes, ref.mode_std, n_std=n_std)["covered"]
        dist, nearest = torch.cdist(x, ref.modes.to(x.dtype)).min(1)
        good = dist <= n_std * ref.mode_std
        share = torch.bincount(nearest[good], minlength=len(ref.modes))
        kept = [k for k in range(len(ref.modes)) if share[k] >= max(2.0, 0.1 * len(x) / len(ref.modes))]
        var = [float(x[good & (nearest == k)].var(0).mean()) for k in kept]
        counts.append(float(covered))
        variances.append(sum(var) / len(var) if var else 0.0)
    return {"modes": torch.tensor(counts), "mode_var": torch.tensor(variances)}


def regression_metrics(model: Any, ref: Reference) -> dict[str, torch.Tensor]:
    from gentool.core.mad.regression import population_risk

    return {"test_error": population_risk(model, ref.coef, ref.cov)}


def cheap_metrics(family: Any, model: Any, synth: torch.Tensor, ref: Reference) -> PerSeed:
    """Vectorised per-seed metrics (module docstring)."""
    if ref.coef is not None:
        return {k: per_seed(v) for k, v in regression_metrics(model, ref).items()}
    return distribution_metrics(family, model, synth, ref)


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
