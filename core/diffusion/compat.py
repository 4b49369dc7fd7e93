"""A diffusers scheduler config as gentool sampler settings: the sampler and its options, the grid, whether the net
sees integer timesteps, and the state convention, such that sampling equals the scheduler's own loop in a pipeline
(checked in tests/test_diffusers_parity.py and tests/test_pipelines.py):

    EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete,  euler | euler-ancestral | heun | dpmpp-sde on grid model
    DPMSolverSDE                                          (Karras sigmas: edm over the spacing's range); vp with
                                                          leading. DPMSolverSDE draws its noise from a torchsde
                                                          BrownianInterval seeded by noise_sampler_seed (random by
                                                          default): the same noise needs that tree as the noise
                                                          sampler; gentool's own Brownian path has the same law
    DDIM                                                  ddim eta 0 on grid model, vp; ddim_step stride (to
                                                          t - T//N), clipped_epsilon false (the net's epsilon)
    DDPM (variance fixed_small)                           ddim eta 1 (its posterior variance) on grid model, vp
    DPMSolverMultistep (dpmsolver++, sde-dpmsolver++)     dpmpp-2m | dpmpp-3m-kd (| -sde), solver_type,
                                                          lower_order_final, integer timesteps, vp
    UniPCMultistep (bh2, x0 prediction)                   unipc of solver_order (lower_order_final), vp
    PNDM (skip_prk_steps, leading spacing)                pndm on grid model, vp (its step to t - T//N is the
                                                          next grid timestep under leading spacing only)

Clipping and the timestep rule come from the same config through the model (`Clipping`, `DiscreteSchedule`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gentool.core.errors import BadInput, require

DDIM_DEFAULTS = {"ddim_step": "next", "clipped_epsilon": True}  # the sample settings' defaults, for the others
EULER_FAMILY = {"EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-ancestral",
                "HeunDiscreteScheduler": "heun", "DPMSolverSDEScheduler": "dpmpp-sde"}
SUPPORTED = (*EULER_FAMILY, "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
             "PNDMScheduler")


def _grid(config: Mapping[str, Any], karras_range: str) -> dict[str, Any]:
    if config.get("use_karras_sigmas"):
        return {"grid": "edm", "rho": 7.0, "sigma_range": karras_range}
    require(not config.get("use_exponential_sigmas") and not config.get("use_beta_sigmas"),
            "exponential and beta sigmas of diffusers schedulers are not supported; use_karras_sigmas is")
    return {"grid": "model"}


def _euler_family(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    sampler = EULER_FAMILY[name]
    convention = "sigma" if config.get("timestep_spacing", "linspace") in ("linspace", "trailing") else "vp"
    return {"sampler": sampler, **_grid(config, "spacing"), "convention": convention}


def _dpm_solver(config: Mapping[str, Any]) -> dict[str, Any]:
    algorithm, order = config.get("algorithm_type", "dpmsolver++"), int(config.get("solver_order", 2))
    require(algorithm in ("dpmsolver++", "sde-dpmsolver++"), f"DPMSolverMultistepScheduler algorithm_type "
            f"{algorithm!r} is not supported; supported: dpmsolver++, sde-dpmsolver++")
    require(order in (2, 3), f"DPMSolverMultistepScheduler solver_order {order} is not supported; supported: 2, 3")
    sampler = {2: "dpmpp-2m", 3: "dpmpp-3m-kd"}[order] if algorithm == "dpmsolver++" else f"dpmpp-{order}m-sde"
    return {"sampler": sampler, "solver": config.get("solver_type", "midpoint"),
            "lower_order_final": bool(config.get("lower_order_final", True)), **_grid(config, "table"),
            "convention": "vp", "integer_timesteps": True}


def _unipc(config: Mapping[str, Any]) -> dict[str, Any]:
    require(config.get("predict_x0", True) and config.get("solver_type", "bh2") == "bh2" and config.get(
        "lower_order_final", True), "UniPCMultistepScheduler is supported with predict_x0, solver_type bh2 and "
            "lower_order_final (its defaults)")
    return {"sampler": "unipc", "order": int(config.get("solver_order", 2)), **_grid(config, "table"),
            "convention": "vp", "integer_timesteps": True}


def _pndm(config: Mapping[str, Any]) -> dict[str, Any]:
    require(bool(config.get("skip_prk_steps", False)), "PNDMScheduler is supported with skip_prk_steps (PLMS); "
            "its Runge-Kutta warm-up (skip_prk_steps false) is not")
    spacing = config.get("timestep_spacing", "leading")
    require(spacing == "leading", f"PNDMScheduler with {spacing!r} spacing steps from t to t - T//N off its own "
            "grid, which gentool's pndm does not follow; supported: leading")
    return {"sampler": "pndm", "grid": "model", "convention": "vp"}


def scheduler_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The sample settings that reproduce the diffusers scheduler `config` (with its `_class_name`)."""
    return DDIM_DEFAULTS | _settings(str(config.get("_class_name")), config)


def _settings(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    if name in EULER_FAMILY:
        return _euler_family(name, config)
    if name == "DDIMScheduler":
        return {"sampler": "ddim", "eta": 0.0, "grid": "model", "convention": "vp", "ddim_step": "stride",
                "clipped_epsilon": False}
    if name == "DDPMScheduler":
        variance = config.get("variance_type", "fixed_small")
        require(variance == "fixed_small", f"DDPMScheduler variance_type {variance!r} is not supported; supported: "
                "fixed_small")
        return {"sampler": "ddim", "eta": 1.0, "grid": "model", "convention": "vp"}
    if name == "DPMSolverMultistepScheduler":
        return _dpm_solver(config)
    if name == "UniPCMultistepScheduler":
        return _unipc(config)
    if name == "PNDMScheduler":
        return _pndm(config)
    raise BadInput(f"scheduler {name!r} has no gentool equivalent; supported: {', '.join(SUPPORTED)}")
