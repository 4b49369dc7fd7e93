"""The Slurm commands a sweep runs itself; submission goes through submitit.

- `queued(job_ids)`: which jobs are still in Slurm's queue (squeue asks the controller, so it is current and
  needs no accounting database). A job that left the queue has finished one way or another.
- `final_states(job_ids)`: how finished jobs ended (sacct; empty where accounting is not available).
- `sbatch_refusal(text)`: sbatch's complaint as one line.

Job ids are submitit's: `123` for a single job, `123_4` for task 4 of array job 123.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable

QUERY_TIMEOUT_S = 60
FINAL_STATE_WAIT_S = 10.0
# sacct states of a job that has not ended (squeue only ever lists such jobs)
NOT_ENDED = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING",
             "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD")


def _run(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a Slurm client command; None when it cannot be run at all (not installed, hung)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def array_ids(job_ids: Iterable[str]) -> list[str]:
    """The distinct job ids to ask Slurm about (`123_4` -> `123`), in order."""
    return list(dict.fromkeys(str(j).split("_", 1)[0] for j in job_ids))


def parse_squeue(text: str) -> dict[str, str]:
    """`squeue --noheader --array --format=%i|%T` output as {job id: state}."""
    rows = (line.split("|", 1) for line in text.splitlines() if "|" in line)
    return {job.strip(): state.strip() for job, state in rows}


def queued(job_ids: Iterable[str]) -> dict[str, str] | None:
    """{job id: state} of those of `job_ids` still in the queue (pending, running, completing, requeued, ...);
    None when squeue cannot be asked (no Slurm here, controller unreachable)."""
    ids = array_ids(job_ids)
    if not ids:
        return {}
    done = _run(["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs", ",".join(ids)])
    if done is None:
        return None
    if done.returncode != 0:  # every id unknown to the controller: all of them left the queue long ago
        return {} if "Invalid job id" in done.stderr else None
    listed = parse_squeue(done.stdout)
    return {j: listed[j] for j in job_ids if j in listed}


def parse_sacct(text: str) -> dict[str, str]:
    """`sacct --allocations --parsable2 --noheader --format=JobID,State` output as {job id: state}. A range
    of array tasks (`123_[2-5%1]`, the record of tasks that never ran on their own) gives its state to each
    task without a record of its own; states keep their detail (`CANCELLED by 0`)."""
    own: dict[str, str] = {}
    ranged: dict[str, str] = {}
    for line in text.splitlines():
        job, _, state = (part.strip() for part in line.partition("|"))
        match = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job)
        if not match:
            own[job] = state
            continue
        for part in match.group(2).split(","):
            low, _, high = part.partition("-")
            ranged.update({f"{match.group(1)}_{task}": state for task in range(int(low), int(high or low) + 1)})
    return {**ranged, **own}


def final_states(job_ids: Iterable[str], wait_s: float = FINAL_STATE_WAIT_S) -> dict[str, str] | None:
    """{job id: state} from accounting for jobs that left the queue (COMPLETED, FAILED, CANCELLED by 0,
    TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...). Accounting may lag the queue by a moment, so sacct is asked
    again for up to `wait_s` until every job shows an end state (an array task cancelled while pending may
    never get a record). None when sacct is not available (no accounting on this cluster)."""
    job_ids = list(job_ids)
    deadline = time.monotonic() + wait_s
    while True:
        done = _run(["sacct", "--allocations", "--parsable2", "--noheader", "--format=JobID,State",
                     "--jobs", ",".join(array_ids(job_ids))])
        if done is None or done.returncode != 0:
            return None
        states = parse_sacct(done.stdout)
        found = {j: states[j] for j in job_ids if j in states}
        ended = all(j in found and found[j].split()[0] not in NOT_ENDED for j in job_ids)
        if ended or time.monotonic() >= deadline:
            return {j: s for j, s in found.items() if s.split()[0] not in NOT_ENDED}
        time.sleep(1.0)


def sbatch_refusal(stderr: str) -> str:
    """The line that says why sbatch refused a job (`sbatch: error: Batch job submission failed: ...`),
    without the `sbatch: error:` prefix."""
    lines = [ln.strip() for ln in str(stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["sbatch failed without a message"]
    return re.sub(r"^sbatch:\s*error:\s*", "", errors[-1])
