"""Noise samplers with k-diffusion's signature `noise_sampler(sigma, sigma_next) -> tensor` (standard normal,
the state's shape).

* `SeededNoise` (the default): every number is a hash of (seed, the element's global index i numel + j, the
  draw's index), turned into a normal by the inverse CDF (`hashed_erfinv`); no two elements share a key. So a
  sample's noise does not depend on the batch it is drawn in, on how a run is split into batches, or on the
  device; and it is pure tensor arithmetic (no generator state): on a device a plan gets it as `NoiseRows`
  (the element keys and the ops), which a CUDA graph replays, drawing the noise of whichever seed and
  samples it is given. On the CPU the keys and hashes of a block of draws are made in one pass of a small C
  kernel (`_noise.c`, `cpu_uniforms`; torch ops where it was not built); the numbers are the same.
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
from collections.abc import Sequence

import numpy as np
import torch
from gentool.core.errors import require
from gentool.core.solvers.runner import NoiseRows

try:  # the CPU kernel of the default noise (pyproject's ext-modules), where it was built
    from gentool.core.diffusion import _noise as native
except ImportError:  # no C compiler at install: the CPU makes the same numbers in torch ops
    native = None

MASK = 0xFFFFFFFF


MIX32_ROUNDS = ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None))  # lowbias32: (xorshift, then product) x 3


def mix32(h: int | torch.Tensor) -> int | torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of values in [0, 2^32): Python ints or int64 tensors."""
    for shift, mult in MIX32_ROUNDS:
        h = h ^ (h >> shift)
        if mult is not None:
            h = (h * mult) & MASK
    return h


def int32_word(value: int) -> int:
    """The 32-bit word `value mod 2^32` as the signed integer an int32 tensor stores."""
    value &= MASK
    return value - (1 << 32) if value >> 31 else value


def mix32_(h: torch.Tensor, start: int = 0) -> torch.Tensor:
    """`mix32` in place on an int32 tensor's 32-bit words (products wrap mod 2^32; `>>>`, the logical shift,
    is torch's arithmetic shift with the sign-filled bits masked off). `start=1`: h already holds
    x ^ (x >>> 16), the first xorshift, which is linear over GF(2): for x = e ^ s it is the xor of e's and
    s's, each computable once (`element_keys`, `draw_salts`)."""
    for n, (shift, mult) in enumerate(MIX32_ROUNDS):
        if n >= start:
            h.bitwise_xor_((h >> shift).bitwise_and_((1 << (32 - shift)) - 1))
        if mult is not None:
            h *= int32_word(mult)
    return h


def xorshift16(h: int | torch.Tensor) -> int | torch.Tensor:
    """`h ^ (h >>> 16)` of nonnegative 32-bit words (Python ints or int64 tensors): mix32's first step."""
    return h ^ (h >> 16)


def seed_word(seed: int) -> int:
    """The seed (any int in [0, 2^64)) as one 32-bit word: mix32(low word xor mix32(high word))."""
    return mix32((seed & MASK) ^ mix32((seed >> 32) & MASK))


