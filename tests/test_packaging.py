"""The wheel ships the whole package: every module, the C++ sources the CPU kernels are built
from on first use, and the embedded dataset (package data that pyproject.toml must name)."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


def test_the_floor_ci_installs_is_the_one_pyproject_declares():
    """`make test-floor` runs the suite on exact versions; they must be pyproject.toml's lower bounds."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (floor,) = re.findall(r"(?m)^FLOOR := (.+)$", makefile)
    pinned = dict(pin.split("==") for pin in floor.split())
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = dict(re.findall(r'"(torch|torchvision)>=([\d.]+)"', pyproject))
    assert set(pinned) == set(declared) == {"torch", "torchvision"}
    for name, version in pinned.items():
        bound = declared[name].split(".")
        assert version.split(".") == bound + ["0"] * (3 - len(bound)), f"{name}: Makefile pins {version}"
