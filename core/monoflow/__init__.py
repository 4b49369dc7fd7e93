"""MonoFlow: GANs as particle flows `dx/dt = ∇_x h(log r_t(x))` driven by a discriminator's log density ratio.

    from gentool.core.monoflow import MonoFlowConfig, train_generator, sample_generator, H_FUNCTIONS
    res = train_generator(x, MonoFlowConfig(h="logit"), generator=g)

Pieces: `h` (registry of monotone h), `discriminator` (logistic-regression log-ratio estimator),
`training` (generator mode), `particles` (non-parametric particle mode on the solver core),
`exact` (exact-ratio flows for analytic targets).
"""

from gentool.core.monoflow.config import MonoFlowConfig
from gentool.core.monoflow.h import H_FUNCTIONS, HFunction, get_h, h_prime
from gentool.core.monoflow.training import (
    AffineGenerator,
    GeneratorRun,
    init_generator_run,
    sample_generator,
    train_generator,
    train_steps,
)

__all__ = ["MonoFlowConfig", "H_FUNCTIONS", "HFunction", "get_h", "h_prime", "AffineGenerator",
           "GeneratorRun", "init_generator_run", "sample_generator", "train_generator", "train_steps"]
