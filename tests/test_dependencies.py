"""``ecanet.dependencies.require``: a missing or too old package is named, with the install that
provides it, as pyproject.toml's extras and lower bounds say."""

import sys

import matplotlib
import numpy
import pytest

from ecanet.dependencies import MissingDependency, require


def test_installed_packages_at_their_bounds_pass():
    require("everything", "torch", "numpy", "tqdm", "matplotlib", "pillow", "onnx", "onnxscript", "onnxruntime")


def test_a_missing_package_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if it were not installed
    with pytest.raises(MissingDependency, match=r"^training needs tqdm: pip install 'ecanet\[train\]'$"):
        require("training", "tqdm", "matplotlib")


def test_a_distribution_is_imported_by_its_module_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingDependency, match=r"^reading needs pillow: pip install 'ecanet\[train\]'$"):
        require("reading", "pillow")


def test_packages_of_two_extras_name_both(monkeypatch):
    for name in ("tqdm", "onnx"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependency, match=r"^both needs tqdm, onnx: pip install 'ecanet\[export,train\]'$"):
        require("both", "tqdm", "onnx")


def test_a_release_below_the_bound_asks_for_an_upgrade(monkeypatch):
    monkeypatch.setattr(matplotlib, "__version__", "3.6.3")
    with pytest.raises(
        MissingDependency,
        match=r"^plotting needs matplotlib>=3\.7 \(found 3\.6\.3\): pip install --upgrade 'ecanet\[train\]'$",
    ):
        require("plotting", "matplotlib")


def test_a_runtime_dependency_below_its_bound_is_upgraded_by_name(monkeypatch):
    monkeypatch.setattr(numpy, "__version__", "1.24.1")
    with pytest.raises(
        MissingDependency, match=r"^the layer needs numpy>=1\.24\.2 \(found 1\.24\.1\): pip install --upgrade numpy$"
    ):
        require("the layer", "numpy")


def test_a_missing_package_is_an_import_error():
    assert issubclass(MissingDependency, ImportError)
