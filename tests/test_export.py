import copy
import io
import json
import sys

import onnx
import onnxruntime
import onnxscript
import pytest
import torch
from torch import nn

from ecanet import ECA, create_model, export_model

pytestmark = pytest.mark.slow  # each export takes seconds (ONNX about 20 s)


def _small_eca_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("eca_resnet18", num_classes=10, in_chans=1, small_input=True, width=8)
    with torch.no_grad():  # BatchNorm statistics other than (0, 1), so that they matter
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _float64_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eager network in float64: what the file must compute, up to float32 rounding."""
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double())


def _run_file(path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """The written file, run without ecanet's export code: onnxruntime, or torch.export.load."""
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    return torch.export.load(str(path)).module()(x)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_the_file_computes_the_network_at_any_batch_size_and_keeps_the_metadata(tmp_path, fmt):
    model = _small_eca_resnet()
    path = tmp_path / f"model.{fmt}"
    metadata = {"classes": ["t-shirt", "trouser"], "model": "eca_resnet18"}
    report = export_model(model, torch.randn(1, 1, 28, 28), path, metadata=metadata)
    assert report.path == path and report.format == fmt and report.size_bytes == path.stat().st_size
    assert report.batch_sizes == (2, 3)  # batch 1 would be specialised: exported at 2
    assert report.max_abs_error < 1e-4 * max(1.0, report.output_scale)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        got = _run_file(path, fmt, x)
        torch.testing.assert_close(got.double(), _float64_reference(model, x), rtol=1e-4, atol=1e-5)
    if fmt == "onnx":
        graph = onnx.load(str(path))
        assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}  # standard operators only
        properties = {prop.key: prop.value for prop in graph.metadata_props}
        assert json.loads(properties["classes"]) == metadata["classes"] and properties["model"] == "eca_resnet18"
    else:
        extra = {"ecanet.json": ""}
        torch.export.load(str(path), extra_files=extra)
        assert json.loads(extra["ecanet.json"]) == metadata


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_static_batch_file_takes_only_that_batch(tmp_path, fmt):
    model = _small_eca_resnet()
    path = tmp_path / "model.bin"
    report = export_model(model, torch.randn(4, 1, 28, 28), path, format=fmt, dynamic_batch=False)
    assert report.batch_sizes == (4,)
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(_run_file(path, fmt, x).double(), _float64_reference(model, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime and torch raise their own errors
        _run_file(path, fmt, torch.randn(5, 1, 28, 28))


class _DiffersWhenExported(nn.Module):
    """Adds 1 only in the exported graph: an export that does not compute the eager network."""

    def forward(self, x):
        return x + 1 if torch.compiler.is_exporting() else x


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_file_that_differs_from_the_network_is_not_written_and_the_old_file_stays(tmp_path, fmt):
    path = tmp_path / f"model.{fmt}"
    path.write_bytes(b"the previous export")
    with pytest.raises(RuntimeError, match=r"differs from the eager one by up to 1 .*was not written"):
        export_model(_DiffersWhenExported(), torch.randn(2, 3), path)
    assert path.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_network_that_changes_its_input_in_place_is_checked_on_a_copy_of_it(tmp_path, fmt):
    torch.manual_seed(0)
    model = ECA(64, inplace=True).eval()
    example = torch.randn(2, 64, 5, 5)
    given = example.clone()
    report = export_model(model, example, tmp_path / f"model.{fmt}")
    torch.testing.assert_close(example, given, rtol=0, atol=0)
    assert report.max_abs_error < 1e-5
    x = torch.randn(3, 64, 5, 5)
    expected = _float64_reference(model, x.clone())
    torch.testing.assert_close(_run_file(tmp_path / f"model.{fmt}", fmt, x).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("fmt", "dtype"), [("pt2", torch.float16), ("pt2", torch.bfloat16), ("onnx", torch.float16)])
def test_a_half_precision_network_is_checked_against_its_own_rounding(tmp_path, fmt, dtype):
    model = _small_eca_resnet().to(dtype)
    report = export_model(model, torch.randn(2, 1, 28, 28, dtype=dtype), tmp_path / f"model.{fmt}")
    assert 0 < report.max_abs_error <= 5e-2 * max(1, report.output_scale)
    x = torch.randn(3, 1, 28, 28, dtype=dtype)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(_run_file(tmp_path / f"model.{fmt}", fmt, x), expected, rtol=0, atol=5e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_onnx_in_a_dtype_onnxruntime_cannot_run_is_refused_before_the_export(tmp_path, dtype):
    model = nn.Linear(3, 2).to(dtype)
    with pytest.raises(ValueError, match=f"onnxruntime, which takes float32 or float16, but .* holds {dtype}"):
        export_model(model, torch.randn(2, 3, dtype=dtype), tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=f"holds {dtype}: convert it"):
        export_model(model, torch.randn(2, 3), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


class _FailsIfRun(nn.Module):
    def forward(self, x):
        pytest.fail("the network was exported before the output path was checked")


def test_an_output_path_that_cannot_be_written_is_refused_before_the_export(tmp_path):
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ValueError, match=f"^'{tmp_path / 'model.onnx'}' is a directory: name the file to write"):
        export_model(_FailsIfRun(), torch.randn(2, 3), tmp_path / "model.onnx")
    missing = tmp_path / "missing" / "model.pt2"
    with pytest.raises(ValueError, match=f"^cannot write '{missing}': the directory '{missing.parent}' does not exist"):
        export_model(_FailsIfRun(), torch.randn(2, 3), missing)


class _RefusesExport(nn.Module):
    def forward(self, x):
        assert not torch.compiler.is_exporting(), "this network cannot be traced"
        return x


def test_a_network_torch_export_fails_on_is_a_runtime_error_in_one_line(tmp_path):
    with pytest.raises(RuntimeError) as error:
        export_model(_RefusesExport(), torch.randn(2, 3), tmp_path / "model.pt2")
    assert str(error.value) == (
        "torch.export cannot export the network (a fixed batch size, dynamic_batch=False, may export): "
        f"AssertionError: this network cannot be traced; '{tmp_path / 'model.pt2'}' was not written"
    )
    assert not (tmp_path / "model.pt2").exists()


@pytest.mark.parametrize(
    ("path", "kwargs", "example", "message"),
    [
        ("model.onnnx", {}, torch.randn(2, 3), "cannot tell the format from 'model.onnnx'"),
        ("model.onnx", {"format": "torchscript"}, torch.randn(2, 3), "format must be one of"),
        ("model.pt2", {"format": "onnx"}, torch.randn(2, 3), "'model.pt2' names a pt2 file, not onnx: rename it"),
        ("model.pt2", {"tolerance": -1e-4}, torch.randn(2, 3), r"tolerance must be a number >= 0 .*, got -0.0001"),
        ("model.pt2", {"tolerance": float("nan")}, torch.randn(2, 3), r"tolerance must be a number >= 0 .*, got nan"),
        ("model.onnx", {}, torch.tensor(1.0), r"example must be a tensor with a batch dimension, got shape \(\)"),
        ("model.onnx", {}, [1, 2], "got list"),
        (
            "model.pt2",
            {},
            torch.randn(2, 3, device="meta"),
            "works on the CPU: move the model and example there, got meta",
        ),
    ],
)
def test_bad_arguments_name_the_problem(tmp_path, path, kwargs, example, message):
    with pytest.raises(ValueError, match=message):
        export_model(nn.Identity(), example, tmp_path / path, **kwargs)
    assert not (tmp_path / path).exists()


def test_the_network_is_exported_in_eval_mode(tmp_path):
    model = _small_eca_resnet().train()
    report = export_model(model, torch.randn(2, 1, 28, 28), tmp_path / "model.pt2")
    assert not model.training and report.max_abs_error < 1e-4
    buffer = io.BytesIO((tmp_path / "model.pt2").read_bytes())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(
        torch.export.load(buffer).module()(x).double(), _float64_reference(model, x), rtol=1e-4, atol=1e-5
    )


def test_onnx_export_without_onnxruntime_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"ONNX export needs onnxruntime: pip install 'ecanet\[export\]'"):
        export_model(nn.Identity(), torch.randn(2, 3), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_onnx_export_with_too_old_onnxscript_names_the_release_it_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(onnxscript, "__version__", "0.6.2")  # torch 2.12's exporter fails with it
    with pytest.raises(
        ImportError,
        match=r"ONNX export needs onnxscript>=0\.7 \(found 0\.6\.2\): pip install --upgrade 'ecanet\[export\]'",
    ):
        export_model(nn.Identity(), torch.randn(2, 3), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
