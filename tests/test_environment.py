"""environment.yml is a real conda environment that agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import REPO_ROOT
from packaging.requirements import Requirement

CONDA_TO_PYPI = {"pytorch": "torch"}


def _conda_spec(spec: str) -> Requirement:
    match = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", spec.strip())
    assert match, f"unparseable conda spec {spec!r}"
    name, rest = match.groups()
    return Requirement(CONDA_TO_PYPI.get(name, name) + rest.replace(" ", ""))


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return {Requirement(s).name.lower(): Requirement(s) for s in specs}


def _environment() -> tuple[dict, dict[str, Requirement]]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    found: dict[str, Requirement] = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for spec in entry["pip"]:
                if not spec.startswith("-e"):
                    req = Requirement(spec)
                    found[req.name.lower()] = req
        else:
            req = _conda_spec(entry)
            found[req.name.lower()] = req
    return env, found


def test_environment_file_is_a_conda_environment() -> None:
    env, found = _environment()
    assert env["name"] == "medfew"
    assert env["channels"] == ["conda-forge"]
    assert "python" in found and "pip" in found
    pip_section = [e for e in env["dependencies"] if isinstance(e, dict)][0]["pip"]
    assert "-e ." in pip_section  # installs medfew itself


def test_environment_lists_every_pyproject_dependency_with_the_same_lower_bound() -> None:
    _, found = _environment()
    for name, req in _pyproject_requirements().items():
        assert name in found, f"{name} is in pyproject.toml but not in environment.yml"
        assert str(found[name].specifier) == str(req.specifier), (
            f"{name}: environment.yml says {found[name].specifier}, pyproject says {req.specifier}"
        )


def test_environment_has_nothing_pyproject_lacks() -> None:
    _, found = _environment()
    extra = set(found) - set(_pyproject_requirements()) - {"python", "pip"}
    assert not extra, f"environment.yml lists packages pyproject.toml does not: {sorted(extra)}"


def test_python_floor_agrees() -> None:
    _, found = _environment()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert str(found["python"].specifier) == project["requires-python"]
