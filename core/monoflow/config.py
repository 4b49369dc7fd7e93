"""`MonoFlowConfig`: every knob of a MonoFlow run, validated in one place."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gentool.core.errors import choose, require
from gentool.core.monoflow.h import get_h
from gentool.core.nn import ACTIVATIONS

FLOAT32_MAX = 1e38  # (3.4e38 is float32's largest number)
INT_LIMITS = {"steps": 10**9, "batch_size": 10**8, "k_gen": 10**4, "d_steps": 10**4, "hidden": 10**5,
              "depth": 1000, "latent_dim": 10**6, "solver_steps": 10**6}  # integer settings: upper bounds


@dataclass(frozen=True)
class MonoFlowConfig:
    """Hyper-parameters. The Adam defaults (lr D 2e-4, G 1e-4, β₁ 0.5, β₂ 0.999) are those of the official code's
    image script (train_gan.py, MNIST/CIFAR-10 DCGANs, batch 128); its 2-D Gaussian toy (r_gan notebook) uses
    instead Adam lr G 1e-3, D 1e-3 (logit) or 1e-4, β₁ 0.9, batch 32, a fresh real minibatch every step and a
    discriminator 2 → 512 → 256 → 1 with LeakyReLU(0.2) (`recipes/monoflow-gaussian-toy.toml`).

    `h` with its parameter: `shift` C of `vanilla` (the official default is C = 5), `rate` a of `exp`.
    `activation` of both networks' hidden layers (`gentool.core.nn.ACTIVATIONS`).
    `k_gen` generator steps per discriminator step: 1 uses the loss `E[−h(d(g(z)))]`; k > 1 uses the
    distillation loss `‖g(z) − stopgrad(g_t(z) + eps ∇h(d(g_t(z))))‖²` towards one Euler step of size `eps`.
    Particle mode: each of `steps` rounds refits D for `d_steps` steps, then integrates the particles over
    time `dt` with `solver_steps` steps of `method` (solver core).
    Network/batch defaults (2 hidden layers of 256, batch 512, 2000 steps) cover all 8 modes of the `ring`
    toy with `logit`, `ns` and `arcsinh` on CPU; 3 layers of 128 with batch 256 dropped a mode with `ns`.
    """

    h: str = "logit"
    shift: float = 0.0
    rate: float = 1.5
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
    activation: str = "leaky_relu"
    dt: float = 0.05
    solver_steps: int = 1
    method: str = "euler"

    def __post_init__(self) -> None:
        get_h(self.h)
        choose("activation", self.activation, ACTIVATIONS)
        require(math.isfinite(self.shift), f"shift must be finite, got {self.shift}")
        require(math.isfinite(self.rate) and self.rate > 0, f"rate must be > 0 (h = exp(rate d) increasing), got "
                f"{self.rate}")
        for name, hi in INT_LIMITS.items():
            value = getattr(self, name)
            require(isinstance(value, int) and 1 <= value <= hi, f"{name} must be an integer in [1, {hi}], got "
                    f"{value!r}")
        for name in ("lr_d", "lr_g", "eps", "dt"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value!r}")
        for name in ("lr_d", "lr_g", "eps", "dt"):  # Adam, the networks and the particles work in float32
            require(getattr(self, name) < FLOAT32_MAX, f"{name} must be below {FLOAT32_MAX:.0e} (float32), got "
                    f"{getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            require(0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")

    @property
    def h_param(self) -> float:
        """The parameter of `h`: the setting its `param` names (0 when h has none)."""
        name = get_h(self.h).param
        return 0.0 if name is None else float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
