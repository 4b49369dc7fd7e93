"""`MadConfig`: every setting of a self-consuming-loop run, validated in one place (field names in messages)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from gentool.core.config import check_float, check_int, setting
from gentool.core.data import DATASETS, SKLEARN_NOISE
from gentool.core.errors import BadInput, choose, require
from gentool.core.mad.families import FAMILIES, VECTORISED_FAMILIES, family_from_config
from gentool.core.mad.loops import BUDGET_LOOPS, LOOP_KINDS, LOOPS, Replace, real_count
from gentool.core.mad.schedule import Schedule, schedule_setting
from gentool.core.mad.truth import gaussian_truth, parse_truth

DATA = ("gaussian", *DATASETS)
SAMPLE_METRICS = ("sliced_w2", "mmd2", "precision", "recall", "density", "coverage", "frechet")
EXTRA_METRICS = ("exact_w2", "energy")
MAX_GENERATIONS = 100_000
MAX_POINTS = 10**8
HISTORY_FREE_LOOPS = ("fully-synthetic", "augment", "fresh")


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


def parse_optional_schedule(value: object) -> int | float | str | None:
    return None if value is None or str(value).strip().lower() == "none" else schedule_setting(value)


@dataclass(frozen=True)
class Plan:
    """Per-generation sizes, index t − 1 for generation t: real points (generation 1's real set; the real part of
    augment/fresh training sets), synthetic points drawn, and the real fraction (None: n_real real + all synthetic)."""

    n_real: tuple[int, ...]
    n_synth: tuple[int, ...]
    real_fraction: tuple[float | None, ...]


SCHEDULE_HELP = " A number, a list [a, b, ...] (one per generation, the last repeats) or an expression in t."


@dataclass(frozen=True)
class MadConfig:
    """A self-consuming loop: `generations` × `seeds` fits of `family` on data built by `loop` (SPEC §5)."""

    family: str = setting("gaussian", "Model family refitted every generation.", choices=FAMILIES)
    loop: str = setting("fully-synthetic", "How each generation's training set is built (accumulate-subsample: "
                        "keep all data, fit on budget points drawn from it; reservoir: keep only budget points).",
                        choices=LOOPS)
    data: str = setting("gaussian", "Real data: a Gaussian (see truth) or a bundled data set (sklearn-*: exactly "
                        "scikit-learn's make_moons/make_circles/make_blobs).", choices=DATA)
    dim: int = setting(2, "Dimension of the gaussian data (other data sets fix their own).",
                       applies={"data": ("gaussian",)})
    truth: str = setting("linspace", "Gaussian data: linspace (N(0, diag(linspace(1, 2, dim)))), isotropic[:v] "
                         "(N(0, vI)), spectrum:v1,v2,... or a .npy/.txt/.csv/.npz file.", parse=parse_truth,
                         applies={"data": ("gaussian",)})
    data_noise: float | None = setting(None, "sklearn-* data: make_moons/make_circles noise or make_blobs "
                                       "cluster_std (default 0.05, 0.05, 1.0).", applies={"data": tuple(SKLEARN_NOISE)})
    label_noise: float = setting(1.0, "linear-regression: label noise σ (y = x·w* + σε).",
                                 applies={"family": ("linear-regression",)})
    generations: int = setting(10, "Number of generations.")
    seeds: int = setting(1, "Independent repetitions (seed ids seed, seed+1, ...).")
    n_real: int | float | str = setting(100, "Real points: generation 1 and the fixed/fresh real part." +
                                        SCHEDULE_HELP, parse=schedule_setting, metavar="SCHEDULE")
    n_synth: int | float | str | None = setting(None, "Synthetic points drawn per generation (default: as "
                                                "n_real)." + SCHEDULE_HELP, parse=parse_optional_schedule,
                                                metavar="SCHEDULE")
    real_fraction: float | str | None = setting(None, "augment/fresh: real share of the synthetic part's size "
                                                "(default: n_real real points plus the synthetic part)." +
                                                SCHEDULE_HELP, parse=parse_optional_schedule, metavar="SCHEDULE",
                                                applies={"loop": ("augment", "fresh")})
    from_previous: int = setting(1, "fully-synthetic/augment/fresh: the synthetic part is the union of the samples "
                                 "of the last K generations (MAD App. G).", applies={"loop": HISTORY_FREE_LOOPS})
    lam: float = setting(1.0, "Sampling bias λ in (0, 1]: 1 samples the fitted model unchanged.")
    budget: int | None = setting(None, "accumulate-subsample: points drawn per fit (default: n_real); reservoir: "
                                 "points kept.", applies={"loop": BUDGET_LOOPS})
    arch: str = setting("mlp", "diffusion: the denoiser network (unet: a diffusers UNet2DModel, square images "
                        "such as digits).", choices=("mlp", "conv", "unet"), applies={"family": ("diffusion",)})
    warm_start: bool = setting(False, "diffusion/monoflow: fine-tune the previous generation's model instead of "
                               "training from scratch.", applies={"family": ("diffusion", "monoflow")})
    cov: str = setting("unbiased", "Gaussian covariance estimator.", choices=("unbiased", "mle"),
                       applies={"family": ("gaussian",)})
    bandwidth: str | float = setting("scott", "KDE bandwidth: scott, silverman or a positive number.",
                                     parse=parse_bandwidth, applies={"family": ("kde",)})
    components: int = setting(8, "GMM components.", applies={"family": ("gmm",)})
    sampler: str = setting("dpmpp-2m", "Diffusion family: sampler.", applies={"family": ("diffusion",)})
    steps: int = setting(20, "Diffusion family: sampler steps.", applies={"family": ("diffusion",)})
    train_steps: int = setting(2000, "Training steps per generation (diffusion, monoflow).",
                               applies={"family": ("diffusion", "monoflow")})
    metrics: tuple[str, ...] | None = setting(
        None, "Sample metrics, comma-separated, or none (default: all for non-Gaussian families, none for "
        "gaussian and linear-regression).", parse=parse_metrics, metavar="LIST")
    metric_seeds: int = setting(3, "Vectorised families: how many seeds get the sample metrics.",
                                applies={"family": VECTORISED_FAMILIES})
    n_test: int = setting(1000, "Held-out real points for the metrics.")

    def __post_init__(self) -> None:
        choose("family", self.family, FAMILIES)
        choose("loop", self.loop, LOOPS)
        choose("data", self.data, DATA)
        choose("cov", self.cov, ("unbiased", "mle"))
        check_int("dim", self.dim, 1, 10_000)
        check_int("generations", self.generations, 1, MAX_GENERATIONS)
        check_int("seeds", self.seeds, 1, 1_000_000)
        check_int("n_test", self.n_test, 2, MAX_POINTS)
        check_int("metric_seeds", self.metric_seeds, 0)
        check_int("from_previous", self.from_previous, 1, MAX_GENERATIONS)
        check_int("steps", self.steps, 1, 100_000)  # sampler steps, as sample's
        check_int("train_steps", self.train_steps, 1, 10**9)  # as train's steps
        check_float("lam", self.lam, 0.0, 1.0, lo_open=True)
        check_float("label_noise", self.label_noise, 0.0, lo_open=True)
        for name in self.metrics or ():
            choose("metric", name, (*SAMPLE_METRICS, *EXTRA_METRICS))
        self._check_data()
        self._check_loop()
        self._check_plan()
        family_from_config(self)  # the family's own options (components, bandwidth, sampler, steps, warm start)
        first_fit = min(self.plan.n_real[0], self.budget or self.plan.n_real[0])
        require(self.family != "gmm" or first_fit >= self.components, f"gmm with components={self.components} "
                f"needs at least {self.components} points to fit, but generation 1 fits {first_fit} (n_real"
                f"{', budget' if self.budget else ''})")

    def _check_data(self) -> None:
        if self.data == "gaussian":
            parse_truth(self.truth)
            gaussian_truth(self.dim, self.truth)
        else:
            require(self.truth == "linspace", f"truth applies to data gaussian, not {self.data}")
        if self.data_noise is not None:
            require(self.data in SKLEARN_NOISE, f"data_noise applies to {', '.join(SKLEARN_NOISE)}, not {self.data}")
            check_float("data_noise", self.data_noise, 0.0)
        if self.family == "linear-regression":
            require(self.data == "gaussian", f"linear-regression draws its design from data gaussian, not {self.data}")
            require(not self.metrics, "linear-regression has no sample metrics; leave metrics unset")

    def _check_loop(self) -> None:
        if self.budget is not None:
            require(self.loop in BUDGET_LOOPS, f"budget applies to the {' and '.join(BUDGET_LOOPS)} loops, "
                    f"not {self.loop}")
            check_int("budget", self.budget, 2, MAX_POINTS)
        require(self.loop != "reservoir" or self.budget is not None, "the reservoir loop needs a budget")
        if self.from_previous > 1:
            require(self.loop in HISTORY_FREE_LOOPS, f"from_previous applies to the {', '.join(HISTORY_FREE_LOOPS)} "
                    f"loops ({self.loop} keeps all history already)")
            require(self.real_fraction is None, "real_fraction and from_previous > 1 cannot be combined")
        require(self.real_fraction is None or self.loop in ("augment", "fresh"),
                f"real_fraction applies to the augment and fresh loops, not {self.loop}")

    def _check_plan(self) -> None:
        plan = self.plan
        for name, sizes in (("n_real", plan.n_real), ("n_synth", plan.n_synth)):
            for t, n in enumerate(sizes, 1):
                require(2 <= n <= MAX_POINTS, f"{name} must be in [2, {MAX_POINTS}] at every generation, got {n} "
                        f"at generation {t}")
        for t, f in enumerate(plan.real_fraction[1:], 2):
            if f is None:
                continue
            check_float(f"real_fraction (generation {t})", f, 0.0, 1.0, hi_open=True)
            synth = plan.n_synth[t - 2] * self.from_previous
            k = real_count(plan.n_real[t - 1], synth, f)
            require(k <= plan.n_real[t - 1], f"real_fraction {f} needs {k} real points at generation {t} > n_real "
                    f"{plan.n_real[t - 1]}")
            require(synth - k >= 1, f"real_fraction {f} leaves no synthetic points at generation {t}")
        if self.family == "linear-regression":
            require(set(plan.n_synth) == {plan.n_real[0]}, "linear-regression relabels the first generation's "
                    f"design: n_synth must equal n_real(1) = {plan.n_real[0]} at every generation")

    @cached_property
    def plan(self) -> Plan:
        """The per-generation sizes (`Plan`)."""
        gens = self.generations
        n_real = Schedule.parse(self.n_real, "n_real").ints(gens)
        n_synth = n_real if self.n_synth is None else Schedule.parse(self.n_synth, "n_synth").ints(gens)
        if self.real_fraction is None:
            fraction: list[float | None] = [None] * gens
        else:
            sched = Schedule.parse(self.real_fraction, "real_fraction")
            fraction = [sched.at(t) for t in range(1, gens + 1)]
        return Plan(tuple(n_real), tuple(n_synth), tuple(fraction))

    @property
    def loop_kind(self) -> Replace:
        return LOOP_KINDS[self.loop]

    @property
    def d(self) -> int:
        """Dimension of a data point (a regression row is `(x, y)`, dim + 1)."""
        if self.family == "linear-regression":
            return self.dim + 1
        return self.dim if self.data == "gaussian" else (64 if self.data == "digits" else 2)
