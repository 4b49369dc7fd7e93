"""Image quality on the features of a network trained locally (nothing downloaded): FID-style Fréchet distance,
improved precision/recall and density/coverage between real and generated images.

Output names follow torchmetrics' snake-case metric names: `frechet_distance` (the Fréchet distance of
`FrechetInceptionDistance`, on this feature net instead of Inception), `precision`, `recall`, `density`, `coverage`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from gentool.core.data import digits_split
from gentool.core.errors import choose
from gentool.core.metrics.features import digits_features
from gentool.core.metrics.gaussian import frechet_distance
from gentool.core.metrics.knn import density_coverage, precision_recall

FeatureNet = Callable[[torch.Tensor], torch.Tensor]


def _digits(images: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer features of the local digits classifier for `(n, 1, 8, 8)` or flattened `(n, 64)` digits."""
    return digits_features(images.reshape(images.shape[0], -1))


@dataclass(frozen=True)
class ImageData:
    """A bundled image data set as the metrics see it: the feature net (its name is recorded next to the
    metrics) and the held-out images generated samples are compared with."""

    feature_net: str
    features: FeatureNet
    heldout: Callable[[], torch.Tensor]


IMAGE_DATA: dict[str, ImageData] = {
    "digits": ImageData("digits_classifier", _digits, lambda: digits_split("test")[0]),  # 360 distinct images
}


def feature_metrics(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """`frechet_distance` (Gaussian W2^2 of the feature moments), `precision`/`recall` and `density`/`coverage`
    (k-NN in feature space, parameter `k`) between feature sets `real (n, f)` and `fake (m, f)`."""
    precision, recall = precision_recall(real, fake, k=k)
    density, coverage = density_coverage(real, fake, k=k)
    return {"frechet_distance": frechet_distance(real, fake), "precision": precision, "recall": recall,
            "density": density, "coverage": coverage}


def image_metrics(real: torch.Tensor, fake: torch.Tensor, data: str, k: int = 5) -> dict[str, float | str]:
    """`feature_metrics` of images `real` and `fake` (first axis: samples) on the feature net of data set `data`,
    plus `feature_net`: its name."""
    spec = IMAGE_DATA[choose("image data set", data, IMAGE_DATA)]
    return {**feature_metrics(spec.features(real.float()), spec.features(fake.float()), k=k),
            "feature_net": spec.feature_net}


def heldout_image_metrics(fake: torch.Tensor, data: str, k: int = 5) -> dict[str, float | str]:
    """`image_metrics` of generated images `fake` against the held-out images of data set `data`."""
    return image_metrics(IMAGE_DATA[choose("image data set", data, IMAGE_DATA)].heldout(), fake, data, k)
