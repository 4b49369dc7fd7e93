"""`MonoFlowConfig`: every knob of a MonoFlow run, validated in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gentool.core.errors import require
from gentool.core.monoflow.h import get_h


@dataclass(frozen=True)
class MonoFlowConfig:
    """Hyper-parameters. Adam defaults (D 2e-4, G 1e-4, β₁ 0.5) follow the official MonoFlow code.

    `k_gen` generator steps per discriminator step: 1 uses the loss `E[−h(d(g(z)))]`; k > 1 uses the
    distillation loss `‖g(z) − stopgrad(g_t(z) + eps ∇h(d(g_t(z))))‖²` towards one Euler step of size `eps`.
    Particle mode: each of `steps` rounds refits D for `d_steps` steps, then integrates the particles over
    time `dt` with `solver_steps` steps of `method` (solver core).
    Network/batch defaults (2 hidden layers of 256, batch 512, 2000 steps) cover all 8 modes of the `ring`
    toy with `logit`, `ns` and `arcsinh` on CPU; 3 layers of 128 with batch 256 dropped a mode with `ns`.
    """

    h: str = "logit"
    shift: float = 0.0
    steps: int = 2000
    batch_size: int = 512
    lr_d: float = 2e-4
    lr_g: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    k_gen: int = 1
    eps: float = 0.05
    d_steps: int = 1
    hidden: int = 256
    depth: int = 2
    latent_dim: int = 2
    dt: float = 0.05
    solver_steps: int = 1
    method: str = "euler"

    def __post_init__(self) -> None:
        get_h(self.h)
        require(math.isfinite(self.shift), f"shift must be finite, got {self.shift}")
        ints = ("steps", "batch_size", "k_gen", "d_steps", "hidden", "depth", "latent_dim", "solver_steps")
        for name in ints:
            value = getattr(self, name)
            require(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr_d", "lr_g", "eps", "dt"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
