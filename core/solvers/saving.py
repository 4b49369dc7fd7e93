"""What a solve returns: the `Solution` record and the trajectory assembly for adaptive solves."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SAVE_MODES = ("final", "times", "trajectory")


@dataclass
class Solution:
    """Result of `batch_odeint`.

    x: final state (B, ...). xs: saved states (T, B, ...) or None for save="final".
    ts: times of `xs` — (T,) for a grid, (T, B) for an adaptive trajectory (padded by repeating the last
    state and time), or the per-sample final time (B,) for save="final".
    nfe / accepted / rejected: per-sample counts (B,) (-1 where a backend does not report them).
    reached: (B,) bool, False where a sample stopped at max_steps before t_end.
    """

    x: torch.Tensor
    xs: torch.Tensor | None
    ts: torch.Tensor
    nfe: torch.Tensor
    accepted: torch.Tensor
    rejected: torch.Tensor
    reached: torch.Tensor


def assemble_trajectory(x0: torch.Tensor, t0: torch.Tensor,
                        history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample accepted states, aligned: row n holds each sample's state after its n-th accepted step.

    `history` holds (x, t, accept) after every masked iteration; rows past a sample's last accepted
    step repeat its final state and time.
    """
    xs_all = torch.stack([x0] + [h[0] for h in history])
    ts_all = torch.stack([t0] + [h[1] for h in history])
    acc = torch.stack([torch.ones_like(history[0][2])] + [h[2] for h in history]) if history else \
        torch.ones_like(t0, dtype=torch.bool).unsqueeze(0)
    pos = acc.long().cumsum(0) - 1  # row of each accepted state in the output
    n_rows = int(pos[-1].max()) + 1
    final_x, final_t = xs_all[-1], ts_all[-1]
    xs = final_x.unsqueeze(0).repeat(n_rows, *([1] * x0.dim())).contiguous()
    ts = final_t.unsqueeze(0).repeat(n_rows, 1).contiguous()
    it, b = acc.nonzero(as_tuple=True)
    xs[pos[it, b], b] = xs_all[it, b]
    ts[pos[it, b], b] = ts_all[it, b]
    return xs, ts
