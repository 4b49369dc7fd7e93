"""The sklearn-* data sets are exactly scikit-learn's generators for the documented seed; the old toys are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gentool.core.data import sample_data, sklearn_seed
from sklearn import datasets


@pytest.mark.parametrize("name,noise", [("sklearn-moons", None), ("sklearn-moons", 0.2), ("sklearn-circles", 0.05),
                                        ("sklearn-blobs", 0.5)])
def test_equals_sklearn_for_the_same_seed(name: str, noise: float | None) -> None:
    g = torch.Generator().manual_seed(123)
    seed = sklearn_seed(torch.Generator().manual_seed(123))
    got = sample_data(name, 101, g, dtype=torch.float64, noise=noise).numpy()
    if name == "sklearn-moons":
        want = datasets.make_moons(101, noise=0.05 if noise is None else noise, random_state=seed)[0]
    elif name == "sklearn-circles":
        want = datasets.make_circles(101, noise=noise, random_state=seed)[0]
    else:
        want = datasets.make_blobs(101, n_features=2, cluster_std=noise, random_state=seed)[0]
    assert np.array_equal(got, want)


def test_sklearn_moons_differ_from_the_rescaled_moons() -> None:
    a = sample_data("moons", 200, torch.Generator().manual_seed(0))
    b = sample_data("sklearn-moons", 200, torch.Generator().manual_seed(0))
    assert a.mean(0)[1].abs() < 0.2 and b.mean(0)[1] > 0.2  # gentool's moons are centred, sklearn's are not