def sample_keys(seed: int, index: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per sample from the seed and the samples' global indices (int64):
    mix32(mix32(seed_word xor low word) xor high word)."""
    return mix32(mix32((index & MASK) ^ seed_word(seed)) ^ ((index >> 32) & MASK))


ELEMENT_SALT = 0x632BE5AB


def element_offset(seed: int, high: int | torch.Tensor) -> int | torch.Tensor:
    """c(H) = seed_word xor mix32((H + ELEMENT_SALT) mod 2^32): what the element keys of the global element
    indices with high word H are offset by (`element_keys`); Python ints or int64 tensors."""
    return seed_word(seed) ^ mix32((high + ELEMENT_SALT) & MASK)


@functools.lru_cache(maxsize=4)
def element_keys(seed: int, first: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One 32-bit key e per (sample, element) of a state of `shape` (B, ...), int32 of that shape:

        e = mix32(L xor c(H)),   g = i numel + j = H 2^32 + L   (global sample index i, flat element index j),

    c = `element_offset`, stored as `xorshift16(e)` (see `mix32_`), in torch ops on `device` (on the CPU,
    `cpu_uniforms` makes them in its kernel). mix32 is a bijection of 32-bit words, so the keys of
    the first 2^32 elements of a run (and of any 2^32 consecutive ones sharing H) are all distinct: no two
    elements share their noise. Memoised: a run draws for the same samples solve after solve."""
    numel = math.prod(shape[1:])
    base = first * numel
    low = torch.arange(shape[0] * numel, dtype=torch.int64, device=device) + (base & MASK)
    offset = element_offset(seed, (low >> 32) + ((base >> 32) & MASK))
    h = xorshift16(mix32((low & MASK) ^ offset))
    return ((h ^ (1 << 31)) - (1 << 31)).to(torch.int32).reshape(shape)  # [0, 2^32) as the int32 words


SQRT2 = math.sqrt(2.0)
HALF_ULP = {torch.float64: torch.tensor(2.0**-32, dtype=torch.float64), torch.float32: torch.tensor(2.0**-24)}


@functools.lru_cache(maxsize=16)
def draw_salts(start: int, n: int, ndim: int, device: torch.device) -> torch.Tensor:
    """The salts s = `mix32(k + 0x9E3779B9)` of draws k = start..start+n-1, stored as `xorshift16(s)`, int32 of
    shape (n, 1, ..., 1) (`ndim` ones: they broadcast against element keys of `ndim` dimensions; memoised)."""
    salts = [int32_word(xorshift16(mix32((k + 0x9E3779B9) & MASK))) for k in range(start, start + n)]
    return torch.tensor(salts, dtype=torch.int32, device=device).reshape(n, *(1,) * ndim)


def hashed_erfinv(keys: torch.Tensor, draws: range, wide: bool) -> torch.Tensor:
    """The default noise divided by sqrt(2), (len(draws), *keys.shape): draw k of an element with key e is

        z = sqrt(2) erfinv(u),   u = (h + 1/2) 2^-31 in (-1, 1),   h = mix32(e xor mix32(k + 0x9E3779B9)),

    h read as a signed 32-bit integer (inverse-CDF sampling: one hash and one transcendental per number), and
    this returns erfinv(u) (the consumer multiplies by sqrt(2), or folds it into its coefficients). Unless
    `wide` (float64), u keeps the top 24 bits of h (u = (h >> 8 + 1/2) 2^-23, exact in float32: |z| < 5.4),
    else u is formed in float64 (|z| < 6.2). `keys`: `element_keys` (on any device); on the CPU
    `cpu_erfinv` makes the same numbers from the seed and samples."""
    return key_uniforms(keys, draws, wide).erfinv_()


def key_uniforms(keys: torch.Tensor, draws: range, wide: bool) -> torch.Tensor:
    """`uniform_tensor` of element keys against the salts of `draws`, (len(draws), *keys.shape)."""
    return uniform_tensor(keys, draw_salts(draws.start, len(draws), keys.dim(), keys.device), wide)


CPU = torch.device("cpu")


@functools.lru_cache(maxsize=16)
def salt_words(start: int, n: int) -> np.ndarray:
    """`draw_salts` of draws start..start+n-1 as a flat array of uint32 words (memoised)."""
    return draw_salts(start, n, 0, CPU).numpy().view(np.uint32)


@functools.lru_cache(maxsize=16)
def key_offsets(seed: int, high: int) -> tuple[int, int]:
    """`element_offset` of the high words H and H + 1 (a batch's elements have one or the other)."""
    return element_offset(seed, high), element_offset(seed, high + 1)


def cpu_uniforms(seed: int, first: int, shape: tuple[int, ...], draws: range, wide: bool) -> torch.Tensor:
    """`uniform_tensor` of the `element_keys` of samples first..first+B-1 (`shape` = (B, ...)) against the salts
    of `draws`, (len(draws), *shape), on the CPU: in one pass of the `_noise` kernel (the same numbers; numpy
    or torch ops make a pass per operation, ~6x slower between model calls), or in torch ops where the kernel
    was not built."""
    n, base = math.prod(shape), first * math.prod(shape[1:])
    if native is None or n >= 1 << 32:
        return key_uniforms(element_keys(seed, first, shape, CPU), draws, wide)
    out = np.empty((len(draws), *shape), np.float64 if wide else np.float32)
    native.uniforms(out, salt_words(draws.start, len(draws)), base & MASK, *key_offsets(seed, base >> 32))
    return torch.from_numpy(out)


def cpu_erfinv(seed: int, first: int, shape: tuple[int, ...], draws: range, wide: bool) -> torch.Tensor:
    """`hashed_erfinv` of the samples first..first+B-1 on the CPU, from the seed (`cpu_uniforms`)."""
    return cpu_uniforms(seed, first, shape, draws, wide).erfinv_()


def _as(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return z if z.dtype is dtype else z.to(dtype)


def erfinv_rows(keys: torch.Tensor, salts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`hashed_erfinv` of element keys (a device tensor) against given draw salts, in `dtype`: torch ops only,
    no host synchronisation (what a CUDA graph replays, `SeededNoise.plan_rows`)."""
    return _as(uniform_tensor(keys, salts, dtype.itemsize > 4).erfinv_(), dtype)


def brownian_rows(keys: torch.Tensor, salts: torch.Tensor, dtype: torch.dtype, matrix: torch.Tensor) -> torch.Tensor:
    """`matrix @ erfinv_rows(...)`: a Brownian path's increments / sqrt(2) from its draws (`BrownianPath.plan_rows`)."""
    z = erfinv_rows(keys, salts, dtype)
    return (matrix @ z.view(z.shape[0], -1)).view(matrix.shape[0], *keys.shape)


def uniform_tensor(keys: torch.Tensor, salts: torch.Tensor, wide: bool) -> torch.Tensor:
    """`hashed_erfinv`'s u from int32 element keys against draw salts (broadcast), in torch ops (any device,
    graph-safe; on the CPU `cpu_uniforms` computes the same numbers): float64 (`wide`) or float32."""
    h = mix32_(keys ^ salts, start=1)
    if wide:  # one kernel: the integer words promote to the 0-d offset's float dtype, exactly
        return torch.add(HALF_ULP[torch.float64], h, alpha=2.0**-31)
    return torch.add(HALF_ULP[torch.float32], h.bitwise_right_shift_(8), alpha=2.0**-23)


class SeededNoise:
    """The default noise: draw k (in call order) of the samples with global indices first..first+B-1. On the
    CPU the draws are made from the seed (`cpu_erfinv`); on a device from the element keys `keys` (torch ops,
    `NoiseRows` for a plan)."""

    def __init__(self, like: torch.Tensor, seed: int, first: int = 0) -> None:
        self.shape, self.dtype = like.shape, like.dtype
        self.seed, self.first = int(seed), int(first)
        self.keys = None if like.is_cpu else element_keys(self.seed, self.first, self.shape, like.device)
        self.count = 0

    def draws(self, n: int) -> torch.Tensor:
        """The next n draws at once, (n, *shape)."""
        return _as(self._erfinv(n) * SQRT2, self.dtype)

    def scaled_draws(self, n: int) -> torch.Tensor:
        """The next n draws divided by `SQRT2` (`hashed_erfinv`: the consumer multiplies)."""
        return _as(self._erfinv(n), self.dtype)

    plan_scale = SQRT2  # what `plan_rows` are to be multiplied by (a plan folds it into its coefficients)

    def plan_rows(self, pairs: Sequence[tuple[float, float]]) -> torch.Tensor | NoiseRows:
        """`scaled_draws(n)` for a plan's n draws (`pairs`: their sigma pairs): made now on the CPU; on a device,
        as `NoiseRows` of the element keys (the same numbers; a CUDA graph makes them inside its replay, for
        whichever seed and samples)."""
        n = len(pairs)
        if self.keys is None:
            return self.scaled_draws(n)
        self.count += n
        return self.key_rows(self.count - n, n)

    def key_rows(self, start: int, n: int) -> NoiseRows:
        """Draws start..start+n-1 / sqrt(2) as `NoiseRows` of the element keys (a device's; the count stays)."""
        salts = draw_salts(start, n, self.keys.dim(), self.keys.device)
        return NoiseRows(self.keys, functools.partial(erfinv_rows, salts=salts, dtype=self.dtype),
                         ("seeded", start, n, self.dtype))

    def _erfinv(self, n: int) -> torch.Tensor:
        draws, wide = range(self.count, self.count + n), self.dtype.itemsize > 4
        self.count += n
        if self.keys is None:
            return cpu_erfinv(self.seed, self.first, tuple(self.shape), draws, wide)
        return hashed_erfinv(self.keys, draws, wide)

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


Coefficients = dict[int, float]  # W(q) = sum_k c_k z_k over the path's draws z_k


def _axpy(a: float, x: Coefficients, y: Coefficients) -> Coefficients:
    """a x + y on sparse coefficient vectors."""
    out = dict(y)
    for k, c in x.items():
        out[k] = out.get(k, 0.0) + a * c
    return out


class Levy:
    """Lévy's construction of a Brownian motion W over sigma on the host, on coefficient vectors
    (W(q) = sum_k c_k z_k over standard normal draws z_0, z_1, ..., one new draw per new point)."""

    def __init__(self, coef: dict[float, Coefficients] | None = None, used: int = 0) -> None:
        self.coef: dict[float, Coefficients] = {q: dict(c) for q, c in (coef or {}).items()}
        self.used = used  # draws z_0..z_{used-1} have been assigned to points

    def copy(self) -> Levy:
        return Levy(self.coef, self.used)

    def _new_draw(self) -> Coefficients:
        self.used += 1
        return {self.used - 1: 1.0}

    def w(self, q: float) -> Coefficients:
        """W(q), adding the point (see `BrownianPath`) if it is new."""
        if q in self.coef:
            return self.coef[q]
        below = [p for p in self.coef if p < q]
        above = [p for p in self.coef if p > q]
        if not self.coef:
            w: Coefficients = {}
        elif below and above:
            p, r = max(below), min(above)
            bridge = _axpy((q - p) / (r - p), _axpy(-1.0, self.coef[p], self.coef[r]), self.coef[p])
            w = _axpy(math.sqrt((q - p) * (r - q) / (r - p)), self._new_draw(), bridge)
        else:
            p = max(below) if below else min(above)
            w = _axpy(math.sqrt(abs(q - p)), self._new_draw(), self.coef[p])
        self.coef[q] = w
        return w

    def increment_rows(self, pairs: Sequence[tuple[float, float]]) -> list[list[float]]:
        """The coefficients of `(W(b) − W(a)) / sqrt|b − a|` for every pair, over z_0..z_{used-1} (points are
        added pair by pair, a before b, as the calls `noise(a, b)` would)."""
        for a, b in pairs:
            self.w(a), self.w(b)
        rows = []
        for a, b in pairs:
            d, scale = _axpy(-1.0, self.coef[a], self.coef[b]), math.sqrt(abs(b - a))
            rows.append([d.get(k, 0.0) / scale for k in range(self.used)])
        return rows


def float_pairs(pairs: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """(sigma, sigma') pairs as a tuple of float pairs (hashable: a memo key)."""
    return tuple((float(a), float(b)) for a, b in pairs)


@functools.lru_cache(maxsize=16)
def brownian_increments(pairs: tuple[tuple[float, float], ...]) -> tuple[tuple[tuple[float, ...], ...], Levy]:
    """The increment coefficients (len(pairs) rows of `draws` floats) of a new path asked for `pairs`, and the
    construction after them (memoised: a sampler asks the same pairs solve after solve; a plan folds them into
    its coefficients, `make_plan`'s mixing)."""
    levy = Levy()
    return tuple(map(tuple, levy.increment_rows(pairs))), levy


@functools.lru_cache(maxsize=16)
def fresh_increments(pairs: tuple[tuple[float, float], ...], dtype: torch.dtype, device: torch.device
                     ) -> tuple[torch.Tensor, Levy]:
    """`brownian_increments` as a tensor (len(pairs), draws) on `device`, and the construction after them."""
    rows, levy = brownian_increments(pairs)
    return torch.tensor(rows, dtype=dtype, device=device).reshape(len(pairs), levy.used), levy


class BrownianPath:
    """`noise(a, b) = (W(b) − W(a)) / sqrt|b − a|` for a Brownian motion W over sigma with W = 0 at the first
    sigma asked for. W at a new point q (one new draw z of `SeededNoise` each):

        beyond the known points, next to the nearest one p:   W(q) = W(p) + sqrt|q − p| z,
        between known neighbours p < q < r:                   W(q) = W(p) + (q − p)/(r − p) (W(r) − W(p))
                                                                     + sqrt((q − p)(r − q)/(r − p)) z,

    which is the exact law of W at the points given the known ones (Lévy's construction), so sub-step and step
    increments that share points are consistent. The construction runs on the host on coefficient vectors
    (`Levy`); `increments` forms all the increments a sampler asks for at once (one batch of draws, one
    matrix product), and a plan on a new path reads the draws themselves and folds the increment coefficients
    into its own (`plan_draws`). The numbers depend on the order of the points asked for (fixed by the
    sampler's definition), the seed and each sample's global index, not on batching."""

    def __init__(self, like: torch.Tensor, seed: int, first: int = 0, block: int = 16) -> None:
        self.source, self.block = SeededNoise(like, seed, first), max(1, int(block))
        self.shape, self.dtype, self.device = like.shape, like.dtype, like.device
        self.levy = Levy()
        self.levy_shared = False  # `levy` is a memoised construction, copied before it grows (`_own_levy`)
        self.z: torch.Tensor | None = None  # the draws made so far / sqrt(2), (drawn, B * numel)

    def _own_levy(self) -> Levy:
        if self.levy_shared:
            self.levy, self.levy_shared = self.levy.copy(), False
        return self.levy

    def _draws(self) -> torch.Tensor:
        """z_0..z_{used-1} / sqrt(2), (used, B * numel), drawn `block` at a time (or all that are missing)."""
        have, used = (0 if self.z is None else self.z.shape[0]), self.levy.used
        if have < used:
            more = self.source.scaled_draws(max(used - have, self.block if have else 0)).reshape(-1, self.shape.numel())
            self.z = more if self.z is None else torch.cat([self.z, more])
        return self.z[:used]

    def _values(self, points: Sequence[float]) -> torch.Tensor:
        """W at `points` (known ones), (len(points), *shape): one matrix product of coefficients and draws."""
        if not self.levy.used:
            return torch.zeros((len(points), *self.shape), dtype=self.dtype, device=self.device)
        z = self._draws()
        rows = [[self.levy.coef[q].get(k, 0.0) for k in range(self.levy.used)] for q in points]
        return (torch.tensor(rows, dtype=z.dtype, device=z.device) @ z).mul_(SQRT2).reshape(len(points), *self.shape)

    def increments(self, pairs: Sequence[tuple[float, float]]) -> torch.Tensor:
        """`(W(b) − W(a)) / sqrt|b − a|` for every pair (a, b), in order, (len(pairs), *shape)."""
        return self.scaled_increments(pairs).mul_(SQRT2)

    plan_scale = SQRT2  # as `SeededNoise.plan_scale`

    def plan_rows(self, pairs: Sequence[tuple[float, float]]) -> torch.Tensor | NoiseRows:
        """`scaled_increments(pairs)` for a plan: on a device and a new path, as `NoiseRows` of the element keys
        (its draws and the memoised increment matrix: what a CUDA graph replays), else made now."""
        pairs = float_pairs(pairs)
        fresh = self.fresh
        matrix = self._increment_matrix(pairs)
        if self.source.keys is None or not fresh or not self.levy.used:
            return self._combined(matrix)
        keys = self.source.keys
        salts = draw_salts(0, self.levy.used, keys.dim(), keys.device)  # the path's draws 0..used-1 (`_draws`)
        return NoiseRows(keys, functools.partial(brownian_rows, salts=salts, dtype=self.dtype, matrix=matrix),
                         ("brownian", pairs, self.dtype))

    @property
    def fresh(self) -> bool:
        """No point asked for yet: a plan may fold the increments it asks for into its coefficients."""
        return not self.levy.coef

    def plan_draws(self, pairs: Sequence[tuple[float, float]]) -> torch.Tensor | NoiseRows:
        """For a new path and a plan that folds the increments of `pairs` into its coefficients (the rows of
        `brownian_increments(pairs)` as its mixing): the draws z_0..z_{used-1} / sqrt(2) themselves (made now on
        the CPU; on a device as `NoiseRows` of the element keys), the path then holding the points asked for.
        No matrix product: the plan combines the draws in the kernels it runs anyway."""
        require(self.fresh, "plan_draws needs a new Brownian path (no point asked for yet)")
        _, self.levy = brownian_increments(float_pairs(pairs))
        self.levy_shared, used = True, self.levy.used
        if self.source.keys is None:
            draws = self.source.scaled_draws(used)
            self.z = draws.reshape(used, -1)
            return draws
        return self.source.key_rows(0, used)  # the path's draws 0..used-1 (`_draws` makes them again if asked)

    def scaled_increments(self, pairs: Sequence[tuple[float, float]]) -> torch.Tensor:
        """`increments(pairs)` / sqrt(2) (the consumer multiplies: see `SeededNoise.scaled_draws`)."""
        return self._combined(self._increment_matrix(float_pairs(pairs)))

    def _combined(self, matrix: torch.Tensor) -> torch.Tensor:
        """`matrix` (rows, used) times the draws, (rows, *shape): zeros while the path has no draws."""
        if not self.levy.used:
            return torch.zeros((matrix.shape[0], *self.shape), dtype=self.dtype, device=self.device)
        return (matrix @ self._draws()).reshape(matrix.shape[0], *self.shape)

    def _increment_matrix(self, pairs: tuple[tuple[float, float], ...]) -> torch.Tensor:
        """The coefficients (len(pairs), used) of the increments over the draws (`pairs`: `float_pairs`), adding
        the points they need (a new path takes the memoised construction for its pairs, `fresh_increments`)."""
        if self.levy.coef:
            rows = self._own_levy().increment_rows(pairs)
            return torch.tensor(rows, dtype=self.dtype, device=self.device).reshape(len(pairs), self.levy.used)
        matrix, self.levy = fresh_increments(pairs, self.dtype, self.device)
        self.levy_shared = True
        return matrix

    @property
    def points(self) -> dict[float, torch.Tensor]:
        """W at every point asked for so far."""
        points = list(self.levy.coef)
        return dict(zip(points, self._values(points).unbind(0), strict=True))

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = float(sigma), float(sigma_next)
        levy = self._own_levy()
        levy.w(a), levy.w(b)
        w = self.points
        return (w[b] - w[a]) / math.sqrt(abs(b - a))
