"""The ``vizkit`` command line as a thin package (issue 27): ``--version``, every subcommand's
parser and ``--help``, the one device choice, and the CLI modules' size and imports."""

import ast
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

import vizkit
from vizkit.cli import SUBCOMMANDS, build_parser, main
from vizkit.errors import ParameterError
from vizkit.state import resolve_device

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "vizkit" / "cli"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
COMMANDS = {
    "clip-gradcam": "clip_gradcam",
    "detector-attention": "detector_attention",
    "detector-gradcam": "detector_gradcam",
    "evaluate": "evaluate",
    "run": "run",
    "vlm-video": "vlm_video",
}


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"vizkit {version('vizkit')}\n"
    assert version("vizkit") == vizkit.__version__


def test_version_of_the_real_process():
    proc = subprocess.run(
        [sys.executable, "-m", "vizkit.cli", "--version"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout == f"vizkit {version('vizkit')}\n", proc.stderr


def test_each_subcommand_has_its_module():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == set(COMMANDS)
    assert [m.__name__ for m in SUBCOMMANDS] == [f"vizkit.cli.{m}" for m in COMMANDS.values()]
    for name, module in COMMANDS.items():
        run = sub.choices[name].get_default("run")
        assert run.__module__ == f"vizkit.cli.{module}" and run.__name__ == "run", name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_each_subcommand(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vizkit {name}") and "--workers N" in out


def test_auto_on_a_machine_without_a_gpu_is_the_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == resolve_device(None) == torch.device(expected)
    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_one_clear_error(name):
    if torch.cuda.is_available():  # a GPU machine: the GPU itself
        assert resolve_device(name) == torch.device(name)
        return
    with pytest.raises(ParameterError) as err:
        resolve_device(name)
    assert str(err.value) == f"device={name!r} but no CUDA device is available: use 'auto' or 'cpu'"


def test_an_unknown_device_names_the_choices():
    with pytest.raises(ParameterError, match="device 'tpu' is not a device: use 'auto', 'cpu', 'cuda'"):
        resolve_device("tpu")


def test_notebook_validators_use_the_device_function():
    """Every scenario's check_notebook_parameters that takes a device calls resolve_device, and
    none tests torch.cuda itself."""
    checked = 0
    for path in sorted((ROOT / "vizkit" / "scenarios").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check_notebook_parameters"):
            source = ast.get_source_segment(path.read_text(encoding="utf-8"), fn)
            assert "torch.cuda" not in source, path.name
            if '"device"' in path.read_text(encoding="utf-8"):
                assert "resolve_device(" in source, path.name
                checked += 1
    assert checked == 4


def _cli_modules() -> list[Path]:
    return sorted(CLI.glob("*.py"))


def test_no_cli_module_is_longer_than_250_lines():
    long = {p.name: n for p in _cli_modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 250}
    assert len(_cli_modules()) == 9 and not long, long


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_cli_module_imports_a_private_name():
    """``from x import _name`` / ``import x._mod`` / ``module._name`` of another module: none (the
    stdlib's ``argparse._SubParsersAction``, the type of ``add_subparsers()``, aside)."""
    found = []
    for path in _cli_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if _private(a.name)]
                if any(_private(part) for part in (node.module or "").split(".")):
                    found.append(f"{path.name}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                found += [
                    f"{path.name}:{node.lineno} {a.name}"
                    for a in node.names
                    if any(_private(p) for p in a.name.split("."))
                ]
            elif (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and not (isinstance(node.value, ast.Name) and node.value.id == "argparse")
            ):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not found, found


def test_the_checks_catch_a_private_import(tmp_path, monkeypatch):
    """The ast check above is not vacuous: a module with a private import is caught."""
    (tmp_path / "bad.py").write_text(
        "from __future__ import annotations\n"
        "from vizkit.scenarios.clip_detector_attention import _reindex\n"
        "import vizkit.scenarios._x\n"
        "from vizkit.scenarios import clip_detector_attention as s\ns._stems([])\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "CLI", tmp_path)
    with pytest.raises(AssertionError) as err:
        test_no_cli_module_imports_a_private_name()
    assert "['bad.py:2 _reindex', 'bad.py:3 vizkit.scenarios._x', 'bad.py:5 ._stems']" in str(err.value)
