"""Atomic file output and run-directory metadata.

Every file is written to a temporary sibling and moved into place with `os.replace`, so a
reader (or a resumed run) never sees a half-written file, even after SIGKILL.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core.errors import BadInput, StorageError


def process_umask() -> int:
    """The process's file-mode creation mask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same directory + fsync + rename).

    The file gets mode 0o666 & ~umask (0644 under umask 022, group-writable under 002), as `open` would give
    it: the temp file's private 0600 is widened before the rename. Directories are made with 0o777 & ~umask.
    A file-system failure (permissions, full disk, a parent that is a file) is a `StorageError` naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~process_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    """Convert tensors, arrays, numpy scalars and paths into JSON-friendly values."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (tensors and arrays become lists)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def jsonl_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as JSON Lines text (sorted keys; tensors and arrays become lists)."""
    return "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in rows)


def atomic_write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write all `rows` as JSON Lines atomically (the whole file is replaced)."""
    return atomic_write_text(path, jsonl_text(rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file; a missing file reads as no rows."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Append `rows` to a JSON Lines file by atomically rewriting it (never a torn last line)."""
    return atomic_write_jsonl(path, [*read_jsonl(path), *rows])


def atomic_save_npz(path: str | Path, **arrays: Any) -> Path:
    """Save arrays (tensors allowed) to a compressed `.npz` atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(_jsonable(v) if isinstance(v, torch.Tensor) else v)
                                for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """`torch.save` atomically (checkpoints)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch_file(path: str | Path, what: str) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`: the one way gentool reads a `.pt` file.

    Only tensors, containers (dict, list, tuple) and plain scalars are rebuilt; a file that names any other
    Python object (a pickle whose `__reduce__` would run code) is refused before anything in it runs.
    Refused or unreadable files are `BadInput` naming `what` and `path`.
    """
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": the load itself reports what is wrong
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(GLOBAL [\w.]+|Unsupported operand \d+|Unsupported class [\w.]+)", str(exc))
        detail = f" ({found.group(1)})" if found else ""
        raise BadInput(f"cannot read {what} {path}: it is not a file of tensors and plain data{detail}; gentool "
                       "never unpickles other Python objects, which could run code") from None
    except Exception as exc:  # noqa: BLE001 - any other unreadable file is the user's to fix
        raise BadInput(f"cannot read {what} {path}: {type(exc).__name__}") from None


REAL_KINDS = "biuf"  # numpy dtype kinds gentool reads: bool, signed and unsigned integers, floats


def memory_available(device: str | torch.device | None = None) -> int:
    """Bytes that an allocation on `device` may use: free CUDA memory, else `MemAvailable` of /proc/meminfo
    (physical memory where that file is missing)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_allocation(nbytes: float, what: str, device: str | torch.device | None = None) -> None:
    """Refuse (`BadInput`) an allocation of about `nbytes` bytes that does not fit in `memory_available`;
    `what` names the data and the settings that size it."""
    limit = memory_available(device)
    if nbytes > limit:
        raise BadInput(f"{what} needs about {_size(nbytes)} of memory, more than the {_size(limit)} available "
                       f"on {torch.device(device) if device is not None else 'cpu'}")


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.3g} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.3g} EiB"


def _npy_header(fh: Any, source: str, what: str) -> None:
    """Check an `.npy` header (read from `fh`) before its data is allocated: a real numeric dtype and a size
    that fits in memory."""
    version = np.lib.format.read_magic(fh)
    shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                       else np.lib.format.read_array_header_2_0(fh))
    if dtype.kind not in REAL_KINDS or dtype.hasobject:
        raise BadInput(f"{what}: {source} holds {dtype} values; only real numbers (bool, integer, float) are "
                       "accepted")
    count = math.prod(int(n) for n in shape)
    check_allocation(count * dtype.itemsize, f"{what}: {source} of shape {tuple(shape)}")


def load_numpy_file(path: str | Path, what: str) -> Any:
    """The array of an `.npy` file, or a dict of the arrays of an `.npz` file: the one way gentool reads them.

    Headers are checked before any data is read (real numeric dtypes only; the size must fit in memory),
    and `allow_pickle=False`, so an object array is refused instead of unpickled. A refused or unreadable
    file is `BadInput` naming `what` and `path`.
    """
    import zipfile

    path = Path(path)
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    with archive.open(name) as fh:
                        _npy_header(fh, f"{path}:{name.removesuffix('.npy')}", what)
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        with open(path, "rb") as fh:
            _npy_header(fh, str(path), what)
        return np.load(path, allow_pickle=False)
    except BadInput:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise BadInput(f"{what}: cannot read {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix of `path`."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def environment_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions and device description recorded in every run directory."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "gentool": version("gentool"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torchdiffeq": version("torchdiffeq"),
        "scipy": version("scipy"),
        "platform": platform.platform(),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info
