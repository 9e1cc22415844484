"""``pip install ecanet`` without extras: the command runs, and a subcommand that needs an extra's
package stops before its work with one line naming the package and the install that provides it.

Each case runs ``ecanet`` in a fresh interpreter in which every package of the extras fails to
import, as where it was never installed.
"""

import subprocess
import sys

import pytest

from ecanet.dependencies import lower_bounds
from short_runs import train_short_run

EXTRAS_MODULES = (
    "tqdm",
    "matplotlib",
    "torchvision",
    "PIL",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "timm",
    "tensorboard",
)
_WITHOUT_EXTRAS = f"""
import sys
for name in {EXTRAS_MODULES!r}:
    sys.modules[name] = None  # import fails with ImportError
from ecanet.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _ecanet_without_extras(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_short_run(tmp_path_factory.mktemp("short-run"))


def test_every_package_of_the_train_and_export_extras_is_left_out():
    distributions = lower_bounds("train").keys() | lower_bounds("export").keys()
    assert {{"pillow": "PIL"}.get(name, name) for name in distributions} <= set(EXTRAS_MODULES)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "printed"),
    [
        (["--help"], "usage: ecanet"),
        (["showcase"], "ECA-NS (per-channel)"),
        (["info", "eca_resnet18"], "eca_resnet18"),
    ],
)
def test_commands_without_extras_run(args, printed, tmp_path):
    finished = _ecanet_without_extras(*args, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert printed in finished.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "--epochs", "1"],
            "ecanet train: error: training needs tqdm, matplotlib: pip install 'ecanet[train]'",
        ),
        (
            ["compare", "--preset", "demo"],
            "ecanet compare: error: training needs tqdm, matplotlib: pip install 'ecanet[train]'",
        ),
        (
            ["bench", "--quick", "--out", "bench"],
            "ecanet bench: error: benchmarking needs tqdm, matplotlib: pip install 'ecanet[train]'",
        ),
        (
            ["retrofit-plan", "torchvision:resnet18"],
            "ecanet retrofit-plan: error: torchvision is not installed; install it to build torchvision models",
        ),
    ],
)
def test_commands_that_need_an_extra_name_it_and_write_nothing(args, message, tmp_path):
    finished = _ecanet_without_extras(*args, cwd=tmp_path)
    assert finished.returncode == 2
    assert finished.stderr.strip() == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_checkpoint_exports_to_pt2_without_extras_and_to_onnx_names_the_extra(checkpoint, tmp_path):
    finished = _ecanet_without_extras("export", str(checkpoint), "--output", "model.pt2", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("wrote model.pt2 (pt2, ") and (tmp_path / "model.pt2").is_file()

    finished = _ecanet_without_extras("export", str(checkpoint), "--output", "model.onnx", cwd=tmp_path)
    assert finished.returncode == 2
    assert finished.stderr.strip() == (
        "ecanet export: error: ONNX export needs onnx, onnxscript, onnxruntime: pip install 'ecanet[export]' "
        "(or write a .pt2 file instead)"
    )
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
def test_explain_names_matplotlib_before_it_explains(checkpoint, tmp_path):
    finished = _ecanet_without_extras("explain", str(checkpoint), "--out", "explain", cwd=tmp_path)
    assert finished.returncode == 2
    assert finished.stderr.strip() == "ecanet explain: error: plotting needs matplotlib: pip install 'ecanet[train]'"
    assert not (tmp_path / "explain").exists()
