"""The project setup: environment.yml agrees with pyproject.toml, pins, offline Makefile,
the README's first commands, and `python -m vizkit.demo` end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
PROJECT_SPEC = re.compile(r"^(?:-e\s+)?\.(?:\[(?P<extras>[^\]]*)\])?$")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def _pyproject_names(pyproject: dict) -> set[str]:
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {canonicalize_name(Requirement(r).name) for r in reqs}


# ------------------------------------------------------------------ environment.yml
def test_environment_yml_matches_pyproject(environment, pyproject):
    assert environment["name"] == "vizkit"
    deps = environment["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"

    pythons = [d for d in conda if re.match(r"^python\s*[=<>!~ ]", d) or d == "python"]
    assert len(pythons) == 1 and re.fullmatch(r"python\s*=\s*3\.11(\.\*)?", pythons[0]), pythons
    assert "pip" in conda, "environment.yml must install pip for its pip: section"

    known = _pyproject_names(pyproject)
    for d in conda:
        name = re.split(r"[\s=<>!~]", d, maxsplit=1)[0]
        if name in ("python", "pip"):
            continue
        assert canonicalize_name(name) in known, f"conda dependency {d!r} is not in pyproject.toml"

    extras_defined = set(pyproject["project"]["optional-dependencies"])
    project_lines = []
    for line in pip_sections[0]:
        m = PROJECT_SPEC.match(str(line).strip())
        if m:
            project_lines.append(m)
            continue
        name = canonicalize_name(Requirement(str(line)).name)
        assert name in known, f"pip dependency {line!r} in environment.yml is not in pyproject.toml"
    assert len(project_lines) == 1, "the pip: section must install the project once (-e .[extras])"
    extras = {e.strip() for e in (project_lines[0]["extras"] or "").split(",") if e.strip()}
    assert extras == extras_defined, (
        f"environment.yml installs extras {sorted(extras)}, pyproject defines {sorted(extras_defined)}"
    )


def test_pyproject_pins_torch(pyproject):
    pins = {
        canonicalize_name(Requirement(r).name): str(Requirement(r).specifier)
        for r in pyproject["project"]["dependencies"]
    }
    assert pins.get("torch") == "==2.14.1"
    assert pins.get("torchvision") == "==0.29.1"


def test_makefile_exports_offline():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert re.search(rf"^export\s+{var}\s*:?=\s*1\s*$", text, re.MULTILINE), f"Makefile must export {var}=1"


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert m, "README.md has no fenced code block"
    assert [line.strip() for line in m.group(1).strip().splitlines()] == ["make demo", "make test"]
    assert text.lstrip().startswith("```"), "README.md must open with the commands"


# ------------------------------------------------------------------ the demo
def _run_demo(out: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "vizkit.demo", "--output-dir", str(out)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    out, cwd = base / "out", base / "cwd"
    cwd.mkdir()
    proc = _run_demo(out, cwd)
    assert proc.returncode == 0, f"demo failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return out, cwd, proc


def _heatmaps(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "heatmap" and isinstance(value, dict):
                yield value
            else:
                yield from _heatmaps(value)
    elif isinstance(node, list):
        for value in node:
            yield from _heatmaps(value)


def test_demo_writes_figure_and_summary(demo_run):
    out, cwd, proc = demo_run
    assert sorted(p.name for p in out.iterdir()) == ["demo_explanations.png", "summary.json"]
    assert not any(cwd.iterdir()), "the demo wrote outside its output directory"
    png = out / "demo_explanations.png"
    assert str(png) in proc.stdout and str(out / "summary.json") in proc.stdout
    assert "random weights" in proc.stdout

    assert png.stat().st_size > 10_000
    with Image.open(png) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 800 <= w <= 5000 and 400 <= h <= 5000 and w > h, (w, h)

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "random" in summary["note"]
    cnn = summary["cnn"]
    assert [e["method"] for e in cnn["explanations"]] == ["gradcam", "gradcam++", "layercam", "eigencam"]
    assert all(e["layers"] == ["layer4"] for e in cnn["explanations"])
    assert 0 <= cnn["predicted_class"]["index"] < 1000
    vit = summary["vit"]
    assert {e["method"] for e in vit["explanations"]} >= {"gradient_attention", "rollout"}
    assert vit["patch_grid"] == [14, 14] and vit["prefix_tokens"] == 1

    stats = list(_heatmaps(summary))
    assert len(stats) == 7
    for s in stats:
        assert s["shape"] == [224, 224]
        assert 0.0 <= s["min"] <= s["mean"] <= s["max"] <= 1.0, s
        assert s["max"] > s["min"], f"constant heatmap: {s}"


def test_demo_refuses_non_empty_output_dir(demo_run):
    out, cwd, _ = demo_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = _run_demo(out, cwd)
    assert proc.returncode == 2, proc.stderr
    assert "not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
