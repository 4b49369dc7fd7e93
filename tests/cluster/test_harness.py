"""The harness itself: a second private cluster comes up beside the session's (own config, ports, munge
socket, database), runs a job, and stopping it stops exactly its own daemons."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness import HERE, Cluster, alive

DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mysql/mariadb", "munge/munged")


def _pids(state_dir: Path) -> dict[str, int]:
    return {d: int((state_dir / "run" / f"{d}.pid").read_text()) for d in DAEMONS}


def test_second_cluster_beside_the_first_stops_only_its_own_daemons(cluster: Cluster) -> None:
    other = Path(tempfile.mkdtemp(prefix="gentool-slurm-", dir="/tmp"))
    env = {**os.environ, "SLURM_CONF": str(other / "etc" / "slurm.conf")}
    try:
        started = subprocess.run(["bash", str(HERE / "start-slurm.sh"), str(other)], capture_output=True, text=True,
                                 timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        theirs = _pids(other)
        job = subprocess.run(["srun", "--mem=50M", "printenv", "SLURM_CLUSTER_NAME", "SLURM_CONF"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert job.returncode == 0 and job.stdout.split() == ["gentool", env["SLURM_CONF"]], job.stderr
        ports = subprocess.run(["scontrol", "show", "config"], env=env, capture_output=True, text=True).stdout
        assert f"SlurmctldPort           = {cluster.config('SlurmctldPort')}\n" not in ports
    finally:
        subprocess.run(["bash", str(HERE / "stop-slurm.sh"), str(other)], capture_output=True, timeout=120)
        shutil.rmtree(other, ignore_errors=True)
    assert not any(map(alive, theirs.values())), theirs
    assert all(map(alive, _pids(cluster.state_dir).values()))
    assert cluster.node_state() in ("idle", "mixed", "allocated")
