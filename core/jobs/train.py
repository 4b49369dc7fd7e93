"""The `train` job: training of a small denoiser on a bundled data set; one unit = `checkpoint_every` steps.

Outputs besides the run contract's: the EMA denoiser that the sample job's `model` setting reads — `ckpt.pt` (mlp,
conv) or, for the unet, a diffusers DDPMPipeline (`model_index.json`, `unet/`, `scheduler/`:
`DiffusionPipeline.from_pretrained(out)` reads it) — and
`loss.png`, `metrics.json` (steps, mean loss of the last 100 steps, sigma_data); with `snapshots`, the EMA
denoiser after every unit in `snapshots/step_NNNNNNNNN.pt` (checkpoints of the training, for `gentool bound`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gentool.core import plots
from gentool.core.config import check_applies, check_int, setting
from gentool.core.data import DATASETS, sample_data
from gentool.core.diffusion.checkpoints import save_checkpoint, snapshot_path
from gentool.core.diffusion.diffusers_format import save_pipeline
from gentool.core.diffusion.discrete_denoiser import DiscreteDenoiser, Prediction
from gentool.core.diffusion.models import ARCHS
from gentool.core.diffusion.training import UNET_SCHEDULER, DenoiserTrainer, TrainConfig, loss_warning
from gentool.core.errors import choose
from gentool.core.io import atomic_write_json, check_allocation
from gentool.core.nn import make_generator
from gentool.core.progress import Reports, one_step
from gentool.core.run.contract import JobSpec, Row, SteppedUnits


@dataclass(frozen=True)
class TrainJobConfig:
    """What `gentool train` trains: data, network and optimisation (see `TrainConfig` for the loss)."""

    data: str = setting("moons", "Training data.", choices=DATASETS)
    n_train: int = setting(20000, "Training points drawn (digits: sampled from the 1437-image split).")
    arch: str = setting("auto", "Network: mlp, conv, unet (a diffusers UNet2DModel, square images), or auto (conv "
                        "for digits, else mlp).", choices=("auto", *ARCHS))
    width: int | None = setting(None, "Hidden width: MLP units, conv channels, unet channels of the first level "
                                "(default: 128; unet 32).")
    depth: int | None = setting(None, "Hidden layers; unet: resolution levels (default: 3; unet 2).")
    prediction: str = setting("epsilon", "unet: what the net predicts (its diffusers prediction_type).",
                              choices=tuple(p.value for p in Prediction), applies={"arch": ("unet",)})
    steps: int = setting(3000, "Total optimisation steps (a resumed run may raise it).", extendable=True)
    batch_size: int = setting(512, "Minibatch size.", old=("batch",))
    lr: float | None = setting(None, "Peak Adam learning rate (default: 0.01 for mlp, 0.001 for conv and unet); "
                               "linear warm-up, then cosine decay to a tenth of it over steps.")
    warmup: float = setting(0.1, "Fraction of the steps over which the learning rate warms up linearly from 0.")
    ema: float = setting(0.999, "EMA decay of the sampled weights, in [0, 1).")
    checkpoint_every: int = setting(500, "Steps per unit: rows, checkpoint and progress every this many steps.")
    snapshots: bool = setting(False, "Keep the EMA denoiser after every unit (checkpoint_every steps) and write "
                              "each to snapshots/ at the end: the model over training, for gentool bound.",
                              applies={"arch": ("auto", "mlp", "conv")})

    def __post_init__(self) -> None:
        choose("data", self.data, DATASETS)
        check_applies(self)  # prediction: unet only (mlp and conv use EDM preconditioning)
        check_int("n_train", self.n_train, 2, 10**8)
        check_int("steps", self.steps, 1, 10**9)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        check_int("batch_size", self.batch_size, 1)
        net = self.train_config()  # validates the network and optimiser settings
        if self.lr is None:  # the architecture's peak learning rate, recorded as a number in config.json
            object.__setattr__(self, "lr", net.lr)

    def train_config(self) -> TrainConfig:
        arch = ("conv" if self.data == "digits" else "mlp") if self.arch == "auto" else self.arch
        return TrainConfig(arch=arch, width=self.width, depth=self.depth, steps=self.steps, batch=self.batch_size,
                           lr=self.lr, ema=self.ema, prediction=self.prediction, warmup=self.warmup)


def training_bytes(cfg: TrainConfig, dim: int, n_train: int) -> float:
    """Rough float32 memory of training (an estimate to refuse hopeless sizes up front, not a bound):
    `4 (n_train d + 8 P + 4 B h)` bytes, with `P` the weights (counted 8 times: weights, gradients, two Adam
    moments, EMA and the checkpoint copies), `B` the batch and `h` the hidden activations per example
    (`width (depth + 2)` for the MLP, times the pixels `d` for the convolutional nets)."""
    width, depth = int(cfg.width), int(cfg.depth)
    params = depth * width**2 * (1 if cfg.arch == "mlp" else 9) + width * (dim + 64)
    hidden = width * (depth + 2) * (1 if cfg.arch == "mlp" else dim)
    return 4.0 * (n_train * dim + 8 * params + 4 * cfg.batch * hidden)


class TrainJob(SteppedUnits, Reports):
    """State: the `DenoiserTrainer` (weights, EMA, optimiser, step, losses, RNG) and the kept snapshots."""

    command = "train"
    hint = "lower lr"

    def __init__(self, config: TrainJobConfig, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.seed, self.device = config, int(seed), torch.device(device)
        dim = sample_data(config.data, 2, make_generator(self.seed)).shape[1]
        net = config.train_config()
        check_allocation(training_bytes(net, dim, config.n_train), f"training (n_train={config.n_train}, "
                         f"batch_size={config.batch_size}, width={net.width}, depth={net.depth})", self.device)
        x = sample_data(config.data, config.n_train, make_generator(self.seed))
        self.trainer = DenoiserTrainer(x, config.train_config(), generator=make_generator(self.seed + 1, device),
                                       device=self.device)
        self.snapshots: list[dict[str, Any]] = []  # with snapshots: {"step", "ema"} after every unit

    @property
    def step_count(self) -> int:
        return self.trainer.step

    @property
    def step_total(self) -> int:
        return self.config.steps

    @property
    def step_chunk(self) -> int:
        return self.config.checkpoint_every

    def advance(self) -> list[Row]:
        losses = self.trainer.train(self.next_chunk())
        if self.config.snapshots:
            self.snapshots.append({"step": self.trainer.step, "ema": copy.deepcopy(self.trainer.ema.state_dict())})
        return [{"step": self.trainer.step, "loss": sum(losses) / len(losses),
                 "lr": self.trainer.opt.param_groups[0]["lr"]}]

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict() | ({"snapshots": self.snapshots} if self.config.snapshots else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)
        self.snapshots = list(state.get("snapshots", []))

    def samples(self) -> None:
        return None

    def finish(self, out: Path, rows: list[Row], plots_on: bool) -> Row:
        cfg, losses = self.config, self.trainer.losses
        facts = {"data": cfg.data, "seed": self.seed, "n_train": cfg.n_train}
        if isinstance(self.trainer.ema, DiscreteDenoiser):
            save_pipeline(out, self.trainer.ema, UNET_SCHEDULER, {**facts, "steps": self.trainer.step})
        else:
            state = self.trainer.state_dict()
            save_checkpoint(out / "ckpt.pt", {**state, **facts})
            common = {k: state[k] for k in ("kind", "config", "dim", "sigma_data")} | facts
            for snap in self.snapshots:
                save_checkpoint(snapshot_path(out, snap["step"]), common | {"model": snap["ema"], "ema": snap["ema"],
                                                                           "step": snap["step"]})
        tail = losses[-min(100, len(losses)):]
        summary = {"steps": len(losses), "final_loss_mean100": sum(tail) / len(tail),
                   "sigma_data": self.trainer.sigma_data}
        atomic_write_json(out / "metrics.json", summary)
        if plots_on:
            with one_step(self.progress, "figure"):
                loss_figure(out / "loss.png", losses)
        warning = loss_warning(losses, self.trainer.cfg)
        return summary | ({"warning": warning} if warning else {})


def loss_figure(path: Path, losses: list[float]) -> None:
    """The loss of every step and its running mean over blocks of `k` steps (log y-axis)."""
    k = max(1, len(losses) // 50)
    smooth = [{"step": i + k, "loss": sum(losses[i:i + k]) / len(losses[i:i + k])} for i in range(0, len(losses), k)]
    label = f"mean of blocks of {k} steps" if k > 1 else "per step"
    series = {"loss per step (one minibatch)": [{"step": i + 1, "loss": v} for i, v in enumerate(losses)]}
    plots.curves(path, series | ({label: smooth} if k > 1 else {}), "step", ["loss"], log_keys=["loss"],
                 labels={"step": "optimisation step", "loss": "EDM-weighted denoising loss"},
                 integer_x=True)


def build(config: TrainJobConfig, seed: int, device: torch.device) -> TrainJob:
    return TrainJob(config, seed, device)


SPEC = JobSpec("train", TrainJobConfig, build,
               "Train a denoiser: EDM-preconditioned MLP (2-D toys) or conv net (digits), or a diffusers UNet.")
