"""One rule for settings a method does not use: a setting declared with `applies={field: choices}` keeps its
default unless `field` is one of those choices; otherwise exit 2 naming the settings the chosen value takes.
The checks are generated from the declarations of every job command (samplers have their own per-sampler
options, tested in test_bad_input.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from gentool.cli.main import app
from gentool.core.config import config_fields, make_config
from gentool.core.errors import BadInput
from gentool.core.jobs import JOBS
from typer.testing import CliRunner

runner = CliRunner()
BASE = {"bound": {"perturb": 0.0}}  # settings a command needs besides the one probed
OTHER_VALUE = {"bandwidth": 0.5, "sampler": "euler", "method": "heun", "generator": "affine", "arch": "conv",
               "target": "gaussian-2d"}


def _declared() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(command, setting, field it depends on, the choices that use it) for every `applies` declaration."""
    out = []
    for command, spec in JOBS.items():
        for f in config_fields(spec.config):
            out += [(command, f.name, key, allowed) for key, allowed in f.metadata.get("applies", {}).items()]
    return out


DECLARED = _declared()


def _non_default(field: dataclasses.Field) -> Any:
    if field.name in OTHER_VALUE:
        return OTHER_VALUE[field.name]
    default = field.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2
    return 3 if default is None else default


def test_declarations_exist_and_name_choices() -> None:
    """Every declaration names a field with choices, and choices that field allows."""
    assert {c for c, *_ in DECLARED} >= {"monoflow", "mad-loop"}
    for command, _name, key, allowed in DECLARED:
        field = {f.name: f for f in config_fields(JOBS[command].config)}[key]
        assert set(allowed) <= set(field.metadata["choices"]), (command, key, allowed)


@pytest.mark.parametrize(("command", "name", "key", "allowed"), DECLARED,
                         ids=[f"{c} {n}" for c, n, *_ in DECLARED])
def test_a_setting_is_refused_where_it_does_not_apply(command: str, name: str, key: str,
                                                      allowed: tuple[str, ...]) -> None:
    spec = JOBS[command]
    fields = {f.name: f for f in config_fields(spec.config)}
    other = [c for c in fields[key].metadata["choices"] if c not in allowed][0]
    value = _non_default(fields[name])
    with pytest.raises(BadInput, match=rf"^{name}( \S+)? applies to ") as e:
        make_config(spec.config, {**BASE.get(command, {}), key: other, name: value})
    if "takes: " in str(e.value):  # (a few settings keep an older, equivalent check in their config)
        assert str(e.value).startswith(f"{name} applies to {key} {', '.join(allowed)}, not '{other}'")
        takes = str(e.value).split("takes: ")[1].split(" (of")[0]
        expected = [f.name for f in fields.values() if other in f.metadata.get("applies", {}).get(key, ())]
        assert takes == (", ".join(expected) or "none of them")
    make_config(spec.config, {**BASE.get(command, {}), key: other})  # at its default the setting is unused


def test_a_setting_is_accepted_where_it_applies() -> None:
    cfg = make_config(JOBS["monoflow"].config, {"mode": "particles", "dt": 0.1, "solver_steps": 2})
    assert (cfg.dt, cfg.solver_steps) == (0.1, 2)
    assert make_config(JOBS["mad-loop"].config, {"family": "gmm", "components": 3}).components == 3


@pytest.mark.parametrize(("argv", "fragment"), [
    (["monoflow", "--dt", "1e308"], "dt applies to mode particles, exact, not 'generator'; mode 'generator' takes: "
     "lr_g, generator, latent_dim, k_gen, eps"),
    (["monoflow", "--mode", "exact", "--lr-g", "0.1"], "lr_g applies to mode generator, not 'exact'"),
    (["mad-loop", "--components", "3"], "components applies to family gmm, not 'gaussian'"),
    (["mad-loop", "--family", "kde", "--train-steps", "5"], "family 'kde' takes: bandwidth"),
    (["sample", "--model", "some/ckpt.pt", "--dim", "3"], "dim applies to source gaussian, gmm-random, point, not 'model'"),
    (["sample", "--target", "gaussian", "--sampler", "euler", "--order", "2"], "sampler 'euler' does not take "
     "option 'order'; it takes: no options"),
])
def test_cli_refuses_unused_settings_on_one_line(tmp_path: Path, argv: list[str], fragment: str) -> None:
    res = runner.invoke(app, [*argv, "--out", str(tmp_path / "out"), "--no-progress"])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and fragment in lines[0], res.output
    assert not (tmp_path / "out").exists()
