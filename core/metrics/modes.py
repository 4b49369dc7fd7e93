"""Mode coverage of samples against known mixture modes."""

from __future__ import annotations

import torch
from gentool.core.errors import BadInput, require
from gentool.core.metrics._checks import as_samples, cdist, row_chunks


def mode_coverage(x: torch.Tensor, means: torch.Tensor, std: float | torch.Tensor, n_std: float = 3.0,
                  min_fraction: float = 0.1) -> dict[str, object]:
    """Which of the K modes `means (K, d)` the samples `x (n, d)` cover.

    A sample is *high quality* when within `n_std * std_k` of its nearest mode k (`std` scalar or `(K,)`).
    A mode is *covered* when at least `min_fraction * n / K` samples are high quality and assigned to it.
    Returns `covered` (int), `fraction` (covered / K), `high_quality` (share of samples), `weights`
    (list: each mode's share of the high-quality samples, all zeros when there are none).
    """
    x = as_samples(x)
    mu = as_samples(means, "means").to(x.device, x.dtype)
    if mu.shape[1] != x.shape[1]:
        raise BadInput(f"samples {tuple(x.shape)} and mode means {tuple(mu.shape)} have different dimensions")
    k = mu.shape[0]
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).expand(k)
    require(bool((s > 0).all()) and n_std > 0, f"std and n_std must be > 0, got std={std}, n_std={n_std}")
    nearest = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    good = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)
    for rows in row_chunks(x.shape[0], k):
        dist, idx = cdist(x[rows], mu).min(dim=1)
        nearest[rows], good[rows] = idx, dist <= n_std * s[idx]
    counts = torch.bincount(nearest[good], minlength=k).double().cpu()
    covered = int((counts >= min_fraction * x.shape[0] / k).sum())
    weights = counts / counts.sum() if counts.sum() > 0 else counts
    return {"covered": covered, "fraction": covered / k, "high_quality": float(good.double().mean()),
            "weights": weights.tolist()}
