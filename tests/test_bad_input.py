"""A corpus of bad inputs for every command: exit code, exactly one line on stderr, no partial output.

Each case is `(arguments, exit code, a fragment of the message)`. `OUT` stands for the run directory (which
must not exist afterwards), `FILE` for an existing regular file, `EMPTY` for an empty file, `BIN` for a
binary file, `RECIPE` for a valid recipe. Exit codes: 2 bad input, 4 file-system error (gentool.core.errors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gentool.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()

SAMPLE = [
    (["--sampler", "rk9", "--target", "gmm-ring"], 2, "unknown sampler 'rk9'"),
    (["--target", "banana"], 2, "unknown target 'banana'"),
    (["--target", "gmm-ring", "--model", "FILE"], 2, "give a target or a model, not both"),
    (["--target", "gaussian", "--steps", "0"], 2, "steps must be an integer"),
    (["--target", "gaussian", "--steps", "-3"], 2, "steps must be an integer"),
    (["--target", "gaussian", "--steps", "x"], 2, "steps must be an int"),
    (["--target", "gaussian", "--steps", "2.5"], 2, "steps must be an int"),
    (["--target", "gaussian", "-n", "0"], 2, "n must be an integer"),
    (["--target", "gaussian", "--rho", "0"], 2, "rho must be a finite number > 0"),
    (["--target", "gaussian", "--sigma-min", "0"], 2, "sigma_min must be a finite number > 0"),
    (["--target", "gaussian", "--sigma-max", "0.001"], 2, "sigma_max must be a finite number > 0.002"),
    (["--target", "gaussian", "--sigma-max", "nan"], 2, "sigma_max must be a finite number"),
    (["--target", "gaussian", "--sampler", "ddim", "--eta", "-1"], 2, "eta must be a number in [0, inf]"),
    (["--target", "gaussian", "--sampler", "amed", "--r", "1"], 2, "r must be a number in (0, 1)"),
    (["--target", "gaussian", "--sampler", "euler", "--eta", "0.3"], 2,
     "sampler 'euler' does not take option 'eta'; it takes: no options"),
    (["--target", "gaussian", "--sampler", "dpmpp-2m-sde", "--order", "2"], 2,
     "does not take option 'order'; it takes: eta, s_noise, solver"),
    (["--target", "gaussian", "--grid", "cosine"], 2, "unknown grid 'cosine'"),
    (["--target", "gaussian", "--grid", "uniform-t", "--schedule", "vp-square"], 2, "unknown schedule"),
    (["--target", "gaussian", "--sampler", "ode", "--method", "rk45"], 2, "unknown method 'rk45'"),
    (["--target", "gaussian", "--sampler", "ode", "--rtol", "0"], 2, "rtol must be a number in (0, inf]"),
    (["--target", "gaussian", "--dim", "0"], 2, "dim must be an integer"),
    (["--target", "gaussian", "--batch-size", "0"], 2, "batch_size must be an integer"),
    (["--model", "OUT/missing/ckpt.pt"], 2, "model not found"),
    (["--model", "OUT/missing"], 2, "model not found"),
    (["--model", "EMPTYDIR"], 2, "no model in"),
    (["--model", "BADPRED"], 2, "unknown prediction_type 'x0'"),
    (["--model", "gentool-tests/not-cached"], 2, "neither a local path nor a hub model in the local cache"),
    (["--target", "gaussian", "--grid", "model"], 2, "grid 'model' needs a model with a discrete noise table"),
    (["--target", "gaussian", "--cfg", "2"], 2, "cfg applies to source model, not 'gaussian'"),
    (["--model", "OUT/missing/ckpt.pt", "--cfg", "-1"], 2, "cfg must be a finite number >= 0"),
    (["--model", "OUT/missing/ckpt.pt", "--class-label", "-1"], 2, "class_label must be an integer >= 0"),
    (["--target", "gaussian", "--save-png", "OUT/png"], 2, "save_png applies to source model, not 'gaussian'"),
    (["--target", "gaussian", "--integer-timesteps"], 2, "integer_timesteps applies to source model, not 'gaussian'"),
    (["--model", "EMPTY"], 2, "cannot read checkpoint"),
    (["--model", "BIN"], 2, "cannot read checkpoint"),
    (["--target", "gaussian", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["--target", "gaussian", "--no-such-option", "1"], 2, "No such option"),
    (["--target", "[/x] [bold]"], 2, "unknown target '[/x] [bold]'"),
    (["--target", "gaussian", "--out", "FILE"], 4, "is an existing file"),
    (["--target", "gaussian", "--out", "FILE/sub"], 4, "Not a directory"),
]

TRAIN = [
    (["--data", "spiral"], 2, "unknown data 'spiral'"),
    (["--steps", "0"], 2, "steps must be an integer"),
    (["--steps", "1e20"], 2, "steps must be an int"),
    (["--lr", "inf"], 2, "lr must be a finite number > 0"),
    (["--lr", "nan"], 2, "lr must be a finite number > 0"),
    (["--lr", "0"], 2, "lr must be a finite number > 0"),
    (["--lr", "-1"], 2, "lr must be a finite number > 0"),
    (["--batch", "0"], 2, "batch_size must be an integer"),
    (["--width", "0"], 2, "width must be an integer"),
    (["--depth", "-1"], 2, "depth must be an integer"),
    (["--ema", "1"], 2, "ema must be a finite number in [0, 1)"),
    (["--ema", "-0.1"], 2, "ema must be a finite number in [0, 1)"),
    (["--checkpoint-every", "0"], 2, "checkpoint_every must be an integer >= 1"),
    (["--arch", "transformer"], 2, "unknown arch 'transformer'"),
    (["--n-train", "1"], 2, "n_train must be an integer"),
    (["--n-train", "many"], 2, "n_train must be an int"),
    (["--device", "cuda:x"], 2, "device"),
    (["--resume"], 2, "nothing to resume"),
    (["--seed", "abc"], 2, "'--seed'"),
    (["--bogus"], 2, "No such option"),
    (["--out", "FILE"], 4, "is an existing file"),
]

MONOFLOW = [
    (["--h", "kl"], 2, "unknown h 'kl'"),
    (["--mode", "gan"], 2, "unknown mode 'gan'"),
    (["--data", "mnist"], 2, "unknown data 'mnist'"),
    (["--target", "banana"], 2, "unknown target 'banana'"),
    (["--lr-g", "0"], 2, "lr_g"),
    (["--lr-d", "-1"], 2, "lr_d"),
    (["--steps", "0"], 2, "steps must be an integer"),
    (["--eval-every", "0"], 2, "eval_every must be an integer"),
    (["-n", "1"], 2, "n must be an integer"),
    (["--n-train", "1"], 2, "n_train must be an integer"),
    (["--batch-size", "0"], 2, "batch_size must be an integer"),
    (["--beta1", "1"], 2, "beta1 must be in [0, 1)"),
    (["--beta2", "-0.5"], 2, "beta2 must be in [0, 1)"),
    (["--dt", "0"], 2, "dt must be > 0"),
    (["--dt", "nan"], 2, "dt must be > 0"),
    (["--solver-steps", "0"], 2, "solver_steps must be an integer"),
    (["--method", "dopri5"], 2, "unknown method 'dopri5'"),
    (["--k-gen", "0"], 2, "k_gen must be an integer"),
    (["--hidden", "0"], 2, "hidden must be an integer"),
    (["--shift", "inf"], 2, "shift must be finite"),
    (["--shift", "1"], 2, "shift applies to h vanilla, not logit"),
    (["--rate", "2"], 2, "rate applies to h exp, not logit"),
    (["--h", "exp", "--rate", "0"], 2, "rate must be > 0"),
    (["--activation", "swish"], 2, "unknown activation 'swish'"),
    (["--latent-dim", "0"], 2, "latent_dim must be an integer"),
    (["--data", "gaussian", "--data-cov", "1,2;2,1"], 2, "data_cov must be positive definite"),
    (["--data", "gaussian", "--data-cov", "1,0.5;0,1"], 2, "data_cov must be symmetric"),
    (["--data", "gaussian", "--data-mean", "1,2,3", "--data-cov", "1,0;0,1"], 2, "data_cov must be 3 x 3"),
    (["--data-mean", "1,2"], 2, "data_mean and data_cov set the gaussian data, not 'ring'"),
    (["--data", "OUT/none.npy"], 2, "data: file not found"),
    (["--data", "NPZ2"], 2, "holds arrays a, b; name one as"),
    (["--data", "NPZ2:b"], 2, "data must hold an (n >= 2, d) array"),
    (["--data", "BADCSV"], 2, "data: cannot read"),
    (["--data", "NPZ2:a", "--fresh-real"], 2, "fresh_real needs a data distribution"),
    (["--data", "NPZ2:a", "--n-train", "100"], 2, "n_train applies to a fixed sample drawn from the data"),
    (["--fresh-real", "--n-train", "100"], 2, "n_train applies to a fixed sample drawn from the data"),
    (["--mode", "exact", "--fresh-real"], 2, "fresh_real applies to the generator and particles modes"),
    (["--generator", "vae"], 2, "unknown generator 'vae'"),
    (["--mode", "particles", "--generator", "affine"], 2, "generator affine applies to generator mode"),
    (["--generator-mean", "1,1"], 2, "set the affine generator"),
    (["--generator", "affine", "--latent-dim", "3"], 2, "latent_dim is that of the mlp generator"),
    (["--generator", "affine", "--generator-mean", "1,2,3"], 2, "generator_mean has 3 entries, the data has "
     "dimension 2"),
    (["--generator", "affine", "--generator-matrix", "1,0,0;0,1,0;0,0,1"], 2, "generator_matrix has 3 rows"),
    (["--resume"], 2, "nothing to resume"),
    (["--out", "FILE"], 4, "is an existing file"),
]

SIMPLEX = [
    (["--objective", "sparsmax"], 2, "unknown objective 'sparsmax'"),
    (["--method", "newton"], 2, "unknown method 'newton'"),
    (["--step", "armijo"], 2, "unknown fw_step 'armijo'"),
    (["--x", "1,nan,2"], 2, "must be finite"),
    (["--x", "1,a"], 2, "comma-separated numbers"),
    (["--lr", "0"], 2, "lr must be a finite number > 0"),
    (["--lr", "nan"], 2, "lr must be a finite number > 0"),
    (["--tol", "nan"], 2, "tol must be a finite number"),
    (["--iters", "-1"], 2, "steps must be an integer"),
    (["--log-every", "0"], 2, "log_every must be an integer"),
    (["--p0", "0.5,0.5,0.5"], 2, "initial point p0"),
    (["--p0", "0.5,0.5"], 2, "p0 has 2 entries"),
    (["--objective", "os:getcwd"], 2, "objective 'os:getcwd' takes no argument"),
    (["--objective", "os:sep"], 2, "objective 'os:sep' is not a function"),
    (["--objective", "os:fspath"], 2, "objective 'os:fspath' raised TypeError"),
    (["--objective", "no_such_module_xyz:f"], 2, "cannot import objective"),
    (["--objective", "kl", "--x", "0.5,0.6"], 2, "not on the probability simplex"),
    (["--objective", "quadratic"], 2, "needs a matrix"),
    (["--objective", "quadratic", "--matrix", "1,2;3"], 2, "rows must be non-empty and of equal length"),
    (["--objective", "quadratic", "--x", "0,0", "--matrix", "0,1;1,0"], 2, "must be PSD"),
    (["--objective", "portfolio", "--matrix", "1,-1;2,2"], 2, "positive, finite (m, n) array"),
    (["--objective", "softmax", "--tau", "0"], 2, "tau must be a finite number > 0"),
    (["--objective", "quadratic", "--matrix", "OUT/none.npy"], 2, "file not found"),
    (["--objective", "quadratic", "--matrix", "NPZ2"], 2, "holds arrays a, b; name one as"),
    (["--objective", "quadratic", "--matrix", "NPZ2:c"], 2, "holds arrays a, b; name one as"),
    (["--objective", "quadratic", "--x", "0,0,0", "--matrix", "NPZ2:a"], 2, "needs matrix A (n, n) and x = b (n,)"),
    (["--x", "BADCSV"], 2, "x: cannot read"),
    (["--x", "BIN.npy"], 2, "x: file not found"),
    (["--p0", "NPZ2:b"], 2, "p0 has 2 entries, the objective has 3"),
    (["--method", "softmax-gd"], 2, "softmax-gd cannot solve objective 'sparsemax'"),
    (["--objective", "softmax", "--method", "exponentiated-gradient", "--p0", "1,0,0"], 2,
     "zero entries of the initial point p0 stay zero"),
    (["--data", "NPZ2"], 2, "data is only read by a module:function objective"),
    (["--dim", "4"], 2, "dim is only read by a module:function objective"),
    (["--objective", "os:getcwd", "--dim", "0"], 2, "dim must be an integer"),
    (["--objective", "os:getcwd", "--data", "FILE"], 2, "is not an array file"),
    (["--objective", "os:getcwd", "--data", "OUT/none.npz"], 2, "data: file not found"),
    (["--objective", "os:getcwd", "--data", "NPZ2"], 2, "takes 0 argument(s) but data was given"),
    (["--backtrack", "--lr", "-2"], 2, "lr must be a finite number > 0"),
    (["--out", "FILE"], 4, "is an existing file"),
]

COMPARE = [
    (["--methods", "newton"], 2, "unknown methods 'newton'"),
    (["--methods", "frank-wolfe,softmax-gd"], 2, "softmax-gd cannot solve objective 'sparsemax'"),
    (["--fw-steps", "armijo"], 2, "unknown fw_steps 'armijo'"),
    (["--methods", ""], 2, "methods must name at least one method"),
    (["--iters", "-1"], 2, "steps must be an integer"),
    (["--tol", "inf"], 2, "tol must be a finite number"),
    (["--objective", "kl", "--x", "0.5,0.6"], 2, "not on the probability simplex"),
    (["--x", "OUT/x.csv"], 2, "file not found"),
    (["--out", "FILE"], 4, "is an existing file"),
]

PARTICLES = [
    (["--target", "moon"], 2, "unknown target 'moon'"),
    (["--method", "hmc"], 2, "unknown method 'hmc'"),
    (["-n", "1"], 2, "n must be an integer"),
    (["--steps", "5"], 2, "No such option: --steps"),
    (["--time", "-1"], 2, "time must be a finite number >= 0"),
    (["--time", "inf"], 2, "time must be a finite number >= 0"),
    (["--step-size", "-1"], 2, "step_size must be a finite number > 0"),
    (["--step-size", "nan"], 2, "step_size must be a finite number > 0"),
    (["--entropy", "-1"], 2, "entropy must be a finite number >= 0"),
    (["--target", "none", "--entropy", "0"], 2, "target none needs entropy > 0 or an interaction"),
    (["--target", "none", "--dim", "0"], 2, "dim must be an integer"),
    (["--target", "gmm-ring", "--dim", "3"], 2, "dim is 3 but the target has dimension 2"),
    (["--init-std", "0"], 2, "init_std must be a finite number > 0"),
    (["--init-mean", "1,2,3"], 2, "init_mean has 3 entries"),
    (["--init-mean", "a,b"], 2, "comma-separated numbers"),
    (["--init", "OUT/x.npy"], 2, "init: file not found"),
    (["--init", "NPZ2"], 2, "holds arrays a, b; name one as"),
    (["--init", "NPZ2:b"], 2, "init must hold an (n >= 2, d) array"),
    (["--init", "NPZ2:a", "--init-std", "2"], 2, "init gives the particles themselves"),
    (["--init", "NPZ2:a", "-n", "5"], 2, "n is 5 but init holds 2 particles"),
    (["--init", "NPZ2:a", "--target", "none", "--dim", "3"], 2, "init has 2 columns, the problem has dimension 3"),
    (["--init", "BADCSV"], 2, "init: cannot read"),
    (["--target", "gmm-ring", "--target-mean", "1,2"], 2, "target_mean and target_cov set the gaussian target"),
    (["--target", "gaussian", "--target-mean", "1,2", "--target-cov", "1,0,0;0,1,0;0,0,1"], 2,
     "target_cov is 3 x 3 but target_mean has 2 entries"),
    (["--target", "gaussian", "--target-cov", "1,2;2,1"], 2, "target covariance must be positive definite"),
    (["--target", "gaussian", "--target-cov", "1,0.5;0,1"], 2, "target covariance must be symmetric"),
    (["--target", "gaussian", "--target-cov", "NPZ2:b"], 2, "target covariance must be 1 x 1"),
    (["--data", "NPZ2"], 2, "data is only read by a module:function target"),
    (["--target", "os:getcwd"], 2, "needs dim (or init, init_mean)"),
    (["--target", "os:getcwd", "--dim", "2", "--data", "NPZ2"], 2, "takes 0 argument(s) but data was given"),
    (["--target", "os:nope", "--dim", "2"], 2, "cannot import target 'os:nope'"),
    (["--target", "math:sqrt", "--dim", "2"], 2, "target 'math:sqrt' raised ValueError"),
    (["--bandwidth", "0"], 2, "bandwidth must be a finite number in (0, 1e+150]"),
    (["--bandwidth", "0.5"], 2, "bandwidth applies to method kde-flow, svgd, mmd-flow, not 'langevin'"),
    (["--method", "mmd-flow", "--target", "gaussian", "--bandwidth", "0.5"], 2, "the energy mmd_kernel has no "
     "bandwidth"),
    (["--mmd-kernel", "gaussian"], 2, "mmd_kernel applies to method mmd-flow, not 'langevin'"),
    (["--mmd-kernel", "laplace"], 2, "unknown mmd_kernel 'laplace'"),
    (["--n-target", "10"], 2, "n_target applies to method mmd-flow"),
    (["--method", "mmd-flow", "--n-target", "1"], 2, "n_target must be an integer"),
    (["--method", "mmd-flow", "--entropy", "0.5"], 2, "entropy applies to method langevin, kde-flow, svgd, not "
     "'mmd-flow'"),
    (["--solver", "dopri5"], 2, "unknown solver 'dopri5'"),
    (["--solver", "rk4"], 2, "solver applies to method kde-flow, svgd, mmd-flow, not 'langevin'"),
    (["--log-every", "0"], 2, "log_every must be an integer"),
    (["--mmd-bandwidths", "1,0"], 2, "mmd_bandwidths must be a finite number > 0"),
    (["--target", "double-well", "--mmd-bandwidths", "1"], 2, "mmd_bandwidths need a target with an exact sampler"),
    (["--method", "mmd-flow", "--target", "double-well"], 2, "needs a target with an exact sampler"),
    (["--method", "svgd", "--entropy", "0"], 2, "svgd needs a positive entropy weight"),
    (["--method", "svgd", "--target", "none"], 2, "its flow is repulsion only"),
    (["--interaction", "nan"], 2, "interaction must be a finite number"),
    (["--device", "gpu"], 2, "unknown device 'gpu'"),
    (["--resume"], 2, "nothing to resume"),
    (["--out", "FILE"], 4, "is an existing file"),
]

MAD = [
    (["--family", "vae"], 2, "unknown family 'vae'"),
    (["--loop", "mixed"], 2, "unknown loop 'mixed'"),
    (["--data", "mnist"], 2, "unknown data 'mnist'"),
    (["--lam", "0"], 2, "lam must be a finite number in (0, 1]"),
    (["--lam", "1.2"], 2, "lam must be a finite number in (0, 1]"),
    (["--lam", "nan"], 2, "lam must be a finite number"),
    (["--n-synth", "1"], 2, "n_synth must be in [2, 100000000] at every generation, got 1"),
    (["--n-real", "1"], 2, "n_real must be in [2, 100000000] at every generation, got 1"),
    (["--generations", "0"], 2, "generations must be an integer in [1, 100000]"),
    (["--generations", "1e20"], 2, "generations must be an int"),
    (["--n-real", "10 ** 10 ** 100"], 2, "n_real must be a number, a list of numbers or an expression in t"),
    (["--generations", "100000000000000000000"], 2, "generations must be an integer in [1, 100000]"),
    (["--seeds", "0"], 2, "seeds must be an integer"),
    (["--metric-seeds", "-1"], 2, "metric_seeds must be an integer >= 0"),
    (["--bandwidth", "wide"], 2, "unknown bandwidth 'wide'"),
    (["--family", "kde", "--bandwidth", "-1"], 2, "bandwidth must be > 0"),
    (["--family", "gmm", "--components", "0"], 2, "components must be >= 1"),
    (["--loop", "accumulate-subsample", "--budget", "1"], 2, "budget must be an integer"),
    (["--loop", "accumulate", "--budget", "10"], 2, "budget applies to the accumulate-subsample"),
    (["--loop", "augment", "--real-fraction", "1"], 2, "must be a finite number in [0, 1), got 1.0"),
    (["--real-fraction", "0.5"], 2, "real_fraction applies to the augment and fresh loops"),
    (["--metrics", "fid"], 2, "unknown metric 'fid'"),
    (["--cov", "ledoit"], 2, "unknown cov 'ledoit'"),
    (["--n-test", "1"], 2, "n_test must be an integer"),
    (["--dim", "0"], 2, "dim must be an integer"),
    (["--family", "diffusion", "--sampler", "rk9"], 2, "unknown sampler 'rk9'"),
    (["--resume"], 2, "nothing to resume"),
    (["--out", "FILE"], 4, "is an existing file"),
]

RUN = [
    (["OUT/nope.toml"], 2, "recipe not found"),
    (["BIN"], 2, "invalid TOML"),
    (["EMPTY"], 2, "missing 'command'"),
    (["RECIPE", "--iters", "-1"], 2, "steps must be an integer"),
    (["RECIPE", "--stesp", "3"], 2, "did you mean 'steps'"),
    (["RECIPE", "--method", "newton"], 2, "unknown method 'newton'"),
    (["RECIPE", "--seed", "x"], 2, "seed must be an int"),
    (["RECIPE", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["RECIPE", "positional"], 2, "expected --name [value]"),
    (["RECIPE", "--resume", "maybe"], 2, "resume must be a bool"),
    (["RECIPE", "--out", "FILE"], 4, "is an existing file"),
]
RECIPE_TEXTS = [
    ('command = "optimize simplex"\n[options]\nstesp = 3\n', "did you mean 'steps'"),
    ('command = "optimize simplx"\n', "unknown command 'optimize simplx'"),
    ('command = 3\n', "missing 'command'"),
    ('command = "sample"\n[opts]\n', "unknown top-level key 'opts'"),
    ('command = "sample"\noptions = 3\n', "'options' must be a table"),
    ('command = "sample"\n[options]\ntarget = "gmm-ring"\nsteps = 0\n', "steps must be an integer"),
    ('command = "sample"\n[options]\ntarget = "gmm-ring"\n[sweep]\nsteps = []\n', "must be a non-empty list"),
    ('command = "sample"\n[options]\ntarget = "gmm-ring"\n[sweep]\nseeds = ["a"]\n', "sweep.seeds must be integers"),
    ('command = "sample"\n[options]\ntarget = "gmm-ring"\n[slurm]\nqueue = "x"\n', "unknown slurm key 'queue'"),
    ('command = "sample"\n[options]\ntarget = "gmm-ring"\n[smoke]\nsweep = 3\n', "'smoke.sweep' must be a table"),
    ('command = "mad-loop"\n[options]\nprogress = "perhaps"\n', "progress must be a bool"),
    ('command = "mad-loop"\n[options]\nlam = 2\n', "lam must be a finite number in (0, 1]"),
]

SWEEP = [
    (["OUT/nope.toml"], 2, "recipe not found"),
    (["BIN"], 2, "invalid TOML"),
    (["RECIPE", "--executor", "slurmm"], 2, "did you mean 'slurm'"),
    (["RECIPE", "--parallel", "0"], 2, "parallel must be an integer >= 1"),
    (["RECIPE", "--tol", "nan"], 2, "tol must be a finite number"),
    (["RECIPE", "--toll", "1"], 2, "did you mean 'tol'"),
    (["RECIPE", "--out", "FILE"], 4, "is an existing file"),
    (["RECIPE", "--parallel", "x"], 2, "parallel must be an int"),
]

REPORT = [
    (["OUT"], 2, "sweep directory not found"),
    (["FILE"], 2, "sweep directory not found"),
    (["EMPTYDIR"], 2, "no completed runs"),
    (["CORRUPT"], 2, "is corrupt (not valid JSON)"),
    (["BADPOINT"], 2, "is corrupt (missing point_id/params/seed)"),
    (["BADMETRICS"], 2, "metrics.json is corrupt"),
    (["CORRUPT", "--out", "FILE"], 2, "is corrupt"),
    (["--no-such-option"], 2, "No such option"),
    ([], 2, "Missing argument"),
]


def _setup(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "bin").write_bytes(bytes(range(256)))
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "bad.csv").write_text("1,a\n")
    np.savez(tmp_path / "two.npz", a=np.eye(2), b=np.array([0.5, 0.5]))
    (tmp_path / "badpred").mkdir()  # a diffusers model directory whose scheduler predicts something unknown
    (tmp_path / "badpred" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    (tmp_path / "badpred" / "scheduler_config.json").write_text('{"beta_schedule": "linear", "prediction_type": "x0"}')
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('command = "optimize simplex"\n[options]\niters = 3\nprogress = false\n'
                      '[sweep]\nmethod = ["frank-wolfe"]\n')
    corrupt = tmp_path / "corrupt" / "p"
    corrupt.mkdir(parents=True)
    (corrupt / "DONE.json").write_text("{}")
    (corrupt / "point.json").write_text('{"point_id": "p", "params": {}, "seed": 0}')
    (corrupt / "metrics.jsonl").write_text('{"iter": 0, "gap": 1.0, "obj')
    for name, point, metrics in (("badpoint", "[1, 2]", "{}"), ("badmetrics", '{"point_id": "p", "params": {}, '
                                                                              '"seed": 0}', "{not json")):
        d = tmp_path / name / "p"
        d.mkdir(parents=True)
        (d / "DONE.json").write_text("{}")
        (d / "point.json").write_text(point)
        (d / "metrics.json").write_text(metrics)
    return {"OUT": str(tmp_path / "out"), "FILE": str(tmp_path / "file"), "EMPTY": str(tmp_path / "empty"),
            "BIN": str(tmp_path / "bin"), "RECIPE": str(recipe), "EMPTYDIR": str(tmp_path / "emptydir"),
            "CORRUPT": str(tmp_path / "corrupt"), "BADPOINT": str(tmp_path / "badpoint"),
            "BADMETRICS": str(tmp_path / "badmetrics"), "NPZ2": str(tmp_path / "two.npz"),
            "BADCSV": str(tmp_path / "bad.csv"), "BADPRED": str(tmp_path / "badpred")}


def _expand(args: list[str], names: dict[str, str]) -> list[str]:
    out = []
    for a in args:
        for key in sorted(names, key=len, reverse=True):
            if a == key or a.startswith((key + "/", key + ":")):
                a = names[key] + a[len(key):]
                break
        out.append(a)
    return out


def _check(tmp_path: Path, command: list[str], args: list[str], code: int, fragment: str,
           with_out: bool = True, names: dict[str, str] | None = None) -> None:
    names = names or _setup(tmp_path)
    argv = [*command, *_expand(args, names)]
    if with_out and "--out" not in args:
        argv += ["--out", names["OUT"]]
    before = Path(names["FILE"]).read_text()
    res = runner.invoke(app, argv)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, (argv, res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (argv, res.stderr)
    assert "Traceback" not in res.output
    assert not Path(names["OUT"]).exists(), f"{argv} left output behind"
    assert Path(names["FILE"]).read_text() == before


def _ids(cases: list) -> list[str]:
    return [" ".join(c[0]) or "(none)" for c in cases]


@pytest.mark.parametrize(("args", "code", "fragment"), SAMPLE, ids=_ids(SAMPLE))
def test_sample(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["sample", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), TRAIN, ids=_ids(TRAIN))
def test_train(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["train", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), MONOFLOW, ids=_ids(MONOFLOW))
def test_monoflow(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["monoflow", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), SIMPLEX, ids=_ids(SIMPLEX))
def test_optimize_simplex(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["optimize", "simplex", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), COMPARE, ids=_ids(COMPARE))
def test_optimize_compare(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["optimize", "compare", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), PARTICLES, ids=_ids(PARTICLES))
def test_optimize_particles(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["optimize", "particles", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), MAD, ids=_ids(MAD))
def test_mad_loop(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["mad-loop", "--no-progress"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), RUN, ids=_ids(RUN))
def test_run(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["run"], args, code, fragment, with_out=False)


@pytest.mark.parametrize(("text", "fragment"), RECIPE_TEXTS, ids=[t[1] for t in RECIPE_TEXTS])
def test_recipe_texts(tmp_path: Path, text: str, fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    names = _setup(tmp_path)
    (tmp_path / "r.toml").write_text(text)
    for command in (["run", "--out", "OUT"], ["sweep", "--out", "OUT"]):
        _check(tmp_path, command[:1], [str(tmp_path / "r.toml"), *command[1:]], 2, fragment, names=names)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "code", "fragment"), SWEEP, ids=_ids(SWEEP))
def test_sweep(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["sweep"], args, code, fragment)


@pytest.mark.parametrize(("args", "code", "fragment"), REPORT, ids=_ids(REPORT))
def test_report(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    _check(tmp_path, ["report"], args, code, fragment, with_out=False)
