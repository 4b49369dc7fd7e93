"""Raw nets: `F(x_in, c_noise)` for EDM preconditioning (an MLP for 2-D toys, a small conv net for 8x8 digits) and
a diffusers `UNet2DModel` `F(x~, t)` on the discrete VP table (`unet`, square images)."""

from __future__ import annotations

import math

import torch
from gentool.core.errors import BadInput, choose
from gentool.core.nn import mlp
from torch import nn

ARCHS: tuple[str, ...] = ("mlp", "conv", "unet")
# (width, depth) when not given: MLP units x hidden layers, conv channels x layers, UNet first-level channels x levels
ARCH_DEFAULTS: dict[str, tuple[int, int]] = {"mlp": (128, 3), "conv": (128, 3), "unet": (32, 2)}


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


def image_shape(dim: int) -> tuple[int, int, int]:
    """`(1, side, side)` for flattened square one-channel images of `dim = side^2` pixels, else `BadInput`."""
    side = math.isqrt(dim)
    if side * side != dim or side < 2:
        raise BadInput(f"the unet architecture needs square images (dim = side^2 >= 4), got dim {dim}")
    return (1, side, side)


def make_unet(dim: int, width: int, depth: int, num_classes: int | None = None) -> nn.Module:
    """A small diffusers `UNet2DModel` on `image_shape(dim)`: `depth` resolution levels with `width * 2^i` channels,
    one ResNet layer per level, attention in the middle block, GroupNorm over min(8, width) groups; with
    `num_classes`, a class embedding (`class_labels` in `[0, num_classes)`)."""
    from diffusers import UNet2DModel

    channels, side = image_shape(dim)[0], image_shape(dim)[1]
    if side % 2 ** (depth - 1):
        raise BadInput(f"depth {depth} halves {side}x{side} images {depth - 1} times; the side must be divisible "
                       f"by {2 ** (depth - 1)}")
    widths = tuple(width * 2**i for i in range(depth))
    return UNet2DModel(sample_size=side, in_channels=channels, out_channels=channels, block_out_channels=widths,
                       down_block_types=("DownBlock2D",) * depth, up_block_types=("UpBlock2D",) * depth,
                       layers_per_block=1, norm_num_groups=math.gcd(8, width), attention_head_dim=None,
                       num_class_embeds=num_classes)


def make_net(arch: str, dim: int, width: int, depth: int, mlp_noise_features: int) -> nn.Module:
    """Net `arch` ("mlp" any dim; "conv" and "unet" square images) for data of dimension `dim` (the mlp with
    `mlp_noise_features` noise-level features)."""
    choose("architecture", arch, ARCHS)
    if arch == "unet":
        return make_unet(dim, width, depth)
    if arch == "conv":
        return DenoiserConv(dim, width, depth)
    return DenoiserMLP(dim, width, depth, mlp_noise_features)
