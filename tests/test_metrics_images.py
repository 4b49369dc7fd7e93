"""Image metrics on the local digits feature net, and image files (pixels, mosaics, PNGs)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.linalg
import torch
from gentool.core import plots
from gentool.core.data import digits_split
from gentool.core.errors import BadInput
from gentool.core.metrics import digits_features
from gentool.core.metrics.images import feature_metrics, heldout_image_metrics, image_metrics
from PIL import Image


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's formula with scipy's `sqrtm`: `|m1 - m2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))`."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross))


def test_frechet_distance_on_digits_features_equals_scipy() -> None:
    train, test = digits_split("train")[0], digits_split("test")[0]
    ours = image_metrics(test, train, "digits")
    fa, fb = digits_features(test).numpy(), digits_features(train).numpy()
    assert ours["frechet_distance"] == pytest.approx(scipy_frechet(fa, fb), rel=1e-6)
    assert ours["feature_net"] == "digits_classifier"


def test_real_digits_score_well_and_noise_badly() -> None:
    train = digits_split("train")[0]
    real = heldout_image_metrics(train[:1000].reshape(-1, 1, 8, 8), "digits")
    noise = heldout_image_metrics(torch.rand(1000, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                                  "digits")
    assert real["frechet_distance"] * 20 < noise["frechet_distance"]
    assert real["precision"] > 0.7 and real["recall"] > 0.7 and real["coverage"] > 0.7
    assert noise["precision"] < 0.05 and noise["coverage"] < 0.05


def test_identical_feature_sets_are_perfect() -> None:
    f = torch.randn(200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = feature_metrics(f, f)
    assert abs(m["frechet_distance"]) < 1e-9 and m["precision"] == m["recall"] == m["coverage"] == 1.0
    # strict balls (d < r, as the reference prdc): each holds its centre and its k - 1 = 4 nearer neighbours: k / k
    assert m["density"] == pytest.approx(1.0)


def test_unknown_image_data_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown image data set 'moons'"):
        heldout_image_metrics(torch.zeros(3, 1, 8, 8), "moons")


def test_pixels_mosaic_and_png_files(tmp_path) -> None:
    images = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0, -3.0]).reshape(6, 1, 1, 1).expand(6, 1, 2, 2)
    pixels = plots.to_pixels(images)
    assert pixels.shape == (6, 2, 2, 1) and pixels[:, 0, 0, 0].tolist() == [0, 64, 128, 255, 255, 0]
    mosaic = plots.tile_pixels(pixels, max_tiles=4, pad=1, min_side=7)
    assert mosaic.shape == (7, 7, 1)  # 2 x 2 tiles of 2 px with 1 px borders, not enlarged
    assert mosaic[1:3, 1:3, 0].tolist() == [[0, 0], [0, 0]] and mosaic[4:6, 4:6, 0].tolist() == [[255, 255]] * 2
    assert plots.tile_pixels(pixels, max_tiles=4, pad=1, min_side=20).shape == (21, 21, 1)
    rgb = plots.to_pixels(torch.zeros(2, 3, 4, 5))
    assert np.asarray(Image.open(io.BytesIO(plots.png_bytes(rgb[0])))).shape == (4, 5, 3)
    files = plots.image_pngs(tmp_path / "png", images, first=7)
    assert [f.name for f in files][:2] == ["000007.png", "000008.png"] and len(files) == 6
    assert np.asarray(Image.open(files[3])).tolist() == [[255, 255], [255, 255]]
