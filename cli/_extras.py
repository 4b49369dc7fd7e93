"""Missing optional extras: a `ModuleNotFoundError` for a package of one of gentool's extras becomes advice.

The extras are read from the installed package's metadata (`Requires-Dist: diffusers>=0.30; extra ==
"diffusers"`), so `pyproject.toml`'s `[project.optional-dependencies]` stays their one definition: any code path
that imports an extra's package lazily (`import diffusers` inside the function that needs it) gets the one-line
message `... pip install 'gentool[diffusers]'` and exit 2 from `handle_errors`, with nothing to register.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import metadata

REQUIREMENT = re.compile(r"""^\s*([A-Za-z0-9][A-Za-z0-9._-]*).*;.*\bextra\s*==\s*["']([^"']+)["']""")


def _module_name(distribution: str) -> str:
    """The import name a distribution name usually has (`scikit-learn` -> `scikit_learn`, lower case)."""
    return re.sub(r"[-.]+", "_", distribution).lower()


@cache
def extra_packages() -> dict[str, str]:
    """Import name -> extra, for every requirement of gentool that belongs to an extra (first extra wins)."""
    try:
        requires = metadata.requires("gentool") or []
    except metadata.PackageNotFoundError:
        return {}
    out: dict[str, str] = {}
    for req in requires:
        match = REQUIREMENT.match(req)
        if match:
            out.setdefault(_module_name(match.group(1)), match.group(2))
    return out


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The message for a missing package of an extra (naming the `pip install` that provides it), or None when
    the missing module belongs to no extra."""
    top = (exc.name or "").split(".")[0]
    extra = extra_packages().get(_module_name(top)) if top else None
    if extra is None:
        return None
    return f"the optional package {top!r} is not installed; install the {extra!r} extra: pip install 'gentool[{extra}]'"
