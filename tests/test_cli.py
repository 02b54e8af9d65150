"""The `densenets` command (densenets.cli, `python -m densenets`) and how `--config`
finds the configs that come with densenets from any folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from densenets import cli
from densenets.config import ConfigError, bundled_config, find_config, load_config
from densenets.tools import print_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = "configs/demo/faster_rcnn_r18_fpn_shapes.yaml"


def _run(code_or_args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_command_has_a_tool_with_main():
    assert {"train", "eval", "infer", "benchmark", "convert", "print-config", "demo", "plot-metrics"} <= set(
        cli.COMMANDS
    )
    assert cli.COMMANDS["convert"].module == "convert_checkpoint"
    for command in cli.COMMANDS.values():
        assert importlib.util.find_spec(f"densenets.tools.{command.module}") is not None, command


def test_help_lists_the_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"  {name}" in out and command.summary in out
    assert cli.main([]) == 2
    assert "usage: densenets COMMAND" in capsys.readouterr().err


def test_unknown_command_names_the_closest(capsys):
    assert cli.main(["trian", "--config", "x.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "densenets: error: unknown command 'trian'; did you mean train?"


def test_dispatch_passes_the_arguments_and_prog(capsys, monkeypatch):
    # The command prints what tools/print_config.py prints for the same arguments.
    monkeypatch.chdir(ROOT)
    assert print_config.main(["--config", DEMO, "train.max_iter=7"]) == 0
    expected = capsys.readouterr().out
    assert cli.main(["print-config", "--config", DEMO, "train.max_iter=7"]) == 0
    assert capsys.readouterr().out == expected and "max_iter: 7" in expected
    with pytest.raises(SystemExit):
        cli.main(["print-config", "--help"])
    assert capsys.readouterr().out.startswith("usage: densenets print-config [-h] --config")


def test_python_m_densenets_from_another_folder(tmp_path, capsys, monkeypatch):
    # Another folder: `configs/...` is not there, so the bundled config is read.
    monkeypatch.chdir(ROOT)
    assert print_config.main(["--config", DEMO]) == 0
    expected = capsys.readouterr().out
    res = _run(["-m", "densenets", "print-config", "--config", DEMO], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected


def test_help_imports_no_tool(monkeypatch, capsys):
    def _no_import(name, *args):
        raise AssertionError(f"--help imported {name}")

    monkeypatch.setattr(cli.importlib, "import_module", _no_import)
    assert cli.main(["--help"]) == 0 and cli.main(["--version"]) == 0
    assert cli.main(["nope"]) == 2


def test_find_config_prefers_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = (ROOT / DEMO).resolve()
    assert find_config(DEMO).resolve() == bundled
    assert find_config("demo/faster_rcnn_r18_fpn_shapes.yaml").resolve() == bundled
    assert bundled_config(DEMO).resolve() == bundled
    own = tmp_path / DEMO
    own.parent.mkdir(parents=True)
    own.write_text("train: {max_iter: 3}\n")
    assert find_config(DEMO) == Path(DEMO)  # the user's own file wins
    assert load_config(DEMO, validate=False).train.max_iter == 3
    assert bundled_config(DEMO).resolve() == bundled  # the demo always takes its own


def test_missing_config_error_names_the_given_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config("configs/nope.yaml") == Path("configs/nope.yaml")
    with pytest.raises(ConfigError, match=r"/configs/nope\.yaml: config file not found$"):
        load_config("configs/nope.yaml")
    with pytest.raises(ConfigError, match=r"configs/nope\.yaml: not among the bundled configs \(.*configs\)"):
        bundled_config("configs/nope.yaml")
