"""Typed config dataclasses: declaring fields, coercing values from TOML or command-line text, validating.

A job's config is a frozen dataclass whose fields are declared with `setting(...)` (default, help text,
allowed values, whether a resumed run may raise it). The same dataclass is what a recipe's `[options]`
table, a CLI command and a Python call construct, so names and checks live in one place:

    make_config(MadConfig, {"n-synth": "20", "loop": "accumulate"})   # dashes or underscores; text or values

Validation runs in each dataclass's `__post_init__` with the `check_*` helpers below, and every message
names the field (`n_synth must be an integer >= 2, got 1`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from gentool.core.errors import BadInput, choose

Parser = Callable[[Any], Any]


def setting(default: Any, help: str, *, choices: Iterable[str] | None = None, extendable: bool = False,
            parse: Parser | None = None, short: str | None = None, metavar: str | None = None,
            old: Iterable[str] = (), applies: Mapping[str, Iterable[str]] | None = None) -> Any:
    """A config field: `help` is shown by the CLI; `choices` are the allowed values (listed in help and
    errors); `extendable` settings (run lengths) may grow when a run is resumed; `parse` turns text or a
    TOML value into the field's value; `short` is a one-letter CLI alias such as "-n" (or, without dashes, a
    second long name); `old` are former
    names of the field, still accepted for one release (as keys and as hidden CLI options); `applies`
    ({"mode": ("particles", "exact")}) says which choices of other fields use the setting: with any other
    choice it must keep its default (`check_applies`)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "extendable": extendable,
            "parse": parse, "short": short, "metavar": metavar, "old": tuple(old),
            "applies": {k: tuple(v) for k, v in (applies or {}).items()}}
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple or None for container defaults")
    return dataclasses.field(default=default, metadata=meta)


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The dataclass fields of a config class, in declaration order."""
    return list(dataclasses.fields(cls))


def field_name(cls: type, key: str) -> str | None:
    """The field that `key` (dashes or underscores; the field's name or one of its `old` names) names, or None."""
    name = str(key).replace("-", "_")
    return next((f.name for f in config_fields(cls) if name == f.name or name in f.metadata.get("old", ())), None)


def current_names(cls: type, config: Any) -> Any:
    """A stored config mapping with former field names (`setting(old=...)`) replaced by the current ones."""
    if not isinstance(config, Mapping):
        return config
    return {field_name(cls, key) or key: value for key, value in config.items()}


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of the config class's fields."""
    return typing.get_type_hints(cls)


def extendable_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in config_fields(cls) if f.metadata.get("extendable"))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as a JSON-friendly dict (tuples become lists, paths strings)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in config_fields(type(cfg))}


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _scalar(kind: type, name: str, value: Any) -> Any:
    """Coerce one value to int, float, str, bool or Path (text from the command line, or TOML values)."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is Path:
            return Path(str(value))
        return str(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be {'a' if kind is not int else 'an'} {kind.__name__}, got {value!r}") from None


def coerce(name: str, hint: Any, value: Any) -> Any:
    """Coerce `value` to the type `hint` (scalars, `X | None`, `tuple[X, ...]`, `Literal[...]`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        return coerce(name, inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        kind = args[0] if args else str
        return tuple(coerce(name, kind, v) for v in _split(value))
    if origin is typing.Literal:
        return choose(name, str(value), [str(a) for a in args])
    if hint in (int, float, str, bool, Path):
        return _scalar(hint, name, value)
    return value


def make_config(cls: type, options: Mapping[str, Any], where: str = "") -> Any:
    """Build config `cls` from `options` (keys with dashes or underscores; values text or typed).

    Unknown keys are `BadInput` naming the nearest field; values are coerced by the field types (or a
    field's `parse`), then the dataclass validates itself.
    """
    fields = {f.name: f for f in config_fields(cls)}
    hints = field_types(cls)
    prefix = f"{where}: " if where else ""
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        name = field_name(cls, key)
        if name is None:
            try:
                choose("setting", str(key), [n.replace("_", "-") for n in fields])
            except BadInput as exc:
                raise BadInput(prefix + str(exc)) from None
        if name in kwargs:
            raise BadInput(f"{prefix}{name} is given twice (under its name and a former name)")
        parse = fields[name].metadata.get("parse")
        try:
            kwargs[name] = parse(value) if parse is not None and value is not None else coerce(name, hints[name], value)
        except BadInput as exc:
            raise BadInput(prefix + str(exc)) from None
    try:
        cfg = cls(**kwargs)
        check_applies(cfg, kwargs)
    except BadInput as exc:
        raise BadInput(prefix + str(exc)) from None
    return cfg


class derived_choice(property):  # noqa: N801 (used like `property`)
    """A choice computed from a config's settings (e.g. `source`: the analytic target's name, or "model"), read as
    a property and usable as an `applies` key like a field declared with `choices`."""

    def __init__(self, pick: Callable[[Any], str | None], choices: Iterable[str], doc: str) -> None:
        super().__init__(pick, doc=doc)
        self.choices = tuple(choices)


def choices_of(cls: type, key: str) -> tuple[str, ...]:
    """The values of choice `key` of config `cls`: a field's `choices`, or a `derived_choice`'s."""
    derived = getattr(cls, key, None)
    if isinstance(derived, derived_choice):
        return derived.choices
    return next((f.metadata.get("choices") or () for f in config_fields(cls) if f.name == key), ())


def check_applies(cfg: Any, given: Mapping[str, Any] | None = None) -> None:
    """One rule for settings a method does not use: a setting declared with `applies={key: choices}` (`key` a
    field with choices or a `derived_choice`) may be given a value other than its default only when `key` is one
    of `choices`; otherwise `BadInput` naming the settings that the chosen value takes. `given` holds the settings
    set explicitly (`make_config`: defaults, and values a config resolves itself, never trigger the rule); without
    it every field counts (a config checking itself in `__post_init__`, whose declared settings are never
    resolved). `make_config` runs it after the config's own checks (an unknown or out-of-range value is reported
    as such); a config without `key` (a subclass of the one that declares it) skips it."""
    cls = type(cfg)
    fields = config_fields(cls)
    given = {f.name: getattr(cfg, f.name) for f in fields} if given is None else given
    for f in fields:
        if f.name not in given or given[f.name] == f.default:
            continue
        for key, allowed in f.metadata.get("applies", {}).items():
            if not choices_of(cls, key):
                continue  # a subclass without that choice (optimize compare runs several methods)
            value = getattr(cfg, key)
            if value not in allowed and value in choices_of(cls, key):
                takes = [g.name for g in fields if value in g.metadata.get("applies", {}).get(key, ())]
                raise BadInput(f"{f.name} applies to {key} {', '.join(map(str, allowed))}, not {value!r}; {key} "
                               f"{value!r} takes: {', '.join(takes) or 'none of them'} (of the {key}-specific "
                               "settings)")


def check_path(name: str, value: str | Path, what: str, kind: str = "directory") -> Path:
    """A path given as text, as a `Path`: an empty or blank value (which `Path` reads as the current directory)
    or one holding a NUL byte is `BadInput` naming `what` and the setting `name`."""
    text = str(value)
    if not text.strip():
        hint = " ('.' for the current one)" if kind == "directory" else ""
        raise BadInput(f"{what} ({name}) is empty; name a {kind}{hint}")
    if "\0" in text:
        raise BadInput(f"{what} ({name}) holds a NUL byte: {text!r}")
    return Path(text)


ARRAY_FILES = (".npy", ".npz", ".csv", ".txt")


def parse_vector(value: Any, name: str = "vector") -> tuple[float, ...]:
    """A vector from `"1,0.5,-1"`, a list of numbers, or a file (see `read_array`)."""
    return tuple(float(v) for v in _array(value, name).ravel())


def parse_matrix(value: Any, name: str = "matrix") -> tuple[tuple[float, ...], ...]:
    """A matrix from rows `"a,b;c,d"`, nested lists, or a file (see `read_array`)."""
    arr = _array(value, name)
    arr = arr.reshape(1, -1) if arr.ndim < 2 else arr
    if arr.ndim != 2:
        raise BadInput(f"{name} must be 2-D, got shape {arr.shape}")
    return tuple(tuple(float(v) for v in row) for row in arr)


def is_array_file(value: Any) -> bool:
    """Whether `value` names an array file: `PATH.npy|.csv|.txt`, `PATH.npz` or `PATH.npz:NAME`."""
    return isinstance(value, str | Path) and _split_key(str(value))[0].suffix in ARRAY_FILES


def _split_key(text: str) -> tuple[Path, str | None]:
    """`PATH.npz:NAME` -> (PATH.npz, NAME); anything else -> (path, None)."""
    head, sep, key = text.rpartition(":")
    return (Path(head), key) if sep and Path(head).suffix == ".npz" else (Path(text), None)


def read_arrays(path: str | Path, name: str) -> Any:
    """The numbers in a file: `.npy` (one array), `.csv` (comma-separated rows), `.txt` (whitespace-separated
    rows), or `.npz` (a dict of its arrays), read without unpickling (`gentool.core.io.load_numpy_file`). A
    missing or unreadable file, a dtype that is not real (complex, object, text) or a NaN/inf entry is
    `BadInput` naming `name` (and the entry's row and column)."""
    import numpy as np

    path = Path(path)
    if path.suffix not in ARRAY_FILES:
        raise BadInput(f"{name}: {path} is not an array file (allowed: {', '.join(ARRAY_FILES)})")
    if not path.is_file():
        raise BadInput(f"{name}: file not found: {path}")
    if path.suffix in (".npy", ".npz"):
        from gentool.core.io import load_numpy_file

        loaded = load_numpy_file(path, name)
        if isinstance(loaded, dict) and not loaded:
            raise BadInput(f"{name}: cannot read {path}: the archive holds no array")
        arrays = {k: np.asarray(v, dtype=float) for k, v in loaded.items()} if isinstance(loaded, dict) else \
            np.asarray(loaded, dtype=float)
    else:
        try:
            arrays = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1, dtype=float)
        except (ValueError, OSError, TypeError, EOFError) as exc:
            raise BadInput(f"{name}: cannot read {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
                           ) from None
    for key, arr in (arrays.items() if isinstance(arrays, dict) else [(None, arrays)]):
        check_finite_array(arr, f"{name}: {path}{':' + key if key else ''}")
    return arrays


def check_finite_array(arr: Any, where: str) -> None:
    """`BadInput` naming the first non-finite entry of `arr` (its row and column, 1-based) and `where`."""
    import numpy as np

    values = np.asarray(arr, dtype=float)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        at = tuple(int(i) + 1 for i in bad[0])
        place = {1: f"entry {at[0]}", 2: f"row {at[0]}, column {at[-1]}"}.get(len(at), f"index {at}")
        value = values[tuple(bad[0])]
        raise BadInput(f"{where} must be finite: it holds {value} at {place}")


def read_array(value: str | Path, name: str) -> Any:
    """One array from a file: `PATH.npy|.csv|.txt`, `PATH.npz` holding exactly one array, or `PATH.npz:NAME`."""
    path, key = _split_key(str(value))
    arrays = read_arrays(path, name)
    if not isinstance(arrays, dict):
        return arrays
    if key is None and len(arrays) == 1:
        return next(iter(arrays.values()))
    if key not in arrays:
        raise BadInput(f"{name}: {path} holds arrays {', '.join(arrays)}; name one as {path}:NAME")
    return arrays[key]


def vector_parser(name: str) -> Callable[[Any], tuple[float, ...]]:
    """A setting's `parse`: `parse_vector` with errors naming the setting."""
    return lambda value: parse_vector(value, name)


def matrix_parser(name: str) -> Callable[[Any], tuple[tuple[float, ...], ...]]:
    """A setting's `parse`: `parse_matrix` with errors naming the setting."""
    return lambda value: parse_matrix(value, name)


def float64_tensor(values: Any, default: Any = None) -> Any:
    """A vector/matrix setting as a float64 tensor; `default` when it is unset (None)."""
    import torch

    return default if values is None else torch.tensor(values, dtype=torch.float64)


def read_tensors(path: str | Path | None, name: str) -> Any:
    """`read_arrays` as float64 tensors (a dict of them from `.npz`); None without a path."""
    import torch

    if path is None:
        return None
    arrays = read_arrays(path, name)
    if isinstance(arrays, dict):
        return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in arrays.items()}
    return torch.as_tensor(arrays, dtype=torch.float64)


