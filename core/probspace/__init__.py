"""Optimisation over probability distributions: the simplex (Frank–Wolfe, mirror descent, projected and
softmax gradient) and Wasserstein gradient flows with particles (KDE flow, Langevin, SVGD, MMD flow).

    from gentool.core.probspace import make_objective, solve_simplex, make_target, kl_energy, run_particles
"""

from gentool.core.probspace.objectives import OBJECTIVES, SimplexObjective, make_objective
from gentool.core.probspace.particles import (
    PARTICLE_METHODS,
    FreeEnergy,
    ParticleResult,
    kl_energy,
    run_particles,
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
from gentool.core.probspace.targets import TARGETS, Target, make_target

__all__ = ["FW_STEPS", "METHODS", "OBJECTIVES", "PARTICLE_METHODS", "TARGETS", "FreeEnergy", "ParticleResult",
           "SimplexObjective", "SimplexResult", "Target", "check_simplex", "fw_gap", "kl_energy",
           "make_objective", "make_target", "on_simplex", "project_simplex", "prox_entropy_simplex", "run_particles",
           "solve_simplex", "suitable_methods"]
