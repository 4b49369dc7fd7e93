"""Small network building blocks shared by the subcommands."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from gentool.core.errors import choose
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01 (torch's default)
    "leaky_relu_0.2": partial(nn.LeakyReLU, 0.2),  # the DCGAN / official MonoFlow slope
}


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


def draw_seed(generator: torch.Generator) -> int:
    """A 62-bit integer seed drawn from `generator` (advances it by one draw)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block (typically building a network) with torch's RNG seeded to `seed`; the global CPU RNG
    state is restored afterwards, so weight initialisation depends on `seed` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
