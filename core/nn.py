"""Small network building blocks shared by the subcommands."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from gentool.core.errors import choose
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh,
                                           "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def mlp(sizes: Sequence[int], activation: str = "silu") -> nn.Sequential:
    """`Linear(sizes[0], sizes[1]) -> act -> ... -> Linear(sizes[-2], sizes[-1])` (no final activation)."""
    act = ACTIVATIONS[choose("activation", activation, ACTIVATIONS)]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded `torch.Generator` on `device`."""
    return torch.Generator(device=device).manual_seed(int(seed))
