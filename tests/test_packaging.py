"""The wheel ships the whole package: every module, the C++ sources the CPU kernels are built
from on first use, and the embedded dataset (package data that pyproject.toml must name). The
floors CI tests (`make test-floor`) are the ones pyproject.toml declares, and ecanet reads them."""

import itertools
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from ecanet.dependencies import lower_bounds, release

ROOT = Path(__file__).resolve().parents[1]


def _package_files(package: Path) -> set[str]:
    return {
        path.relative_to(package.parent).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_the_wheel_holds_every_file_of_the_package(tmp_path):
    project = tmp_path / "project"  # a copy: building writes build/ and egg-info beside the sources
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(project),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            str(wheels),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("ecanet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("ecanet/")}
    expected = _package_files(project / "src" / "ecanet")
    assert {
        "ecanet/ops/csrc/eca_cpu.cpp",
        "ecanet/ops/csrc/layout.h",
        "ecanet/data/fashion_mnist_subset.npz",
    } <= expected
    assert expected - shipped == set(), "files of the package missing from the wheel"
    assert shipped - expected == set()


def _makefile_variable(name: str) -> str:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    (value,) = re.findall(rf"(?m)^{name} := (.+)$", makefile)
    return value


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _declared_bounds(requirements: list[str]) -> dict[str, str]:
    """``{name: lower bound}`` of pyproject.toml requirements, ecanet's own extras left out."""
    bounds = {}
    for requirement in requirements:
        if requirement.startswith("ecanet["):
            continue
        match = re.fullmatch(r"([\w.-]+)>=([\d.]+)", requirement)
        assert match, f"{requirement!r}: every dependency takes a plain lower bound, the one CI tests"
        bounds[match[1].lower()] = match[2]
    return bounds


def test_the_floor_ci_installs_is_the_one_pyproject_declares():
    """`make test-floor` runs the suite on exact versions: pyproject.toml's lower bound of every
    dependency, none left to the resolver's newest."""
    pinned = dict(pin.lower().split("==") for pin in _makefile_variable("FLOOR").split())
    project = _pyproject()["project"]
    declared = _declared_bounds(
        [*project["dependencies"], *itertools.chain(*project["optional-dependencies"].values())]
    )
    assert set(pinned) == set(declared), "FLOOR must pin exactly pyproject's dependencies"
    assert {"torch", "torchvision", "onnxscript", "timm"} <= set(declared)
    for name, version in pinned.items():
        bound = declared[name].split(".")
        assert version.split(".") == bound + ["0"] * (3 - len(bound)), f"{name}: Makefile pins {version}"


def test_the_floor_python_is_the_oldest_pyproject_allows_and_ruff_targets():
    project = _pyproject()
    oldest = project["project"]["requires-python"].removeprefix(">=")
    assert _makefile_variable("FLOOR_PYTHON") == f"python{oldest}"
    assert project["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")


@pytest.mark.parametrize("extra", [None, "train", "export", "dev"])
def test_ecanet_reads_back_the_lower_bounds_pyproject_declares(extra):
    """What ``ecanet.dependencies.lower_bounds`` finds in the installed metadata (``require`` checks
    packages against it) is what pyproject.toml declares."""
    project = _pyproject()["project"]
    requirements = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    declared = {name: release(version) for name, version in _declared_bounds(requirements).items()}
    assert declared and lower_bounds(extra) == declared
