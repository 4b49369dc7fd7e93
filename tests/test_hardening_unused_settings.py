"""One rule for settings a method does not use: a setting declared with `applies={field: choices}` keeps its
default unless `field` is one of those choices; otherwise exit 2 naming the settings the chosen value takes.
The checks are generated from the declarations of every job command (samplers have their own per-sampler
options, tested in test_bad_input.py)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gentool.cli.main import app
from gentool.core.config import check_applies, choices_of, config_dict, config_fields, make_config
from gentool.core.errors import BadInput
from gentool.core.jobs import JOBS
from typer.testing import CliRunner

runner = CliRunner()
MODEL = "some/ckpt.pt"  # a model path: configs do not open it (the job does)
BASE = {"sample": {"target": "gaussian"}, "tune": {"target": "gaussian"},  # settings a command needs besides
        "bound": {"target": "gaussian", "perturb": 0.0},                      # the one probed
        "optimize simplex": {"objective": "softmax"}}  # (every method solves it)
CHOOSE = {  # how to select a choice other than by setting the field of that name
    "source": lambda v: {"model": MODEL, "target": None, "perturb": None} if v == "model" else {"target": v},
    "arch": lambda v: {"arch": v, "data": "digits"} if v == "unet" else {"arch": v},
    "loop": lambda v: {"loop": v, "budget": 50} if v == "reservoir" else {"loop": v},
    "sampler": lambda v: {"sampler": v, "grid": "model"} if v == "ddim" else {"sampler": v},  # ddim_step stride
    "objective_kind": lambda v: OBJECTIVE_DATA.get(v, {"objective": v}),
}
OBJECTIVE_DATA = {"module:function": {"objective": "simplex_problems:square"},  # (tests/simplex_problems.py)
                  "kl": {"objective": "kl", "x": "0.2,0.3,0.5"},
                  "quadratic": {"objective": "quadratic", "matrix": "2,0,0;0,2,0;0,0,2"},
                  "portfolio": {"objective": "portfolio", "matrix": "1,2,3;2,1,3"}}
DATA = Path(tempfile.mkdtemp()) / "data.npy"  # the data file of the module:function objective
np.save(DATA, np.ones(3))
OTHER_VALUE = {"bandwidth": 0.5, "generator_mean": "1,1", "generator_matrix": "1,0;0,1", "real_fraction": 0.5,
               "truth": "isotropic", "prompt": "a cat", "height": 32, "width": 32, "k_gen": 2,
               "sampler": "euler", "data": str(DATA), "matrix": "1,0,0;0,1,0;0,0,1"}



COMMAND_VALUE = {("monoflow", "data"): "moons", ("monoflow", "data_mean"): "1,1", ("monoflow", "data_cov"): "1,0;0,1"}
NEEDS = {("monoflow", "data_mean"): {"data": "gaussian"}, ("monoflow", "data_cov"): {"data": "gaussian"},
         ("monoflow", "eps"): {"k_gen": 2}}  # settings a value of the probed setting needs besides


def _declared() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(command, setting, choice it depends on, the choices that use it) for every `applies` declaration whose
    choice the command's config has (optimize compare inherits settings declared for simplex's method)."""
    out = []
    for command, spec in JOBS.items():
        for f in config_fields(spec.config):
            out += [(command, f.name, key, allowed) for key, allowed in f.metadata.get("applies", {}).items()
                    if choices_of(spec.config, key)]
    return out


DECLARED = _declared()
IDS = [f"{c} {n} ({k})" for c, n, k, _ in DECLARED]


def _non_default(field: dataclasses.Field, command: str = "") -> Any:
    """A value of the setting other than its default (valid where the setting applies)."""
    if (command, field.name) in COMMAND_VALUE:
        return COMMAND_VALUE[command, field.name]
    if field.name in OTHER_VALUE:
        return OTHER_VALUE[field.name]
    default, choices = field.default, field.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    return 3 if default is None else default


def _options(command: str, name: str, key: str, choice: str, *, others: bool = True) -> dict[str, Any]:
    """The command's base settings with `key` set to `choice` and, with `others`, the setting's other choices
    (where it depends on several: the affine generator's mode and generator) to the first value that uses it."""
    applies = _fields(command)[name].metadata["applies"] if others else {}
    options = dict(BASE.get(command, {}))
    for k, value in [*((k, v[0]) for k, v in applies.items() if k != key), (key, choice)]:
        options |= CHOOSE.get(k, lambda v, k=k: {k: v})(value)
    return {k: v for k, v in options.items() if v is not None}


def _fields(command: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in config_fields(JOBS[command].config)}


def test_declarations_exist_and_name_choices() -> None:
    """Every declaration names a choice of its config (a field with choices, or a derived choice) and values it
    takes; every job command with a method-like choice declares some."""
    assert {c for c, *_ in DECLARED} >= {"sample", "tune", "bound", "train", "monoflow", "optimize simplex",
                                         "optimize particles", "optimize topk", "mad-loop"}
    for command, spec in JOBS.items():
        for f in config_fields(spec.config):
            for key, allowed in f.metadata.get("applies", {}).items():
                known = choices_of(spec.config, key) or next(
                    (choices_of(s.config, key) for s in JOBS.values() if f in config_fields(s.config)
                     and choices_of(s.config, key)), ())
                assert allowed and set(allowed) <= set(known), (command, f.name, key, allowed)


