"""Deployable files of a network: ONNX (for onnxruntime and other runtimes) or a ``torch.export``
program (``.pt2``). Each file is run and compared with the eager network before it is written.

ECA exports as plain operators (pooling, a 1-D convolution, a sigmoid, a product): the fast paths
step aside under export (see ``docs/performance.md``), so the files need no ecanet to run.
TorchScript is not offered: torch deprecates it in favour of ``torch.export``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ecanet.dependencies import require
from ecanet.training.files import write_atomically

__all__ = ["FORMATS", "ExportReport", "export_model"]

FORMATS = ("onnx", "pt2")
_SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
_METADATA_FILE = "ecanet.json"
"""Name of the metadata inside a ``.pt2`` file (``torch.export.load(..., extra_files=...)``)."""
_TOLERANCES = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
"""Default tolerance by the eager output's dtype: some ten roundings of the half types, as many more of float32."""
_ONNX_DTYPES = (torch.float32, torch.float16)
"""What onnxruntime's CPU provider runs, so what an ONNX file can be checked in."""


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and how the file compared with the eager network.

    Attributes:
        path: the file written.
        format: ``"onnx"`` or ``"pt2"``.
        size_bytes: the file's size.
        batch_sizes: batch sizes the file was run at.
        max_abs_error: largest ``|file - eager|`` over those runs.
        output_scale: largest ``|eager|`` output, for scale.
    """

    path: Path
    format: str
    size_bytes: int
    batch_sizes: tuple[int, ...]
    max_abs_error: float
    output_scale: float


def export_model(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    format: str | None = None,
    dynamic_batch: bool = True,
    metadata: Mapping[str, object] | None = None,
    tolerance: float | None = None,
) -> ExportReport:
    """Exports ``model`` (in eval mode) for inputs like ``example``, checks the file, then writes it.

    The exported network is run on ``example`` (and, with a dynamic batch, on a batch one larger)
    and compared with the eager network; only a file within ``tolerance`` of it is written, and
    atomically, so a failed export leaves any file already at ``path`` as it was.

    Args:
        model: the network, on the CPU; it is put in eval mode.
        example: an input batch on the CPU, ``(N, C, H, W)`` for the image models.
        path: the file to write.
        format: ``"onnx"`` or ``"pt2"``; by default from ``path``'s suffix.
        dynamic_batch: whether the file takes any batch size (else only ``example``'s).
        metadata: strings and JSON-serialisable values stored in the file: ONNX metadata
            properties (non-strings as JSON), or ``ecanet.json`` inside a ``.pt2`` file.
        tolerance: largest allowed ``|file - eager|``, relative to the largest ``|eager|`` output
            (absolute below 1); by default from the output's dtype: 1e-8 for float64, 1e-4 for
            float32, 1e-2 for float16 and 5e-2 for bfloat16.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: an unknown format or suffix, a format the suffix contradicts, a ``path`` that is
            a directory or whose directory is missing, an example without a batch dimension or off
            the CPU, ONNX for a network or example in a dtype other than float32 or float16, a
            negative tolerance.
        ImportError: ONNX export without onnx, onnxscript and onnxruntime (the ``export`` extra), or
            with releases older than the extra's lower bounds.
        RuntimeError: the network cannot be exported, or the exported network's outputs differ from
            the eager network's.

    Example:
        >>> import tempfile, pathlib, ecanet
        >>> model = ecanet.create_model("eca_resnet18", num_classes=10, in_chans=1, small_input=True, width=8)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt2"
        >>> report = export_model(model, torch.randn(2, 1, 28, 28), path)
        >>> report.format, report.batch_sizes, report.max_abs_error < 1e-4
        ('pt2', (2, 3), True)
    """
    if tolerance is not None and not tolerance >= 0:
        raise ValueError(f"tolerance must be a number >= 0 (or None for the dtype's default), got {tolerance!r}")
    path = Path(path)
    format = _format_of(path, format)
    _require_writable(path)
    if format == "onnx":
        require("ONNX export", "onnx", "onnxscript", "onnxruntime", alternative="write a .pt2 file instead")
    if not isinstance(example, Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise ValueError(f"example must be a tensor with a batch dimension, got {_describe(example)}")
    if example.device.type != "cpu":
        raise ValueError(f"export_model works on the CPU: move the model and example there, got {example.device}")
    if format == "onnx":
        _require_onnx_dtypes(model, example)
    model = model.eval()
    if dynamic_batch and example.shape[0] == 1:
        example = example.expand(2, *example.shape[1:]).clone()  # batch 1 would be specialised
    batch_sizes = (example.shape[0], example.shape[0] + 1) if dynamic_batch else (example.shape[0],)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporters' notices about their own internals
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
            data = _serialized_onnx(program, metadata) if format == "onnx" else _serialized_pt2(program, metadata)
        except Exception as error:  # the exporters raise whatever their internals do, assertions included
            fixed = " (a fixed batch size, dynamic_batch=False, may export)" if dynamic_batch else ""
            raise RuntimeError(
                f"torch.export cannot export the network{fixed}: {type(error).__name__}: {_first_line(error)}; "
                f"{str(path)!r} was not written"
            ) from error
    run = _onnx_runner(data) if format == "onnx" else _pt2_runner(data)
    error, scale, dtype = _compare(model, run, example, batch_sizes)
    tolerance = _TOLERANCES.get(dtype, _TOLERANCES[torch.float32]) if tolerance is None else tolerance
    if not error <= tolerance * max(1.0, scale):
        raise RuntimeError(
            f"the exported {format} network differs from the eager one by up to {error:.3g} (outputs up to "
            f"{scale:.3g}, tolerance {tolerance:g}); {str(path)!r} was not written"
        )
    write_atomically(path, data)
    return ExportReport(path, format, len(data), batch_sizes, error, scale)


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        if path.suffix not in _SUFFIXES:
            raise ValueError(
                f"cannot tell the format from {path.name!r}: name the file *.onnx or *.pt2, or choose the format"
            )
        return _SUFFIXES[path.suffix]
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if _SUFFIXES.get(path.suffix, format) != format:
        raise ValueError(f"{path.name!r} names a {_SUFFIXES[path.suffix]} file, not {format}: rename it *.{format}")
    return format


def _require_writable(path: Path) -> None:
    """Raises a ValueError naming ``path`` before the export if the file could not be written there."""
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory: name the file to write, e.g. {str(path / 'model.onnx')!r}")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: the directory {str(path.parent)!r} does not exist")


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "no message")


def _require_onnx_dtypes(model: nn.Module, example: Tensor) -> None:
    """Raises a ValueError before the export if onnxruntime could not run the file to check it."""
    tensors = [example, *model.parameters(), *model.buffers()]
    if unsupported := sorted({str(t.dtype) for t in tensors if t.is_floating_point() and t.dtype not in _ONNX_DTYPES}):
        raise ValueError(
            f"ONNX export runs the file with onnxruntime, which takes float32 or float16, but the network or "
            f"example holds {', '.join(unsupported)}: convert it (model.float(), example.float()) or write a .pt2 file"
        )


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _serialized_onnx(program: torch.export.ExportedProgram, metadata: Mapping[str, object] | None) -> bytes:
    onnx_program = torch.onnx.export(
        program, dynamo=True, input_names=["input"], output_names=["output"], verbose=False
    )
    proto = onnx_program.model_proto
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    return proto.SerializeToString()


def _serialized_pt2(program: torch.export.ExportedProgram, metadata: Mapping[str, object] | None) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={_METADATA_FILE: json.dumps(dict(metadata or {}))})
    return buffer.getvalue()


def _onnx_runner(data: bytes) -> Callable[[Tensor], Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _pt2_runner(data: bytes) -> Callable[[Tensor], Tensor]:
    module = torch.export.load(io.BytesIO(data)).module()
    return lambda x: module(x)


def _compare(
    model: nn.Module, run: Callable[[Tensor], Tensor], example: Tensor, batch_sizes: tuple[int, ...]
) -> tuple[float, float, torch.dtype]:
    """Largest ``|run(x) - model(x)|``, largest ``|model(x)|`` and the dtype of ``model(x)``, over inputs of
    the given batch sizes."""
    error = scale = 0.0
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in batch_sizes:
            x = example if batch == example.shape[0] else torch.randn((batch, *example.shape[1:]), generator=generator)
            x = x.to(example.dtype)
            expected = model(x.clone())  # each run gets its own copy: a network may change its input in place
            got = run(x.clone()).to(expected.dtype)
            if got.shape != expected.shape:
                raise RuntimeError(
                    f"the exported network returned shape {tuple(got.shape)}, not {tuple(expected.shape)}"
                )
            error = max(error, (got - expected).abs().max().item())
            scale = max(scale, expected.abs().max().item())
    return error, scale, expected.dtype
