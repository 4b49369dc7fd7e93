"""Particle methods × targets with every default (flow time, step, n = 1000 from N(0, I)): the accuracy reached
and the wall time of each `optimize particles` run.

    python bench/particles.py [--methods langevin,kde-flow,svgd,mmd-flow] [--targets gaussian-corr,gmm-ring,banana]
                              [--n 1000] [--seed 0]

Gaussian targets: mean_err (Euclidean) and cov_err (Frobenius) against the target; every target with an exact
sampler: the multi-scale MMD² against a fresh exact sample, beside the MMD² of two independent exact samples
(`noise`, the level the particles can reach). The machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from gentool.core.errors import BadInput
from gentool.core.jobs import run
from gentool.core.probspace import DEFAULTS, PARTICLE_METHODS

COLUMNS = ("method", "target", "time", "steps", "mean_err", "cov_err", "mmd2", "noise", "seconds")


def _cell(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def one(method: str, target: str, n: int, seed: int, out: Path) -> dict[str, object]:
    """Run one method on one target with its defaults; the table row."""
    start = time.perf_counter()
    try:
        res = run("optimize particles", out, target=target, method=method, n=n, seed=seed, plots=False)
    except BadInput as exc:
        return {"method": method, "target": target, "time": f"refused: {exc}"}
    s = res.summary
    return {"method": method, "target": target, "time": DEFAULTS[method].time, "steps": s["steps"],
            "mean_err": s.get("mean_err", "-"), "cov_err": s.get("cov_err", "-"), "mmd2": s.get("mmd2", "-"),
            "noise": s.get("mmd2_noise", "-"), "seconds": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(PARTICLE_METHODS))
    p.add_argument("--targets", default="gaussian-corr,gmm-ring,banana")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    print(" | ".join(COLUMNS))
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            for method in args.methods.split(","):
                row = one(method, target, args.n, args.seed, Path(tmp) / f"{target}-{method}")
                print(" | ".join(_cell(row.get(c, "")) for c in COLUMNS), flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