@pytest.mark.parametrize(("command", "name", "key", "allowed"), DECLARED, ids=IDS)
def test_a_setting_is_refused_where_it_does_not_apply(command: str, name: str, key: str,
                                                      allowed: tuple[str, ...]) -> None:
    """For every choice that does not use the setting: the rule refuses it naming the settings that choice
    takes; make_config refuses it naming the setting; at its default the setting is unused and accepted."""
    spec, fields = JOBS[command], _fields(command)
    value = _non_default(fields[name], command)
    for other in [c for c in choices_of(spec.config, key) if c not in allowed]:
        options = _options(command, name, key, other, others=False)
        cfg = make_config(spec.config, options)  # at its default the setting is unused
        with pytest.raises(BadInput) as e:
            check_applies(cfg, {name: value})
        takes = [f.name for f in fields.values() if other in f.metadata.get("applies", {}).get(key, ())]
        assert str(e.value) == (f"{name} applies to {key} {', '.join(allowed)}, not {other!r}; {key} {other!r} "
                                f"takes: {', '.join(takes) or 'none of them'} (of the {key}-specific settings)")
        with pytest.raises(BadInput, match=rf"\b{name}\b"):  # (a few keep an older, equivalent message)
            make_config(spec.config, {**options, name: value})


@pytest.mark.parametrize(("command", "name", "key", "allowed"), DECLARED, ids=IDS)
def test_a_setting_is_accepted_where_it_applies(command: str, name: str, key: str, allowed: tuple[str, ...]) -> None:
    """For every choice that uses the setting, the rule accepts a given value; where the config builds with it,
    the value is kept."""
    spec, fields = JOBS[command], _fields(command)
    value, needs = _non_default(fields[name], command), NEEDS.get((command, name), {})
    built = 0
    for choice in allowed:
        check_applies(make_config(spec.config, _options(command, name, key, choice)), {name: value})
        try:
            cfg = make_config(spec.config, {**_options(command, name, key, choice), **needs, name: value})
        except BadInput as exc:  # another check of the config (e.g. the energy mmd_kernel has no bandwidth)
            assert not str(exc).startswith(f"{name} applies to {key}"), exc
            continue
        built += 1
        assert getattr(cfg, name) != fields[name].default
    assert built, f"{command}: {name} was refused with every choice that takes it"


def test_given_defaults_and_resolved_values_never_trigger_the_rule() -> None:
    """Only explicitly given values count: the default given explicitly is accepted, and so is a stored config
    whose resolved values (particles' time per method, train's lr per arch) differ from the declared defaults."""
    cfg = make_config(JOBS["optimize particles"].config, {"method": "langevin", "solver": "euler"})
    stored = make_config(JOBS["optimize particles"].config, config_dict(cfg))
    assert stored == cfg
    assert make_config(JOBS["sample"].config, {"model": MODEL, "dim": 2, "reference": True}).model == MODEL


@pytest.mark.parametrize(("argv", "fragment"), [
    (["monoflow", "--dt", "0.1"], "dt applies to mode particles, exact, not 'generator'; mode 'generator' takes: "
     "data, data_mean, data_cov, n_train, batch_size, lr_d, lr_g, beta1, beta2, hidden, depth, activation, "
     "generator, generator_mean, generator_matrix, latent_dim, k_gen, eps, d_steps"),
    (["monoflow", "--mode", "exact", "--lr-g", "0.1"], "lr_g applies to mode generator, not 'exact'"),
    (["monoflow", "--eps", "0.1"], "eps applies when k_gen > 1 (the distillation step)"),
    (["monoflow", "--mode", "exact", "--hidden", "16"], "hidden applies to mode generator, particles, not 'exact'; "
     "mode 'exact' takes: target, dt, solver_steps, method"),
    (["mad-loop", "--components", "3"], "components applies to family gmm, not 'gaussian'"),
    (["mad-loop", "--family", "kde", "--train-steps", "5"], "family 'kde' takes: bandwidth"),
    (["sample", "--model", "some/ckpt.pt", "--dim", "3"], "dim applies to "),
    (["sample", "--target", "gaussian", "--cfg", "2"], "cfg applies to source model, not 'gaussian'; source "
     "'gaussian' takes: dim, reference"),
    (["optimize", "particles", "--bandwidth", "0.5"], "bandwidth applies to method kde-flow, svgd, mmd-flow, not "
     "'langevin'"),
    (["optimize", "topk", "--map", "hard", "--tau", "0.5"], "tau applies to map threshold, entropic, sparse, not "
     "'hard'; map 'hard' takes: none of them"),
    (["optimize", "simplex", "--lr", "0.5"], "lr applies to method exponentiated-gradient, projected-gradient, "
     "softmax-gd, not 'frank-wolfe'; method 'frank-wolfe' takes: fw_step"),
    (["optimize", "compare", "--methods", "frank-wolfe", "--lr", "0.5"], "lr applies to methods "
     "exponentiated-gradient, projected-gradient, softmax-gd, none of them among methods frank-wolfe"),
    (["optimize", "compare", "--methods", "projected-gradient", "--fw-steps", "line-search"], "fw_steps applies "
     "to method frank-wolfe, not among methods projected-gradient"),
    (["train", "--prediction", "v_prediction"], "prediction applies to arch unet, not 'auto'"),
    (["sample", "--target", "gaussian", "--sampler", "euler", "--order", "2"], "sampler 'euler' does not take "
     "option 'order'; it takes: no options"),
])
def test_cli_refuses_unused_settings_on_one_line(tmp_path: Path, argv: list[str], fragment: str) -> None:
    res = runner.invoke(app, [*argv, "--out", str(tmp_path / "out"), "--no-progress"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and fragment in lines[0], res.output
    assert not (tmp_path / "out").exists()
