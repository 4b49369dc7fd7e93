"""Distances and quality metrics between sample sets (torch, chunked, GPU-ready); POT for exact W2."""

from gentool.core.metrics.features import digits_classifier, digits_features
from gentool.core.metrics.gaussian import frechet_distance, gaussian_w2, gaussian_w2_squared, mean_cov
from gentool.core.metrics.kernels import energy_distance, mmd2
from gentool.core.metrics.knn import density_coverage, precision_recall
from gentool.core.metrics.modes import mode_coverage
from gentool.core.metrics.nll import heldout_nll
from gentool.core.metrics.summary import DEFAULT_METRICS, compute_metrics
from gentool.core.metrics.wasserstein import exact_w2, sliced_w2

__all__ = [
    "DEFAULT_METRICS", "compute_metrics", "density_coverage", "digits_classifier", "digits_features",
    "energy_distance", "exact_w2", "frechet_distance", "gaussian_w2", "gaussian_w2_squared", "heldout_nll",
    "mean_cov", "mmd2", "mode_coverage", "precision_recall", "sliced_w2",
]
