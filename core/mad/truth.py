"""The true distribution N(μ₀, Σ₀) of the `gaussian` data, chosen by the `truth` setting:

- `linspace` (default): `N(0, diag(linspace(1, 2, d)))` (1-D: N(0, 1));
- `isotropic` or `isotropic:v`: `N(0, v I)` (v = 1 by default; the Collapse-or-Thrive and Shumailov setting);
- `spectrum:v1,v2,...`: `N(0, diag(v))` with one variance per dimension;
- a file: `.npy`/`.txt`/`.csv` holding a `d × d` covariance or `d` variances (mean 0), or `.npz` with arrays
  `cov` (or `var`) and optionally `mean`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gentool.core.config import read_arrays
from gentool.core.errors import BadInput, require

FILE_SUFFIXES = (".npy", ".txt", ".csv", ".npz")


def parse_truth(value: object) -> str:
    """Config parser: the truth's text, checked for form (sizes are checked against `dim` by `gaussian_truth`)."""
    text = str(value).strip()
    kind, _, arg = text.partition(":")
    if kind == "linspace" and not arg:
        return text
    if kind == "isotropic":
        if arg:
            _positive_numbers(arg, "truth isotropic variance", count=1)
        return text
    if kind == "spectrum":
        _positive_numbers(arg, "truth spectrum")
        return text
    if Path(text).suffix in FILE_SUFFIXES:
        return text
    raise BadInput(f"unknown truth {text!r}; allowed: linspace, isotropic[:v], spectrum:v1,v2,..., or a "
                   f"{'/'.join(FILE_SUFFIXES)} file")


def _positive_numbers(text: str, name: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{name} must be comma-separated positive numbers, got {text!r}") from None
    require(bool(values) and all(np.isfinite(v) and v > 0 for v in values),
            f"{name} must be positive numbers, got {text!r}")
    require(count is None or len(values) == count, f"{name} must be {count} number(s), got {text!r}")
    return values


def _from_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise BadInput(f"truth file not found: {path}")
    arr = read_arrays(path, "truth")  # no pickles, real finite numbers, header checked before allocation
    if isinstance(arr, dict):
        require("cov" in arr or "var" in arr, f"truth: {path} holds neither 'cov' nor 'var'")
        cov = arr["cov"] if "cov" in arr else np.diag(arr["var"])
        return np.asarray(arr.get("mean", np.zeros(cov.shape[0])), float), np.asarray(cov, float)
    cov = np.diag(arr.ravel()) if arr.ndim == 1 or 1 in arr.shape and arr.size > 1 else np.atleast_2d(arr)
    return np.zeros(cov.shape[0]), cov


def gaussian_truth(dim: int, truth: str = "linspace") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `(d,)` and covariance `(d, d)` (float64) of the truth; `BadInput` when its size is not `dim` or the
    covariance is not symmetric positive definite."""
    kind, _, arg = truth.partition(":")
    if kind == "linspace" and not arg:
        hi = 2.0 if dim > 1 else 1.0
        return torch.zeros(dim, dtype=torch.float64), torch.diag(torch.linspace(1.0, hi, dim, dtype=torch.float64))
    if kind == "isotropic":
        v = _positive_numbers(arg, "truth isotropic variance", 1)[0] if arg else 1.0
        return torch.zeros(dim, dtype=torch.float64), v * torch.eye(dim, dtype=torch.float64)
    if kind == "spectrum":
        mean, cov = np.zeros(dim), np.diag(_positive_numbers(arg, "truth spectrum"))
    else:
        mean, cov = _from_file(Path(truth))
    require(cov.shape == (dim, dim) and mean.shape == (dim,),
            f"truth {truth!r} has dimension {cov.shape[0]}, but dim is {dim}")
    require(np.allclose(cov, cov.T) and bool(np.all(np.linalg.eigvalsh(cov) > 0)),
            f"truth {truth!r}: the covariance must be symmetric positive definite")
    return torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
