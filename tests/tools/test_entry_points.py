"""The console scripts of setup.py, the tools/*.py shims and pcseg.cli: one main per tool, in the package."""
import ast
import runpy
from pathlib import Path

import pytest

import pcseg.cli.scripts as scripts

REPO = Path(__file__).resolve().parents[2]


def _console_scripts() -> list[str]:
    """The ``console_scripts`` of setup.py, evaluated from its source (setup() is not run)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    [call] = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    [entry_points] = [k.value for k in call.keywords if k.arg == "entry_points"]
    return eval(compile(ast.Expression(entry_points), "setup.py", "eval"))["console_scripts"]


def test_every_tool_is_an_installed_script_and_a_shim():
    expected = {"pcseg-train=pcseg.cli.scripts:train", "pcseg-test=pcseg.cli.scripts:test",
                "pcseg-make-budget=pcseg.cli.scripts:make_budget",
                "pcseg-make-synthetic=pcseg.cli.scripts:make_synthetic",
                "pcseg-visualize=pcseg.cli.scripts:visualize", "pcseg-active-learn=pcseg.cli.scripts:active_learn",
                "pcseg-annotate=pcseg.cli.scripts:annotate", "pcseg-pretrain-slidr=pcseg.cli.scripts:pretrain_slidr",
                "pcseg-demo=pcseg.cli.scripts:demo", "pcseg-convert-checkpoint=pcseg.cli.scripts:convert_checkpoint",
                "pcseg-export=pcseg.cli.scripts:export", "pcseg-ovs=pcseg.cli.scripts:ovs"}
    assert set(_console_scripts()) == expected and set(scripts.TOOLS) == {e.split(':')[1] for e in expected}
    for tool in scripts.TOOLS:
        shim = (REPO / "tools" / f"{tool}.py").read_text(encoding="utf-8")
        assert f"from pcseg.cli.{tool} import *" in shim and len(shim.splitlines()) <= 5
        assert runpy.run_path(str(REPO / "tools" / f"{tool}.py"))["main"].__module__ == f"pcseg.cli.{tool}"


def test_a_console_script_exits_0_whatever_main_returns_and_2_on_a_mistake(monkeypatch, tmp_path, capsys):
    import pcseg.cli.test as test_tool

    monkeypatch.setattr(test_tool, "main", lambda: {"miou": 0.5})  # sys.exit({…}) would print it and exit 1
    assert scripts.test() is None
    monkeypatch.undo()
    monkeypatch.setattr("sys.argv", ["pcseg-train", "--config", str(tmp_path / "none.yaml")])
    with pytest.raises(SystemExit) as err:
        scripts.train()
    assert err.value.code == 2
    assert capsys.readouterr().err == f"error: config: file {tmp_path / 'none.yaml'} not found\n"
    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        scripts.trian  # noqa: B018
