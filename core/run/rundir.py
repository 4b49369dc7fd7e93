"""The run directory: one place that locks it, marks its owner, stores its config and commits units.

Layout (every file written atomically, see `gentool.core.io`):

    config.json          {"command", "config", "seed", "env" (versions, device), "argv"}
    .gentool.lock        exclusive `flock` held while a process works here (released when it dies)
    units/000001.jsonl   the rows of unit 1, ...           (committed before state.pt)
    state.pt             {"units_done", "job": job.state_dict(), "units": {file: [size, sha256]}}: the commit
                         point of the last unit, with the manifest of the committed unit files
    samples.npz          the job's current samples (refreshed at every commit)
    snapshots/000001.npz a copy of the samples after unit 1, ... (jobs with `snapshot_every`)
    metrics.jsonl        all rows, written once the run is complete
    DONE.json            completion marker {"command", "units", "seconds", "summary"}

A directory belongs to the command that first wrote its `config.json`; another command, a second process,
or a resumed run whose settings differ are refused with one line naming what differs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gentool.core.errors import BadInput, StorageError
from gentool.core.io import (
    atomic_save_npz,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    jsonl_text,
    load_numpy_file,
    load_torch_file,
    read_json,
    read_jsonl,
)

LOCK = ".gentool.lock"
CONFIG = "config.json"
STATE = "state.pt"
DONE = "DONE.json"
UNITS = "units"
RESUME_MODES = ("never", "require", "auto")


def _unit_file(out: Path, unit: int) -> Path:
    return out / UNITS / f"{unit:06d}.jsonl"


def snapshot_path(out: str | Path, unit: int) -> Path:
    """Where the samples after `unit` are kept when the job asks for snapshots (`snapshot_every`)."""
    return Path(out) / "snapshots" / f"{unit:06d}.npz"


def read_snapshot(out: str | Path, unit: int) -> dict[str, Any]:
    """The arrays of the snapshot after `unit` (read with `load_numpy_file`: no pickles, headers checked)."""
    return load_numpy_file(snapshot_path(out, unit), "snapshot")


def _acquire(out: Path, command: str) -> int:
    """Open and `flock` the lock file (non-blocking); a held lock is bad input naming its holder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)  # mode follows the umask
    except OSError as exc:
        raise StorageError(f"cannot use run directory {out}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise BadInput(f"run directory {out} is in use by {holder}; wait for it to finish or choose "
                       "another output directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"gentool {command} (pid {os.getpid()})".encode(), 0)
    return fd


def clean_temporaries(out: Path) -> int:
    """Delete leftover temp files of interrupted atomic writes (`.<name>.*.tmp`) in `out` and its direct
    subdirectories, except subdirectories that are run directories of their own (a sweep's points, which
    another process may be writing); returns how many were deleted."""
    dirs = [out] + [d for d in out.iterdir() if d.is_dir() and not (d / CONFIG).exists() and not (d / LOCK).exists()]
    gone = 0
    for d in dirs:
        for tmp in d.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            gone += 1
    return gone


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], extendable: tuple[str, ...] = ()
                       ) -> list[str]:
    """`name (old -> new)` for every setting that differs; `extendable` settings may grow."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b or (key in extendable and isinstance(a, int | float) and isinstance(b, int | float) and b >= a):
            continue
        diffs.append(f"{key} ({a!r} -> {b!r})")
    return diffs


@dataclass
class RunDirectory:
    """An opened, locked run directory (see the module docstring). Use `open_run_dir` to get one."""

    path: Path
    command: str
    stored: dict[str, Any] | None = None  # the config.json found when opened (None: a fresh directory)
    _fd: int = field(default=-1, repr=False)
    manifest: dict[str, list[Any]] = field(default_factory=dict)  # unit file -> [size, sha256] of committed units
    had_lock: bool = True  # whether the lock file existed before this process opened the directory

    @property
    def complete(self) -> bool:
        return (self.path / DONE).is_file()

    def write_config(self, config: Mapping[str, Any], seed: int | None, device: str | torch.device | None
                     ) -> None:
        """Record command, config, seed, versions and device (`config.json`)."""
        import sys

        atomic_write_json(self.path / CONFIG, {"command": self.command, "config": dict(config), "seed": seed,
                                               "env": environment_info(device), "argv": sys.argv})

    def commit(self, units_done: int, pending: list[tuple[int, list[dict[str, Any]]]],
               state: dict[str, Any], samples: Mapping[str, Any] | None, snapshot: bool = False) -> None:
        """Write the pending units' rows, the samples (and a snapshot copy), then the state (the commit point)."""
        manifest = dict(self.manifest)
        for unit, rows in pending:
            data = jsonl_text(rows).encode("utf-8")
            atomic_write_bytes(_unit_file(self.path, unit), data)
            manifest[_unit_file(self.path, unit).name] = [len(data), hashlib.sha256(data).hexdigest()]
        if samples is not None:
            atomic_save_npz(self.path / "samples.npz", **samples)
            if snapshot:
                atomic_save_npz(snapshot_path(self.path, units_done), **samples)
        atomic_torch_save(self.path / STATE, {"units_done": units_done, "job": state, "units": manifest})
        self.manifest = manifest

    def load_state(self) -> tuple[int, dict[str, Any] | None]:
        """(units done, job state) of the last commit; (0, None) when nothing was committed. The committed unit
        files are checked against the manifest in the state (size and sha256 of each)."""
        path = self.path / STATE
        if not path.exists():
            return 0, None
        state = load_torch_file(path, "state file")
        if not (isinstance(state, dict) and isinstance(state.get("units_done"), int) and "job" in state
                and isinstance(state.get("units", {}), dict)):
            raise BadInput(f"state file {path} is not a gentool run state; delete {self.path} to start over")
        self.manifest = dict(state.get("units", {}))
        if "units" in state:  # runs committed before the manifest existed are not checked
            self.verify_units(state["units_done"])
        return state["units_done"], state["job"]

    def verify_units(self, units_done: int) -> None:
        """Every committed unit file 1..units_done exists with the size and sha256 its manifest records, else
        `BadInput` naming the first missing or changed unit and the command that recomputes the run."""
        for unit in range(1, units_done + 1):
            path = _unit_file(self.path, unit)
            size, digest = self.manifest.get(path.name, [None, None])
            problem = "is missing" if not path.is_file() else None
            if problem is None:
                data = path.read_bytes()
                if (len(data), hashlib.sha256(data).hexdigest()) != (size, digest):
                    problem = "has changed since it was committed (size or sha256 differ from the manifest)"
            if problem:
                raise BadInput(f"cannot resume {self.path}: committed unit {unit} ({path}) {problem}; its rows "
                               f"cannot be rebuilt from the last state: recompute the run into a new output "
                               f"directory with `{self.recompute_command()}`")

    def recompute_command(self) -> str:
        """The command line recorded in config.json (`argv`), as `gentool ...`; or where the settings are."""
        import shlex

        argv = [str(a) for a in (self.stored or {}).get("argv") or []]
        if argv and Path(argv[0]).name == "gentool":
            return "gentool " + shlex.join(argv[1:])
        return f"gentool {self.command} with the settings and seed of {self.path / CONFIG}"

    def rows(self, units_done: int) -> list[dict[str, Any]]:
        """The committed rows of units 1..units_done (read first); rows of uncommitted later units are then
        deleted."""
        rows: list[dict[str, Any]] = []
        for unit in range(1, units_done + 1):
            path = _unit_file(self.path, unit)
            try:
                rows += read_jsonl(path)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise BadInput(f"committed rows {path} are corrupt; delete {self.path} to start over") from None
        for late in sorted((self.path / UNITS).glob("*.jsonl")):
            if late.stem.isdigit() and int(late.stem) > units_done:
                late.unlink()
        return rows

    def discard(self, remove_dir: bool) -> None:
        """Remove what a fresh run wrote before its first commit (and the directory, if the run created it)."""
        import shutil

        for name in (CONFIG, STATE, "samples.npz", "metrics.jsonl", DONE):
            (self.path / name).unlink(missing_ok=True)
        for name in (UNITS, "snapshots"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        if remove_dir and not [p for p in self.path.iterdir() if p.name != LOCK]:
            shutil.rmtree(self.path, ignore_errors=True)
        elif not self.had_lock:
            (self.path / LOCK).unlink(missing_ok=True)

    def finish(self, rows: list[dict[str, Any]], units: int, summary: Mapping[str, Any], seconds: float) -> None:
        """Write `metrics.jsonl` and the completion marker."""
        atomic_write_text(self.path / "metrics.jsonl", jsonl_text(rows))
        atomic_write_json(self.path / DONE, {"command": self.command, "units": units, "seconds": seconds,
                                             "summary": dict(summary)})


def _read_stored(out: Path) -> dict[str, Any] | None:
    path = out / CONFIG
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(f"{path} is corrupt (not JSON); delete {out} to start over") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise BadInput(f"{path} is not a gentool run configuration; choose another output directory")
    return data


def check_owner(out: Path, stored: dict[str, Any] | None, command: str) -> None:
    """A directory holding another command's run (or a run of unknown origin) is refused."""
    if stored is None:
        return
    owner = stored.get("command")
    if owner != command:
        what = f"a `{owner}` run" if owner else "a run of an unknown command"
        raise BadInput(f"{out} already holds {what}; choose another output directory for this {command} run")


@contextlib.contextmanager
def open_run_dir(out: str | Path, command: str) -> Iterator[RunDirectory]:
    """Lock `out` for `command` (created if needed), check its owner, remove leftover temp files.

    The lock is released when the block ends (or the process dies: `flock` locks do not outlive it).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StorageError(f"cannot use {out} as a run directory: it is an existing file")
    had_lock = (out / LOCK).exists()
    fd = _acquire(out, command)
    try:
        stored = _read_stored(out)
        check_owner(out, stored, command)
        clean_temporaries(out)
        yield RunDirectory(out, command, stored, fd, had_lock=had_lock)
    finally:
        os.close(fd)
