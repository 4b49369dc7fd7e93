"""Raw nets `F(x_in, c_noise)` for EDM preconditioning: an MLP (2-D toys), a small conv net (8x8 digits)."""

from __future__ import annotations

import math

import torch
from gentool.core.errors import choose
from gentool.core.nn import mlp
from torch import nn

ARCHS: tuple[str, ...] = ("mlp", "conv")


def fourier_embedding(c_noise: torch.Tensor, n: int = 16) -> torch.Tensor:
    """`[cos(2^k c), sin(2^k c)]`-style sinusoidal embedding, frequencies `exp(linspace(0, log 100, n/2))`."""
    freqs = torch.exp(torch.linspace(0, math.log(100.0), n // 2, device=c_noise.device, dtype=c_noise.dtype))
    arg = c_noise[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class DenoiserMLP(nn.Module):
    """`F(x, c) = MLP([x, emb(c)])` with `depth` hidden layers of `width` (SiLU)."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, emb: int = 16):
        super().__init__()
        self.dim, self.emb = dim, emb
        self.body = mlp([dim + emb, *([width] * depth), dim], "silu")

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, fourier_embedding(c_noise, self.emb)], dim=1))


class DenoiserConv(nn.Module):
    """Small conv net on `side x side` images (flattened input): 3 conv layers, noise embedding added."""

    def __init__(self, dim: int = 64, width: int = 64, depth: int = 3, emb: int = 16):
        super().__init__()
        self.dim, self.emb, self.side = dim, emb, math.isqrt(dim)
        self.inp = nn.Conv2d(1, width, 3, padding=1)
        self.noise = nn.Linear(emb, width)
        self.hidden = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth - 1))
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.reshape(-1, 1, self.side, self.side))
        h = h + self.noise(fourier_embedding(c_noise, self.emb))[:, :, None, None]
        for conv in self.hidden:
            h = h + conv(nn.functional.silu(h))
        return self.out(nn.functional.silu(h)).reshape(x.shape[0], self.dim)


def make_net(arch: str, dim: int, width: int, depth: int) -> nn.Module:
    """Net `arch` ("mlp" any dim; "conv" square images) for data of dimension `dim`."""
    choose("architecture", arch, ARCHS)
    if arch == "conv":
        return DenoiserConv(dim, width, depth)
    return DenoiserMLP(dim, width, depth)
