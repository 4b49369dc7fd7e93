"""Per-owner caches of captured CUDA graphs and compiled steps (the solver core's only global state).

Entries live in a `WeakKeyDictionary` keyed by an *owner*, the object whose lifetime scopes them: the
field passed to `batch_odeint`, or the denoiser a sampler wraps (samplers build a fresh term object per call,
so the denoiser, not the term, must own the entries). A `CacheScope` names the owner and a tag that
separates different terms built on one owner (the denoised output, the PF-ODE direction, ...).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

_CACHE: weakref.WeakKeyDictionary[Any, dict[str, dict]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CacheScope:
    """Who owns cached graphs/compiled steps (`owner`, held weakly) and which of its terms (`tag`)."""

    owner: Any
    tag: Hashable = ""


def entries(owner: Any, kind: str) -> dict:
    """The cache dict of `kind` ("graphs", "compiled", ...) for `owner`; a throwaway dict when the owner
    cannot be weakly referenced (then nothing is cached across calls)."""
    try:
        per_owner = _CACHE.setdefault(owner, {})
    except TypeError:
        return {}
    return per_owner.setdefault(kind, {})


def put(cache: dict, key: Hashable, value: Any, limit: int) -> Any:
    """Insert `value`, dropping the oldest entries beyond `limit`; returns `value`."""
    while len(cache) >= limit:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value


def captured(cache: dict, key: Hashable, build: Callable[[], Any], limit: int, strict: bool) -> Any:
    """`cache[key]`, built on first use by `build()` (a CUDA-graph capture). A failed build is remembered as
    None and not retried, unless `strict` (then its error propagates)."""
    if key not in cache:
        try:
            value = build()
        except Exception:
            if strict:
                raise
            value = None
        put(cache, key, value, limit)
    return cache[key]
