"""Optimisation over probability distributions: the simplex (Frank–Wolfe, mirror descent, projected and
softmax gradient), Wasserstein gradient flows with particles (KDE flow, Langevin, SVGD, MMD flow), and smooth
Top-k maps onto the capped simplex (threshold, entropic, sparse, hard).

    from gentool.core.probspace import make_objective, solve_simplex, make_target, kl_energy, run_particles
    from gentool.core.probspace import smooth_topk, TOPK_MAPS
"""

from gentool.core.probspace.closed_forms import QuadraticFlow, moment_errors
from gentool.core.probspace.objectives import OBJECTIVES, SimplexObjective, make_objective
from gentool.core.probspace.particles import (
    DEFAULTS,
    MMD_KERNELS,
    PARTICLE_METHODS,
    FlowMethod,
    FreeEnergy,
    ParticleResult,
    advance,
    kl_energy,
    make_method,
    run_particles,
    steps_between,
)
from gentool.core.probspace.particles import (
    METHODS as FLOW_METHODS,
)
from gentool.core.probspace.projection import check_simplex, on_simplex, project_simplex, prox_entropy_simplex
from gentool.core.probspace.simplex import (
    FW_STEPS,
    METHODS,
    SimplexResult,
    fw_gap,
    solve_simplex,
    suitable_methods,
)
from gentool.core.probspace.targets import TARGETS, Target, check_target, custom_target, gaussian_target, make_target
from gentool.core.probspace.topk import TOPK_MAPS, TopkMap, smooth_topk

__all__ = ["DEFAULTS", "FLOW_METHODS", "FW_STEPS", "METHODS", "MMD_KERNELS", "OBJECTIVES", "PARTICLE_METHODS",
           "TARGETS", "TOPK_MAPS", "FlowMethod", "FreeEnergy", "ParticleResult", "QuadraticFlow", "SimplexObjective",
           "SimplexResult", "Target", "TopkMap", "advance", "check_simplex", "check_target", "custom_target", "fw_gap",
           "gaussian_target", "kl_energy", "make_method", "make_objective", "make_target", "moment_errors",
           "on_simplex", "project_simplex", "prox_entropy_simplex", "run_particles", "smooth_topk",
           "solve_simplex", "steps_between", "suitable_methods"]
