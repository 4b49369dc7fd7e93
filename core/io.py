"""Atomic file output and run-directory metadata.

Every file is written to a temporary sibling and moved into place with `os.replace`, so a
reader (or a resumed run) never sees a half-written file, even after SIGKILL.
"""

from __future__ import annotations

import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gentool.core.errors import StorageError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same directory + fsync + rename).

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
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info
