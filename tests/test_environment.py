"""pyproject.toml, environment.yml, the Makefile and .ci/run agree with each other."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
# commands the Makefile runs from .venv/bin, and the package that provides each
COMMAND_PACKAGE = {
    "ruff": "ruff",
    "pytest": "pytest",
    "jupyter": "jupyterlab",
    "papermill": "papermill",
}
VENV_COMMANDS = {"pip", "python"}  # come with every venv
EXACT_PINS = {"torch": "==2.14.1", "torchvision": "==0.29.1"}

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(requirement: str) -> tuple[str, str]:
    match = REQUIREMENT.match(requirement)
    assert match, f"cannot read requirement {requirement!r}"
    return _normalise(match.group(1)), match.group(3).replace(" ", "")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pip_dependencies() -> dict[str, str]:
    return dict(_split(r) for r in _pyproject()["project"]["dependencies"])


def _conda_dependencies() -> tuple[dict[str, str], list]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "kdbook"
    assert env["channels"][0] == "conda-forge"
    assert set(env["channels"]) <= {"conda-forge", "nodefaults"}, "conda-forge only"
    packages: dict[str, str] = {}
    pip_section: list = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = _split(dep)
        # conda's "=X" means version X (any build): the same as pip's "==X"
        spec = re.sub(r"^=(?!=)", "==", spec)
        packages[CONDA_TO_PIP.get(name, name)] = spec
    return packages, pip_section


def test_environment_yml_matches_pyproject() -> None:
    conda, pip_section = _conda_dependencies()
    assert conda.pop("python") == "==3.11"
    assert conda.pop("pip") == ""
    assert pip_section == ["-e ."]
    pip = _pip_dependencies()
    assert set(conda) == set(pip), (
        f"only in environment.yml: {sorted(set(conda) - set(pip))}; "
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}"
    )
    assert conda == pip, "the same version constraints in both files"


def test_torch_pins_are_exact() -> None:
    pip = _pip_dependencies()
    conda, _ = _conda_dependencies()
    for name, pin in EXACT_PINS.items():
        assert pip[name] == pin
        assert conda[name] == pin


def test_python_version_agrees() -> None:
    assert _pyproject()["project"]["requires-python"] == ">=3.11"
    assert _pyproject()["tool"]["ruff"]["target-version"] == "py311"


def test_makefile_tools_are_installed_by_the_dev_extra() -> None:
    project = _pyproject()["project"]
    dev = {_split(r)[0] for r in project["optional-dependencies"]["dev"]}
    runtime = set(_pip_dependencies())
    makefile = (ROOT / "Makefile").read_text()
    commands = set(re.findall(r"\$\(BIN\)/([A-Za-z0-9_.-]+)", makefile))
    # `make test` hands the unit tests, the book and nbval to tests/make_test.py, which
    # calls the venv's commands as BIN / "name"
    make_test = (ROOT / "tests" / "make_test.py").read_text()
    assert "$(BIN)/python tests/make_test.py" in makefile
    commands |= set(re.findall(r'BIN / "([A-Za-z0-9_.-]+)"', make_test))
    assert {"ruff", "pytest", "kdbook", "pip", "python"} <= commands
    for command in sorted(commands - VENV_COMMANDS):
        if command in project["scripts"]:
            continue
        assert command in COMMAND_PACKAGE, f"Makefile calls {command}: add it to COMMAND_PACKAGE"
        package = COMMAND_PACKAGE[command]
        if command in {"ruff", "pytest"}:  # development tools belong to the dev extra
            assert package in dev, f"{package} (called by the Makefile) is not in the dev extra"
        else:
            assert package in dev | runtime, f"{package} is not a dependency"
    if "--nbval" in makefile + make_test:
        assert "nbval" in runtime
    assert re.search(
        r'\.venv/bin/pip install .*-e "\.\[dev\]"', makefile.replace("$(BIN)", ".venv/bin")
    )


def test_every_make_target_sets_up_the_venv() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book", "test", "lab"):
        match = re.search(rf"^{target}:(.*)$", makefile, re.MULTILINE)
        assert match, f"no target {target}"
        assert "$(STAMP)" in match.group(1), f"{target} does not depend on the venv stamp"
    assert re.search(r"^\$\(STAMP\): pyproject.toml$", makefile, re.MULTILINE)
    assert "ipykernel install --sys-prefix --name python3" in makefile


def test_ci_runs_the_readme_test_command() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test$", text, re.MULTILINE)
    assert "`make test`" in (ROOT / "README.md").read_text()
