"""Self-consuming (model autophagy, "MAD") loops: retrain a model family on its own samples (SPEC §5).

    from gentool.core.mad import MadConfig, Simulation
    sim = Simulation(MadConfig(family="gaussian", generations=100, seeds=1000), seed=0)
    rows, first = sim.step()                        # one generation; `gentool.core.jobs.mad` runs it to a dir

Pieces: `config` (MadConfig), `loops` (each generation's training set), `families` (fit + sample with λ),
`reference` (real data, per-seed RNG streams, held-out set), `metrics`, `summary`, `closed_forms`,
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
from gentool.core.mad.loops import LOOPS, next_training_set
from gentool.core.mad.reference import gaussian_truth, generation_rng, make_reference
from gentool.core.mad.simulation import Simulation
from gentool.core.mad.summary import summarize, summary_csv

__all__ = ["DATA", "FAMILIES", "LOOPS", "MadConfig", "Simulation", "bures_w2", "closed_form_curves",
           "expected_cov_scale", "family_from_config", "gaussian_truth", "generation_rng", "log_variance_drift",
           "make_family", "make_reference", "mean_var_scale", "next_training_set", "summarize", "summary_csv"]
