"""Input validation and chunked pairwise distances shared by the metrics."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from gentool.core.errors import BadInput

CHUNK_ELEMENTS = 1 << 22  # entries of one distance block (32 MiB in float64)


def as_samples(x: torch.Tensor | np.ndarray, name: str = "x") -> torch.Tensor:
    """Return `x` as a finite floating `(n, d)` tensor with n >= 1, else raise `BadInput` naming its shape."""
    t = torch.as_tensor(x)
    if t.dim() != 2 or t.shape[0] < 1:
        raise BadInput(f"{name} must be a non-empty (n, d) sample array, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    if not bool(torch.isfinite(t).all()):
        raise BadInput(f"{name} of shape {tuple(t.shape)} contains NaN or infinite values")
    return t


def as_pair(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray,
            names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two sample sets of the same dimension on one device; promote to a common float dtype."""
    a, b = as_samples(x, names[0]), as_samples(y, names[1])
    if a.shape[1] != b.shape[1]:
        raise BadInput(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} differ in dimension")
    if a.device != b.device:
        raise BadInput(f"{names[0]} is on {a.device} but {names[1]} is on {b.device}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def row_chunks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Row slices such that one `(rows, n_cols)` block has at most `CHUNK_ELEMENTS` entries."""
    step = max(1, CHUNK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances `|a_i - b_j|` computed directly (no `|a|^2 - 2ab + |b|^2` cancellation)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point of `x` to its k-th nearest *other* point of `x` (itself excluded)."""
    if not 1 <= k < x.shape[0]:
        raise BadInput(f"k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} points, got {k}")
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for rows in row_chunks(x.shape[0], x.shape[0]):
        out[rows] = torch.topk(cdist(x[rows], x), k + 1, dim=1, largest=False).values[:, -1]
    return out
