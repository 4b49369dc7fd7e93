"""The README's Python example runs as written and gives the same numbers as the CLI it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from gentool.cli.main import app
from typer.testing import CliRunner

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_equals_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    for comment in re.findall(r"# = (gentool .*)", code):
        argv = comment.split()[1:]
        out = Path(argv[argv.index("--out") + 1])
        cli_out = tmp_path / "cli" / out.name
        argv[argv.index("--out") + 1] = str(cli_out)
        res = CliRunner().invoke(app, [*argv, "--no-progress"])
        assert res.exit_code == 0, res.output
        assert (cli_out / "metrics.jsonl").read_text() == (tmp_path / out / "metrics.jsonl").read_text()
