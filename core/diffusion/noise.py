"""Noise samplers with k-diffusion's signature `noise_sampler(sigma, sigma_next) -> tensor` (standard normal,
the state's shape).

* `SeededNoise` (the default): every number is a hash of (seed, the sample's global index, the draw's index,
  the element's index), turned into a normal by Box–Muller. So a sample's noise does not depend on the batch
  it is drawn in, on how a run is split into batches, or on the device; and it is pure tensor arithmetic
  (no generator state), safe inside a CUDA graph or a compiled function.
* `BrownianPath` (the default of samplers with sub-step noise): a Brownian motion W over sigma, built point by
  point at the sigmas the sampler asks for by Lévy's construction (a new point beyond the known ones is an
  independent Gaussian increment, one between two known points a Brownian-bridge draw), from `SeededNoise`
  draws: draws over overlapping intervals are consistent, and as `SeededNoise` independent of batching.
* `BrownianNoise`: a Brownian motion W over sigma from torchsde `BrownianTree`s, returning
  `(W(sigma') - W(sigma)) / sqrt|sigma' - sigma|`: draws over overlapping intervals are consistent (what
  single-step SDE solvers with sub-steps need; k-diffusion's `BrownianTreeNoiseSampler`).
"""

from __future__ import annotations

import functools
import math

import torch

MASK = 0xFFFFFFFF


def mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) on int64 tensors holding values in [0, 2^32)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & MASK
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & MASK
    return h ^ (h >> 16)


def sample_keys(seed: int, index: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per sample from the seed (any int in [0, 2^64)) and the samples' global indices."""
    h = mix32(torch.full_like(index, seed & MASK) ^ mix32(torch.full_like(index, (seed >> 32) & MASK)))
    return mix32(mix32(h ^ (index & MASK)) ^ ((index >> 32) & MASK))


@functools.lru_cache(maxsize=4)
def element_keys(seed: int, first: int, batch: int, numel: int, device: torch.device) -> torch.Tensor:
    """One 32-bit key per (sample, element), flat (batch * numel,): a function of the seed, the sample's global
    index and the element's index. Memoised: a run draws for the same samples solve after solve."""
    keys = sample_keys(seed, torch.arange(first, first + batch, dtype=torch.int64, device=device))
    e = torch.arange(numel, dtype=torch.int64, device=device).repeat(batch)
    return mix32(keys.repeat_interleave(numel) ^ mix32(e + 0x632BE5AB))


def hashed_normal(elem_keys: torch.Tensor, draws: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Standard normals (len(draws), len(elem_keys)) by Box–Muller from two 32-bit hashes of (element key,
    draw index); computed in float64."""
    h = mix32(elem_keys[None, :] ^ mix32(draws[:, None] + 0x9E3779B9 & MASK))
    u2 = mix32(h ^ 0x5BD1E995).to(torch.float64)
    radius = torch.sqrt(-2.0 * torch.log((h.to(torch.float64) + 0.5) * 2.0**-32))
    return (radius * torch.cos((u2 + 0.5) * (2.0 * math.pi * 2.0**-32))).to(dtype)


class SeededNoise:
    """The default noise: draw k (in call order) of the samples with global indices first..first+B-1."""

    def __init__(self, like: torch.Tensor, seed: int, first: int = 0) -> None:
        self.shape, self.dtype, self.device = like.shape, like.dtype, like.device
        self.keys = element_keys(int(seed), int(first), like.shape[0], math.prod(like.shape[1:]), like.device)
        self.count = 0

    def draws(self, n: int) -> torch.Tensor:
        """The next n draws at once, (n, *shape)."""
        k = torch.arange(self.count, self.count + n, dtype=torch.int64, device=self.device)
        self.count += n
        return hashed_normal(self.keys, k, self.dtype).reshape(n, *self.shape)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        return self.draws(1)[0]


class BrownianNoise:
    """Brownian increments over sigma in [sigma_min, sigma_max] from torchsde `BrownianTree`s.

    `per_sample=False` (the default, as k-diffusion's `BrownianTreeNoiseSampler` with one seed): one tree
    spans the batch, seeded from (seed, first): fast, but a sample's numbers depend on its batch.
    `per_sample=True`: one tree per sample seeded from (seed, its global index), independent of batching
    but about B times slower (k-diffusion's list-of-seeds mode)."""

    def __init__(self, like: torch.Tensor, sigma_min: float, sigma_max: float, seed: int, first: int = 0,
                 per_sample: bool = False) -> None:
        import torchsde

        index = torch.arange(first, first + (like.shape[0] if per_sample else 1), dtype=torch.int64)
        seeds = sample_keys(int(seed), index).tolist()
        w0 = torch.zeros_like(like[0] if per_sample else like)
        self.per_sample = per_sample
        self.trees = [torchsde.BrownianTree(float(sigma_min), w0, float(sigma_max), entropy=s) for s in seeds]

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        t0, t1 = sorted((float(sigma), float(sigma_next)))
        sign = 1.0 if float(sigma) < float(sigma_next) else -1.0
        w = torch.stack([tree(t0, t1) for tree in self.trees]) if self.per_sample else self.trees[0](t0, t1)
        return w * (sign / math.sqrt(t1 - t0))


class BrownianPath:
    """`noise(a, b) = (W(b) − W(a)) / sqrt|b − a|` for a Brownian motion W over sigma with W = 0 at the first
    sigma asked for. W at a new point q (one draw z of `SeededNoise` each, drawn `block` at a time):

        beyond the known points, next to the nearest one p:   W(q) = W(p) + sqrt|q − p| z,
        between known neighbours p < q < r:                   W(q) = W(p) + (q − p)/(r − p) (W(r) − W(p))
                                                                     + sqrt((q − p)(r − q)/(r − p)) z,

    which is the exact law of W at the points given the known ones (Lévy's construction), so sub-step and step
    increments that share points are consistent. The numbers depend on the order of the points asked for (fixed
    by the sampler's definition), the seed and each sample's global index, not on batching."""

    def __init__(self, like: torch.Tensor, seed: int, first: int = 0, block: int = 16) -> None:
        self.source, self.block = SeededNoise(like, seed, first), max(1, int(block))
        self.zero = torch.zeros_like(like)
        self.points: dict[float, torch.Tensor] = {}
        self.pending: list[torch.Tensor] = []

    def _z(self) -> torch.Tensor:
        if not self.pending:
            self.pending = list(self.source.draws(self.block).unbind(0))[::-1]
        return self.pending.pop()

    def _w(self, q: float) -> torch.Tensor:
        if q in self.points:
            return self.points[q]
        below = [p for p in self.points if p < q]
        above = [p for p in self.points if p > q]
        if not self.points:
            w = self.zero
        elif below and above:
            p, r = max(below), min(above)
            wp, wr = self.points[p], self.points[r]
            w = wp + (q - p) / (r - p) * (wr - wp) + math.sqrt((q - p) * (r - q) / (r - p)) * self._z()
        else:
            p = max(below) if below else min(above)
            w = self.points[p] + math.sqrt(abs(q - p)) * self._z()
        self.points[q] = w
        return w

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        return (self._w(b) - self._w(a)) / math.sqrt(abs(b - a))
