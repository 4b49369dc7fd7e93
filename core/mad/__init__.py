"""Self-consuming (model autophagy, "MAD") loops: retrain a model family on its own samples (SPEC §5).

    from gentool.core.mad import MadConfig, Simulation
    sim = Simulation(MadConfig(family="gaussian", generations=100, seeds=1000), seed=0)
    rows, first = sim.step()                        # one generation; `gentool.core.jobs.mad` runs it to a dir

Pieces: `config` (MadConfig, per-generation `Plan`), `schedule` (per-generation values), `loops` (loop kinds),
`families` (fit + sample with λ, warm start), `regression` (linear-regression family), `truth` (the Gaussian
truth), `reference` (real data, per-seed RNG streams, held-out set), `metrics`, `summary`, `closed_forms`,
`simulation` (generations × seeds in memory).
"""

from gentool.core.mad.closed_forms import (
    bures_w2,
    closed_form_curves,
    expected_cov_scale,
    log_variance_drift,
    mean_var_scale,
)
from gentool.core.mad.config import DATA, MadConfig
from gentool.core.mad.families import FAMILIES, family_from_config, make_family
from gentool.core.mad.loops import LOOP_KINDS, LOOPS, subsample
from gentool.core.mad.reference import generation_rng, make_reference, real_data
from gentool.core.mad.schedule import Schedule
from gentool.core.mad.simulation import Simulation
from gentool.core.mad.summary import describe, summarize, summary_csv
from gentool.core.mad.truth import gaussian_truth

__all__ = ["DATA", "FAMILIES", "LOOPS", "LOOP_KINDS", "MadConfig", "Schedule", "Simulation", "bures_w2",
           "closed_form_curves", "describe", "expected_cov_scale", "family_from_config", "gaussian_truth",
           "generation_rng", "log_variance_drift", "make_family", "make_reference", "mean_var_scale", "real_data",
           "subsample", "summarize", "summary_csv"]
