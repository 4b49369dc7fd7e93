"""Self-consuming (model autophagy, "MAD") loops: retrain a model family on its own samples (SPEC §5).

    from gentool.core.mad import LoopConfig, run_loop
    cfg = LoopConfig(family="gaussian", loop="fully-synthetic", generations=100, seeds=1000)
    rows = run_loop(cfg, "runs/mad")

Pieces: `loops` (building each generation's training set), `families` (fit + sample with λ),
`closed_forms` (Gaussian expectations, batched Bures W2), `runner` (generations × seeds, resumable), `plots`.
"""

from gentool.core.mad.closed_forms import (
           bures_w2,
           expected_cov_scale,
           log_variance_drift,
           mean_var_scale,
)
from gentool.core.mad.families import FAMILIES, make_family
from gentool.core.mad.loops import LOOPS, next_training_set
from gentool.core.mad.plots import plot_metric_curves, plot_snapshots
from gentool.core.mad.runner import (
           DATA,
           LoopConfig,
           config_dict,
           gaussian_truth,
           generation_rng,
           make_reference,
           run_loop,
           summarize,
           summary_csv,
)

__all__ = ["DATA", "FAMILIES", "LOOPS", "LoopConfig", "bures_w2", "config_dict", "expected_cov_scale",
           "gaussian_truth", "generation_rng", "log_variance_drift", "make_family", "make_reference",
           "mean_var_scale", "next_training_set", "plot_metric_curves", "plot_snapshots", "run_loop",
           "summarize", "summary_csv"]
