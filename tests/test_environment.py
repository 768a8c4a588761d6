"""The three ways into the course name the same packages: pyproject.toml (lower bounds),
environment.yml (conda users) and constraints.txt (the tested versions), and CI runs the README's
test command."""

import importlib.metadata
import os
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    """PEP 503 name: 'Jupyter_Server' and 'jupyter-server' are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, Requirement]:
    project = pyproject()["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {normalise(Requirement(line).name): Requirement(line) for line in lines}


def runtime_names() -> set[str]:
    return {normalise(Requirement(line).name) for line in pyproject()["project"]["dependencies"]}


def environment_yml() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip lines) of environment.yml, read with a tiny line parser (no PyYAML)."""
    conda, pip, in_pip = [], [], False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()[2:].strip() if line.strip().startswith("- ") else None
        if item == "pip:":
            in_pip, pip_indent = True, indent
            continue
        if in_pip and item is not None and indent > pip_indent:
            pip.append(item)
            continue
        in_pip = False
        if item is not None:
            conda.append(item)
    return conda, pip


def environment_requirements() -> dict[str, Requirement]:
    _, pip = environment_yml()
    return {normalise(Requirement(line).name): Requirement(line) for line in pip if not line.startswith("-")}


def constraint_lines() -> list[Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [Requirement(line.split(" #")[0]) for line in lines if line.strip() and not line.startswith("#")]


def pins() -> dict[str, Requirement]:
    return {normalise(req.name): req for req in constraint_lines()}


def pinned_version(req: Requirement) -> Version:
    (spec,) = req.specifier
    return Version(spec.version)


def test_environment_yml_names_the_same_packages_as_pyproject():
    in_pyproject, in_environment = set(pyproject_requirements()), set(environment_requirements())
    assert in_pyproject - in_environment == set(), "add these to environment.yml's pip list"
    assert in_environment - in_pyproject == set(), "add these to pyproject.toml (or drop them from environment.yml)"


def test_environment_yml_uses_the_same_lower_bounds():
    ours = pyproject_requirements()
    for name, req in environment_requirements().items():
        assert req.specifier == ours[name].specifier, f"{name}: environment.yml {req} vs pyproject.toml {ours[name]}"


def test_environment_yml_installs_the_course_with_the_tested_versions():
    conda, pip = environment_yml()
    assert "python=3.11" in conda and "pip" in conda
    assert "-c constraints.txt" in pip, "conda users get the tested versions too"
    assert "-e ." in pip, "the package itself (and the rlhf-lessons command) is installed"


def test_constraints_pin_torch_and_every_dependency_exactly():
    pinned = pins()
    for name in ["torch", *pyproject_requirements()]:
        assert name in pinned, f"constraints.txt does not pin {name}"
        specs = list(pinned[name].specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name} must be pinned with ==, got {pinned[name]}"


def test_constraints_name_each_package_once():
    names = [normalise(req.name) for req in constraint_lines()]
    assert len(names) == len(set(names))


def test_pins_satisfy_pyproject_lower_bounds():
    pinned = pins()
    for name, req in pyproject_requirements().items():
        assert req.specifier.contains(pinned_version(pinned[name])), f"{pinned[name]} is outside pyproject's {req}"


def test_torch_pin_applies_everywhere_and_is_readable_by_the_makefile():
    (torch_line,) = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch")]
    # The Makefile installs torch alone, first, from this exact line: `torch==X.Y.Z`, no marker.
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", torch_line.strip()), torch_line
    assert "constraints.txt" in (ROOT / "Makefile").read_text()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the pins are the tested set for Python >= 3.11")
def test_installed_versions_are_the_tested_ones():
    """The environment running the tests is the one constraints.txt describes (torch aside: a GPU
    user's own build is kept by `make setup`)."""
    for name, req in pins().items():
        if name == "torch" or (req.marker is not None and not req.marker.evaluate()):
            continue
        installed = Version(importlib.metadata.version(name))
        assert installed == pinned_version(req), f"{name} {installed} installed, {req} tested: run `make setup`"


def test_pyproject_declares_the_command_and_test_markers():
    data = pyproject()
    assert data["project"]["scripts"]["rlhf-lessons"] == "rlhf_lessons.cli:main"
    assert data["project"]["requires-python"] == ">=3.10"
    assert {"torch", "transformers", "tokenizers", "safetensors", "jupyterlab", "ipywidgets"} <= runtime_names()
    markers = {line.split(":")[0] for line in data["tool"]["pytest"]["ini_options"]["markers"]}
    assert {"slow", "browser", "notebook"} <= markers


def test_ci_runs_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    lines = [line.strip() for line in ci.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
    assert ci.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in lines
    assert lines[-1] == "make test"
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not written yet")
    assert "make test" in readme.read_text(), "the README must give `make test` as the test command"
