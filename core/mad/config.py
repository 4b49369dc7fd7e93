"""`MadConfig`: every setting of a self-consuming-loop run, validated in one place (field names in messages)."""

from __future__ import annotations

from dataclasses import dataclass

from gentool.core.config import check_float, check_int, setting
from gentool.core.data import DATASETS
from gentool.core.errors import BadInput, choose, require
from gentool.core.mad.families import FAMILIES, family_from_config
from gentool.core.mad.loops import LOOPS, real_count

DATA = ("gaussian", *DATASETS)
SAMPLE_METRICS = ("sliced_w2", "mmd2", "precision", "recall", "density", "coverage", "frechet")
EXTRA_METRICS = ("exact_w2", "energy")
MAX_GENERATIONS = 100_000
MAX_POINTS = 10**8


def parse_bandwidth(value: object) -> str | float:
    """`scott`, `silverman` or a positive number (text or a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if text in ("scott", "silverman"):
        return text
    try:
        return float(text)
    except ValueError:
        raise BadInput(f"unknown bandwidth {text!r}; allowed: scott, silverman, a positive number") from None


def parse_metrics(value: object) -> tuple[str, ...]:
    """Comma-separated metric names (or a list); `none` or empty for no sample metrics."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    names = tuple(str(v).strip() for v in items if str(v).strip())
    return () if names == ("none",) else names


@dataclass(frozen=True)
class MadConfig:
    """A self-consuming loop: `generations` × `seeds` fits of `family` on data built by `loop` (SPEC §5)."""

    family: str = setting("gaussian", "Model family refitted every generation.", choices=FAMILIES)
    loop: str = setting("fully-synthetic", "How each generation's training set is built.", choices=LOOPS)
    data: str = setting("gaussian", "Real data: a Gaussian or a bundled data set.", choices=DATA)
    dim: int = setting(2, "Dimension of the gaussian data (other data sets fix their own).")
    generations: int = setting(10, "Number of generations.")
    seeds: int = setting(1, "Independent repetitions (seed ids seed, seed+1, ...).")
    n_real: int = setting(100, "Real points: generation 1 and the fixed/fresh real set.")
    n_synth: int = setting(100, "Synthetic points drawn per generation.")
    real_fraction: float | None = setting(None, "augment/fresh: real share of n_synth (default: n_real real "
                                          "points plus n_synth synthetic).")
    lam: float = setting(1.0, "Sampling bias λ in (0, 1]: 1 samples the fitted model unchanged.")
    budget: int | None = setting(None, "accumulate: subsample the pool to this many points per fit.")
    cov: str = setting("unbiased", "Gaussian covariance estimator.", choices=("unbiased", "mle"))
    bandwidth: str | float = setting("scott", "KDE bandwidth: scott, silverman or a positive number.",
                                     parse=parse_bandwidth)
    components: int = setting(8, "GMM components.")
    sampler: str = setting("dpmpp-2m", "Diffusion family: sampler.")
    steps: int = setting(20, "Diffusion family: sampler steps.")
    train_steps: int = setting(2000, "Training steps per generation (diffusion, monoflow).")
    metrics: tuple[str, ...] | None = setting(
        None, "Sample metrics, comma-separated, or none (default: all for non-Gaussian families, none for "
        "gaussian).", parse=parse_metrics, metavar="LIST")
    metric_seeds: int = setting(3, "Gaussian family: how many seeds get the sample metrics.")
    n_test: int = setting(1000, "Held-out real points for the metrics.")

    def __post_init__(self) -> None:
        choose("family", self.family, FAMILIES)
        choose("loop", self.loop, LOOPS)
        choose("data", self.data, DATA)
        choose("cov", self.cov, ("unbiased", "mle"))
        check_int("dim", self.dim, 1, 10_000)
        check_int("generations", self.generations, 1, MAX_GENERATIONS)
        check_int("seeds", self.seeds, 1, 1_000_000)
        check_int("n_real", self.n_real, 2, MAX_POINTS)
        check_int("n_synth", self.n_synth, 2, MAX_POINTS)
        check_int("n_test", self.n_test, 2, MAX_POINTS)
        check_int("metric_seeds", self.metric_seeds, 0)
        check_float("lam", self.lam, 0.0, 1.0, lo_open=True)
        if self.budget is not None:
            check_int("budget", self.budget, 2, MAX_POINTS)
        if self.real_fraction is not None:
            check_float("real_fraction", self.real_fraction, 0.0, 1.0, hi_open=True)
            k = real_count(self.n_real, self.n_synth, self.real_fraction)
            require(k <= self.n_real, f"real_fraction {self.real_fraction} needs {k} real points > n_real "
                    f"{self.n_real}")
            require(self.n_synth - k >= 1, f"real_fraction {self.real_fraction} leaves no synthetic points")
        for name in self.metrics or ():
            choose("metric", name, (*SAMPLE_METRICS, *EXTRA_METRICS))
        family_from_config(self)  # the family's own options (components, bandwidth, sampler, steps)

    @property
    def d(self) -> int:
        """Dimension of the data."""
        return self.dim if self.data == "gaussian" else (64 if self.data == "digits" else 2)