def file_digest(value: str | Path | None) -> str:
    """sha256 of a file named by a setting ("" without one; `FILE.npz:NAME` names FILE.npz): a resumed run
    refuses a changed file."""
    import hashlib

    return "" if value is None else hashlib.sha256(_split_key(str(value))[0].read_bytes()).hexdigest()


def _array(value: Any, name: str) -> Any:
    """The numbers of a vector/matrix setting (text, a list, or an array file): real and finite, else `BadInput`
    naming the setting (and the entry)."""
    import numpy as np

    if is_array_file(value):
        return read_array(value, name)
    if isinstance(value, str):
        rows = [r for r in value.split(";")]
        try:
            parsed = [[float(v) for v in r.split(",") if v.strip()] for r in rows]
        except ValueError:
            raise BadInput(f"{name} must be comma-separated numbers (rows separated by ';') or an array file "
                           f"({', '.join(ARRAY_FILES)}), got {value!r}") from None
        if any(len(r) != len(parsed[0]) for r in parsed) or not parsed[0]:
            raise BadInput(f"{name} rows must be non-empty and of equal length, got {value!r}")
        arr = np.array(parsed, dtype=float)
        arr = arr[0] if len(rows) == 1 else arr
    else:
        if np.iscomplexobj(value):
            raise BadInput(f"{name} must be real numbers, got {value!r}")
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise BadInput(f"{name} must be numbers, got {value!r}") from None
    check_finite_array(arr, name)
    return arr


# ---- validation helpers (raise BadInput naming the field) -------------------------------------------

def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    """An integer in [lo, hi] (either bound optional)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        raise BadInput(f"{name} must be an integer {_bounds(lo, hi)}, got {value!r}")


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite number in the interval given by lo/hi (closed unless `lo_open`/`hi_open`)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        bounds = _interval(lo, hi, lo_open, hi_open)
        raise BadInput(f"{name} must be a finite number{' ' + bounds if bounds else ''}, got {value!r}")


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    choose(name, value, allowed)


def _bounds(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    return f"<= {hi}" if hi is not None else ""


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
