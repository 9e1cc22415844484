"""The one-step C++ inference entry behind :func:`ecanet.ops.dispatch.eager_call` on CPU, against the float64 reference.

Covers its results over layouts, dtypes and options; in-place semantics; the float32 sigmoid's
accuracy and NaN handling; every case where it, and the training entry beside it
(``test_training_call.py``), must hand over to the checked path (returning ``None``); and its use
by :class:`~ecanet.layers.ECA` and the ECA-ResNets, whose errors still come from the checked path.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from ecanet import ECA
from ecanet.functional import eca, eca_residual
from ecanet.models import eca_resnet18, eca_resnet50
from ecanet.ops import cpu_kernels
from ecanet.ops.dispatch import eager_call
from handover_cases import Args, HandOver, PassThroughFunctionMode, PlainSubclass, dual, replace, within
from operator_log import OperatorLog
from reference import eca_reference, eca_residual_reference

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Relative to the largest reference value (at least 1), as in test_cpu_kernels.py.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


@dataclass(frozen=True)
class Layout:
    """An input geometry: logical shape, memory format, channel dim; ``transposed`` builds a token
    tensor ``(N, L, C)`` as the transpose of a contiguous ``(N, C, L)`` (channels-first memory)."""

    shape: tuple[int, ...]
    memory_format: torch.memory_format = torch.contiguous_format
    channel_dim: int = 1
    transposed: bool = False

    @property
    def channels(self) -> int:
        return self.shape[self.channel_dim]


LAYOUTS = {
    "1d": Layout((3, 6, 7)),
    "2d": Layout((2, 10, 4, 5)),
    "2d-channels-last": Layout((2, 20, 3, 5), torch.channels_last),
    "3d": Layout((2, 6, 3, 2, 4)),
    "3d-channels-last": Layout((2, 12, 3, 2, 2), torch.channels_last_3d),
    "tokens": Layout((3, 5, 24), channel_dim=-1),
    "tokens-2d": Layout((2, 3, 4, 8), channel_dim=-1),
    "tokens-channels-first-memory": Layout((3, 7, 10), channel_dim=-1, transposed=True),
    # Spatial size 1: both channels-first and channels-last dense, with either stride convention.
    "spatial-1": Layout((4, 64, 1, 1)),
    "spatial-1-channels-last": Layout((4, 64, 1, 1), torch.channels_last),
}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _input(layout: Layout, dtype: torch.dtype = torch.float32, seed: int = 0) -> Tensor:
    """Random values (drawn in float64, then rounded) in the layout's geometry."""
    if layout.transposed:
        n, length, c = layout.shape
        values = torch.randn(n, c, length, generator=_generator(seed), dtype=torch.float64)
        return values.to(dtype).transpose(1, 2)
    values = torch.randn(layout.shape, generator=_generator(seed), dtype=torch.float64)
    return values.to(dtype=dtype, memory_format=layout.memory_format)


def _like(x: Tensor, seed: int) -> Tensor:
    """Random values in ``x``'s dtype, shape and strides."""
    values = torch.randn(x.shape, generator=_generator(seed), dtype=torch.float64)
    return torch.empty_like(x).copy_(values)


def _weight(rows: int, k: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> Tensor:
    return torch.randn(rows, 1, k, generator=_generator(seed), dtype=torch.float64).to(dtype)


def _mean(x: Tensor, channel_dim: int) -> Tensor:
    """``x``'s per-channel mean ``(N, C)`` in float64."""
    x64 = x.double().movedim(channel_dim, 1)
    return x64.reshape(x64.shape[0], x64.shape[1], -1).mean(dim=2)


def _assert_close(actual: Tensor, expected: Tensor, tolerance: float, what: str = "output") -> None:
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(
        actual.double(), expected, rtol=tolerance, atol=tolerance * scale, msg=lambda message: f"{what}: {message}"
    )


def _infer(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None = None,
    descriptor: Tensor | None = None,
    activation: str = "none",
    inplace: bool = False,
    padding: str = "zeros",
    pooling: str = "avg",
    gate: str = "sigmoid",
    channel_dim: int = 1,
    channels: int | None = None,
) -> Tensor | None:
    """:func:`eager_call` with the common arguments defaulted."""
    return eager_call(
        x, weight, identity, descriptor, activation, inplace, padding, pooling, gate, channel_dim, channels
    )


GRAD_MODES: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def test_the_compiled_extension_is_built():
    assert cpu_kernels.available(), "the compiled CPU kernels did not build on this machine"
    assert cpu_kernels.entry("eca_inference") is not None
    assert cpu_kernels.entry("eca_training") is not None
    assert cpu_kernels.entry("pooled_projection") is not None


# ---------------------------------------------------------------------------------------------
# Results against the float64 reference.


@dataclass(frozen=True)
class Case:
    layout: str
    dtype: torch.dtype
    identity: bool
    relu: bool
    inplace: bool
    padding: str
    gate: str
    per_channel: bool
    k: int
    descriptor: str  # "none", "true" (x's own mean) or "given" (a different one, which must be used)
    grad_mode: str

    def id(self) -> str:
        flags = [
            self.layout,
            str(self.dtype).removeprefix("torch."),
            "identity" if self.identity else "no-identity",
            "relu" if self.relu else "none",
            "inplace" if self.inplace else "new",
            self.padding,
            self.gate,
            "per-channel" if self.per_channel else "shared",
            f"k{self.k}",
            f"descriptor-{self.descriptor}",
            self.grad_mode,
        ]
        return "-".join(flags)


OPTIONS = list(
    itertools.product(
        [False, True],  # identity
        [False, True],  # relu
        [False, True],  # inplace
        ["zeros", "circular"],
        ["sigmoid", "hard_sigmoid"],
        [False, True],  # per-channel weight
        ["none", "true", "given"],
    )
)


def _cases() -> list[Case]:
    """Every layout with every dtype (options rotating), and every combination of options (layout,
    dtype and grad mode rotating): all pairs meet without the full cartesian product."""
    shuffled = OPTIONS.copy()
    random.Random(0).shuffle(shuffled)
    ks = itertools.cycle([3, 5, 1, 7])
    grad_modes = itertools.cycle(GRAD_MODES)
    cases = [
        Case(layout, dtype, *options[:6], next(ks), options[6], next(grad_modes))
        for (layout, dtype), options in zip(itertools.product(LAYOUTS, DTYPES), itertools.cycle(shuffled), strict=False)
    ]
    layouts, dtypes = itertools.cycle(LAYOUTS), itertools.cycle(DTYPES[::-1])
    cases += [
        Case(next(layouts), next(dtypes), *options[:6], next(ks), options[6], next(grad_modes)) for options in OPTIONS
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id() for case in CASES])
def test_matches_the_float64_reference(case: Case):
    layout = LAYOUTS[case.layout]
    cdim = layout.channel_dim
    # Half inputs with a float32 weight (and descriptor), as the kernels compute the gate in float32.
    weight_dtype = torch.promote_types(case.dtype, torch.float32)
    weight = _weight(layout.channels if case.per_channel else 1, case.k, weight_dtype)
    with GRAD_MODES[case.grad_mode]():
        x = _input(layout, case.dtype)
        identity = _like(x, seed=5) if case.identity else None
        descriptor, reference_descriptor = None, None
        if case.descriptor == "true":
            descriptor = _mean(x, cdim).to(weight_dtype)
        elif case.descriptor == "given":
            n = x.shape[0]
            descriptor = 2 * torch.randn(n, layout.channels, generator=_generator(9), dtype=weight_dtype)
            reference_descriptor = descriptor
        expected = eca_residual_reference(
            x, weight, identity, case.relu, case.padding, case.gate, cdim, reference_descriptor
        )
        strides, pointer = x.stride(), x.data_ptr()
        out = _infer(
            x,
            weight,
            identity,
            descriptor,
            "relu" if case.relu else "none",
            case.inplace,
            case.padding,
            "avg",
            case.gate,
            cdim,
            layout.channels,
        )
    assert out is not None, "the one-step entry refused a supported call"
    assert out.shape == x.shape and out.dtype == case.dtype and out.stride() == strides
    assert (out is x) == case.inplace and (out.data_ptr() == pointer) == case.inplace
    _assert_close(out, expected, TOLERANCES[case.dtype])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_given_descriptor_replaces_the_mean(layout: str):
    # The descriptor may come in another dtype (float64 for float32 x) and as a strided view.
    geometry = LAYOUTS[layout]
    x = _input(geometry)
    n, c = x.shape[0], geometry.channels
    weight = _weight(1, 3)
    given = (3 * torch.randn(c, n, generator=_generator(4), dtype=torch.float64)).t()
    from_mean = eca_residual_reference(x, weight, channel_dim=geometry.channel_dim)
    from_given = eca_residual_reference(x, weight, channel_dim=geometry.channel_dim, descriptor=given)
    assert (from_mean - from_given).abs().max() > 0.1  # the two gates differ visibly
    with torch.no_grad():
        out = _infer(x, weight, descriptor=given, channel_dim=geometry.channel_dim, channels=c)
    assert out is not None
    _assert_close(out, from_given, TOLERANCES[torch.float32])


@pytest.mark.parametrize("grad_mode", list(GRAD_MODES))
@pytest.mark.parametrize("requiring_grad", ["x", "weight", "identity"])
def test_tensors_requiring_grad_are_fine_without_grad_mode(grad_mode: str, requiring_grad: str):
    x, weight = _input(LAYOUTS["2d"]), _weight(1, 3)
    identity = _like(x, seed=2)
    {"x": x, "weight": weight, "identity": identity}[requiring_grad].requires_grad_()
    expected = eca_residual_reference(x.detach(), weight.detach(), identity.detach(), relu=True)
    with GRAD_MODES[grad_mode]():
        out = _infer(x, weight, identity, activation="relu")
    assert out is not None and not out.requires_grad
    _assert_close(out, expected, TOLERANCES[torch.float32])


# ---------------------------------------------------------------------------------------------
# In-place semantics.


@pytest.mark.parametrize("identity", [False, True], ids=["no-identity", "identity"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_in_place_writes_into_x_and_bumps_its_version(layout: str, identity: bool):
    x = _input(LAYOUTS[layout])
    shortcut = _like(x, seed=3) if identity else None
    pointer, version, strides = x.data_ptr(), x._version, x.stride()
    expected = eca_residual_reference(x, _weight(1, 3), shortcut, relu=True, channel_dim=LAYOUTS[layout].channel_dim)
    with torch.no_grad():
        out = _infer(
            x, _weight(1, 3), shortcut, activation="relu", inplace=True, channel_dim=LAYOUTS[layout].channel_dim
        )
    assert out is x
    assert out.data_ptr() == pointer and out.stride() == strides
    assert x._version > version
    _assert_close(x, expected, TOLERANCES[torch.float32])


@pytest.mark.parametrize("identity", [False, True], ids=["no-identity", "identity"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_out_of_place_keeps_x_and_its_memory_format(layout: str, identity: bool):
    x = _input(LAYOUTS[layout])
    shortcut = _like(x, seed=3) if identity else None
    before, version = x.clone(), x._version
    with torch.no_grad():
        out = _infer(x, _weight(1, 3), shortcut, activation="relu", channel_dim=LAYOUTS[layout].channel_dim)
    assert out is not None and out is not x
    assert torch.equal(x, before) and x._version == version
    assert out.data_ptr() != x.data_ptr()
    assert out.shape == x.shape and out.dtype == x.dtype and out.stride() == x.stride()
    memory_format = LAYOUTS[layout].memory_format
    assert out.is_contiguous(memory_format=memory_format) == x.is_contiguous(memory_format=memory_format)


def test_in_place_write_is_seen_by_a_graph_that_saved_x():
    # The version bump makes autograd refuse a backward that would read the overwritten x.
    x = _input(LAYOUTS["2d"])
    scale = torch.ones(1, requires_grad=True)
    loss = (x * scale).sum()  # saves x for the gradient of scale
    with torch.no_grad():
        assert _infer(x, _weight(1, 3), inplace=True) is x
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---------------------------------------------------------------------------------------------
# The vectorised float32 sigmoid.

TINY = torch.finfo(torch.float32).tiny
LOGITS = torch.cat(
    [
        torch.linspace(-200, 200, 801, dtype=torch.float64),
        torch.tensor([-87.5, -87.34, -87.33, -87.2, -87.01, -87.0, -86.99, -86.5, -80.0, -50.0]),
        torch.tensor([86.99, 87.0, 87.01, 87.5, 88.0, 88.73, 89.0, 100.0, 1e-7, -1e-7, 0.0]),
        torch.tensor([1e4, -1e4, 1e30, -1e30]),
    ]
).float()  # 826 channels: a vector body and a remainder


def _sigmoid_call(source: str, channels_last: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A call whose output is the gate itself (``x = 1``) or ``logit * gate`` (``source="mean"``),
    with exactly representable logits ``LOGITS`` (the second sample negated); returns the output,
    its float64 expectation and the logit of every element."""
    c = LOGITS.numel()
    logits = torch.stack([LOGITS, -LOGITS])  # (2, C)
    x = torch.ones(2, c, 1, 2)
    weight, descriptor = torch.ones(1, 1, 1), None
    if source == "descriptor":
        descriptor = logits
    elif source == "weight":  # per-channel taps [0, logit, 0] on a mean of 1
        x = x[:1]
        weight = torch.zeros(c, 1, 3)
        weight[:, 0, 1] = LOGITS
        logits = logits[:1]
    else:  # the mean of two equal values is exact
        x = logits[:, :, None, None].expand(2, c, 1, 2).contiguous()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = _infer(x, weight, descriptor=descriptor)
    assert out is not None
    logits64 = logits.double()[:, :, None, None].expand(x.shape)
    return out, x.double() * torch.sigmoid(logits64), logits64


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels-first", "channels-last"])
@pytest.mark.parametrize("source", ["descriptor", "weight", "mean"])
def test_float32_sigmoid_is_accurate_and_flushes_tiny_gates_to_zero(source: str, channels_last: bool):
    out, expected, logit = _sigmoid_call(source, channels_last)
    # Relative to the largest value, and elementwise wherever the true gate is a normal float32
    # that the kernel computes (logits >= -87; below, the gate is documented to be flushed to 0).
    _assert_close(out, expected, 1e-6)
    computed = logit >= -87
    relative = (out.double() - expected).abs() / expected.abs().clamp(min=TINY)
    assert relative[computed].max() <= 1e-6, f"worst relative error {relative[computed].max().item():.3g}"
    # Never a denormal: every gate is 0 or a normal number, and 0 wherever the true gate is below
    # the smallest normal float32 (logit < log(tiny) = -87.34).
    assert bool(((out == 0) | (out.abs() >= TINY)).all()), "a denormal gate reached the output"
    assert bool((out[logit < -87.34] == 0).all())


NAN_CASES = [  # layout, NaN channel, padding, k, gate
    ("2d", 3, "zeros", 3, "sigmoid"),
    ("2d-channels-last", 0, "zeros", 3, "sigmoid"),
    ("2d", 0, "circular", 3, "sigmoid"),
    ("2d-channels-last", 7, "circular", 5, "sigmoid"),
    ("tokens", 4, "zeros", 5, "sigmoid"),
    # The hard sigmoid of a NaN logit is NaN too: in the reference, the plain operators (TorchScript)
    # and the ATen backend, so x * gate is NaN in the neighbouring channels, not 0.
    ("2d", 3, "zeros", 3, "hard_sigmoid"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("layout", "channel", "padding", "k", "gate"), NAN_CASES)
def test_nan_reaches_the_channels_whose_gate_reads_it(
    dtype: torch.dtype, layout: str, channel: int, padding: str, k: int, gate: str
):
    cdim = -1 if layout == "tokens" else 1
    shape = (3, 2, 3, 8) if layout == "tokens" else (3, 8, 2, 3)
    x = torch.randn(shape, generator=_generator(0), dtype=dtype)
    if layout == "2d-channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.movedim(cdim, 1)[0, channel, 1, 2] = float("nan")
    weight = _weight(1, k, dtype)
    expected = eca_residual_reference(x, weight, padding=padding, gate=gate, channel_dim=cdim)
    with torch.no_grad():
        out = _infer(x, weight, padding=padding, gate=gate, channel_dim=cdim)
    assert out is not None
    nan_channels = out.movedim(cdim, 1).isnan().flatten(2).any(dim=2)
    expected_channels = torch.zeros(3, 8, dtype=torch.bool)
    for offset in range(-(k // 2), k // 2 + 1):
        neighbour = channel + offset
        if 0 <= neighbour < 8 or padding == "circular":
            expected_channels[0, neighbour % 8] = True
    assert torch.equal(nan_channels, expected_channels), f"NaN channels {nan_channels.nonzero().tolist()}"
    assert torch.equal(out.isnan(), expected.isnan())
    torch.testing.assert_close(out.double(), expected, equal_nan=True, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Where the checked path must run: None.


def _base_args() -> Args:
    """A valid call (the entry returns a result for it), which each case changes in one respect."""
    x = torch.randn(2, 6, 4, 4, generator=_generator(0))
    return {
        "x": x,
        "weight": _weight(1, 3),
        "identity": None,
        "descriptor": None,
        "activation": "none",
        "inplace": True,
        "padding": "zeros",
        "pooling": "avg",
        "gate": "sigmoid",
        "channel_dim": 1,
        "channels": 6,
    }


def _randn(*shape: int, **kwargs) -> Tensor:
    return torch.randn(*shape, generator=_generator(6), **kwargs)


NONE_CASES: dict[str, HandOver] = {
    "in-place-into-a-leaf-requiring-grad": replace(x=lambda a: a["x"].requires_grad_()),
    "in-place-into-a-view": replace(x=lambda a: (_randn(2, 6, 4, 4).requires_grad_() * 1.0).view(2, 6, 4, 4)),
    "forward-ad-dual-x": dual("x"),
    "operator-log-dispatch-mode": within(OperatorLog),
    "torch-function-mode": within(PassThroughFunctionMode),
    "subclass-x": replace(x=lambda a: a["x"].as_subclass(PlainSubclass)),
    "subclass-weight": replace(weight=lambda a: a["weight"].as_subclass(PlainSubclass)),
    "subclass-identity": replace(identity=lambda a: torch.randn_like(a["x"]).as_subclass(PlainSubclass)),
    "subclass-descriptor": replace(descriptor=lambda a: torch.zeros(2, 6).as_subclass(PlainSubclass)),
    "strided-slice": replace(x=lambda a: _randn(2, 6, 4, 8)[:, :, ::2]),
    "channel-slice": replace(x=lambda a: _randn(2, 8, 4, 4)[:, :6]),
    "channel-slice-channels-last": replace(
        x=lambda a: _randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)[:, :6]
    ),
    "batch-slice": replace(x=lambda a: _randn(4, 6, 4, 4)[::2]),
    "broadcast-batch": replace(x=lambda a: _randn(1, 6, 4, 4).expand(2, 6, 4, 4)),
    "transposed-spatial": replace(x=lambda a: _randn(2, 6, 4, 4).transpose(2, 3)),
    "wrong-channels": replace(channels=5),
    "even-k": replace(weight=_randn(1, 1, 4)),
    "weight-rank-2": replace(weight=_randn(1, 3)),
    "weight-rank-4": replace(weight=_randn(1, 1, 1, 3)),
    "weight-rows": replace(weight=_randn(4, 1, 3)),
    "weight-middle-dim": replace(weight=_randn(1, 2, 3)),
    "weight-meta": replace(weight=_randn(1, 1, 3).to("meta")),
    "unknown-padding": replace(padding="reflect"),
    "unknown-gate": replace(gate="tanh"),
    "circular-k-over-channels": replace(x=_randn(2, 2, 4, 4), channels=2, weight=_randn(1, 1, 7), padding="circular"),
    "pooling-avgmax": replace(pooling="avgmax"),
    "activation-gelu": replace(activation="gelu"),
    "channel-dim-2": replace(channel_dim=2),
    "identity-shape": replace(identity=_randn(2, 6, 4, 3)),
    "identity-dtype": replace(identity=_randn(2, 6, 4, 4, dtype=torch.float64)),
    "identity-memory-format": replace(identity=_randn(2, 6, 4, 4).contiguous(memory_format=torch.channels_last)),
    "identity-meta": replace(identity=_randn(2, 6, 4, 4).to("meta")),
    "descriptor-shape": replace(descriptor=torch.zeros(2, 5)),
    "descriptor-rank": replace(descriptor=torch.zeros(2, 6, 1)),
    "descriptor-meta": replace(descriptor=torch.zeros(2, 6, device="meta")),
    "empty-batch": replace(x=torch.zeros(0, 6, 4, 4)),
    "empty-spatial": replace(x=torch.zeros(2, 6, 0)),
    "rank-2": replace(x=_randn(2, 6)),
    "integer-dtype": replace(x=torch.ones(2, 6, 4, 4, dtype=torch.int64)),
    "complex-dtype": replace(x=_randn(2, 6, 4, 4, dtype=torch.complex64)),
    "meta-x": replace(x=lambda a: a["x"].to("meta")),
    "sparse-x": replace(x=lambda a: a["x"].to_sparse()),
}


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_the_base_call_of_the_none_cases_gives_a_result(training: bool):
    args = _base_args()
    args["weight"].requires_grad_(training)
    with torch.enable_grad():
        out = eager_call(**args)
    assert out is not None and out.requires_grad == training


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("case", list(NONE_CASES))
def test_returns_none_where_the_checked_path_must_run(case: str, training: bool):
    # Training: the kernel requires grad, so that the training entry is the one asked.
    args = _base_args()
    context = NONE_CASES[case](args)
    if training and args["weight"].is_floating_point():
        args["weight"] = args["weight"].detach().requires_grad_()
    x = args["x"]
    plain = type(x) is torch.Tensor and x.layout == torch.strided and x.device.type == "cpu"
    before = x.detach().clone() if plain else None
    with torch.enable_grad(), context:
        assert eager_call(**args) is None
    if before is not None:  # in place was asked for: nothing may have been written
        assert torch.equal(x.detach(), before)


def test_tracing_records_the_plain_operators():
    weight = _weight(1, 3)
    results: list[tuple[bool, Tensor | None]] = []

    def layer(x: Tensor) -> Tensor:
        results.append((torch.jit.is_tracing(), _infer(x, weight)))
        return eca(x, weight)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, (torch.randn(2, 6, 5),), check_trace=False)
    assert results == [(True, None)]
    assert "aten::sigmoid" in str(traced.graph)
    fresh = torch.randn(2, 6, 5, generator=_generator(8))
    _assert_close(traced(fresh), eca_residual_reference(fresh, weight), TOLERANCES[torch.float32])


def test_vmap_sees_none_and_gets_the_plain_operators():
    weight = _weight(1, 3)
    results: list[Tensor | None] = []

    def layer(x: Tensor) -> Tensor:
        results.append(_infer(x, weight))
        return eca(x, weight)

    batch = torch.randn(4, 2, 6, 5, generator=_generator(3))
    out = torch.func.vmap(layer)(batch)
    assert results == [None]
    _assert_close(out, torch.stack([eca_residual_reference(x, weight) for x in batch]), TOLERANCES[torch.float32])


# ---------------------------------------------------------------------------------------------
# Through the module and the models.


def _profiled(call: Callable[[], Tensor]) -> tuple[Tensor, set[str]]:
    """``call()``'s result and the names of the operators the profiler saw it run."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = call()
    return out, {event.key for event in prof.key_averages()}


def test_module_inference_takes_the_one_step_entry():
    layer = ECA(16)
    x = torch.randn(2, 16, 5, 5, generator=_generator(0))
    with torch.no_grad():
        _, entry = _profiled(lambda: layer(x))
    _, fallback = _profiled(lambda: _checked(lambda: layer(x)))
    # The entry builds its output in C++ (aten::empty_like) and runs no ecanet or pooling operator.
    assert "aten::empty_like" in entry
    assert not {"ecanet::eca_forward", "ecanet::eca_mean", "aten::mean", "aten::sigmoid"} & entry, sorted(entry)
    assert "ecanet::eca_forward" in fallback, sorted(fallback)


def _checked(call: Callable[[], Tensor]) -> Tensor:
    """``call()`` under an operator-recording mode, which keeps the one-step entry out."""
    with OperatorLog() as log:
        out = call()
    assert log.arguments("ecanet.eca_forward.default"), "the checked path did not run the compiled kernel"
    return out


@pytest.mark.parametrize("activation", ["relu", "none"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_module_residual_matches_the_checked_path(activation: str, memory_format: torch.memory_format):
    layer = ECA(12)
    x = torch.randn(2, 12, 4, 4, generator=_generator(0)).contiguous(memory_format=memory_format)
    identity = _like(x, seed=1)
    expected = eca_residual_reference(x, layer.conv.weight.detach(), identity, relu=activation == "relu")
    with torch.no_grad():
        entry_x = x.clone()
        out, events = _profiled(lambda: layer.residual(entry_x, identity, activation))
        checked = _checked(lambda: layer.residual(x.clone(), identity, activation))
    assert "ecanet::eca_forward" not in events
    assert out is entry_x  # in place, the default of a block tail
    torch.testing.assert_close(out, checked, rtol=1e-6, atol=1e-6)
    _assert_close(out, expected, TOLERANCES[torch.float32])


@pytest.mark.parametrize("build", [eca_resnet18, eca_resnet50], ids=["eca_resnet18", "eca_resnet50"])
def test_model_inference_matches_the_checked_path(build: Callable[..., nn.Module]):
    torch.manual_seed(0)
    model = build(num_classes=10, small_input=True, width=8).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(2, 3, 16, 16, generator=_generator(1))
    with torch.no_grad():
        out, events = _profiled(lambda: model(images))
        checked = _checked(lambda: model(images))
    assert "ecanet::eca_forward" not in events
    torch.testing.assert_close(out, checked, rtol=1e-4, atol=1e-4 * checked.abs().max().item())


def test_module_avgmax_pooling_runs_the_checked_path_correctly():
    layer = ECA(6, pooling="avgmax")
    x = torch.randn(2, 6, 4, 4, generator=_generator(0))
    with torch.no_grad():
        out = layer(x)
    expected = eca_reference(x, layer.conv.weight.detach(), "zeros", "avgmax")
    _assert_close(out, expected, TOLERANCES[torch.float32])


def _with_weight(layer: ECA, weight: Tensor) -> ECA:
    layer.conv.weight = nn.Parameter(weight)
    return layer


def _with_attribute(layer: ECA, name: str, value: object) -> ECA:
    setattr(layer, name, value)
    return layer


def _x8() -> Tensor:
    return torch.randn(2, 8, 4, 4)


ERROR_CASES: dict[str, tuple[Callable[[], object], type[Exception], str]] = {
    "channel-mismatch": (
        lambda: ECA(8)(torch.randn(2, 6, 4, 4)),
        ValueError,
        "built for 8 channels but the input has 6",
    ),
    "even-kernel": (lambda: _with_weight(ECA(8), torch.randn(1, 1, 4))(_x8()), ValueError, "must be odd"),
    "weight-rows": (lambda: _with_weight(ECA(8), torch.randn(6, 1, 3))(_x8()), ValueError, "has 6 rows"),
    "integer-input": (lambda: ECA(8)(torch.ones(2, 8, 4, dtype=torch.int64)), TypeError, "floating-point"),
    "rank-2": (lambda: ECA(8)(torch.randn(2, 8)), ValueError, "at least one spatial"),
    "circular-wrap": (
        lambda: ECA(kernel_size=7, padding="circular")(torch.randn(2, 2, 4)),
        ValueError,
        "circular padding needs",
    ),
    "unknown-gate": (lambda: _with_attribute(ECA(8), "gate", "tanh")(_x8()), ValueError, "gate must be one of"),
    "residual-identity-shape": (lambda: ECA(8).residual(_x8(), torch.randn(2, 8, 4, 5)), ValueError, "identity shape"),
    "residual-activation": (lambda: ECA(8).residual(_x8(), _x8(), "gelu"), ValueError, "activation must be one of"),
    "residual-descriptor": (
        lambda: ECA(8).residual(_x8(), _x8(), descriptor=torch.zeros(2, 7)),
        ValueError,
        "descriptor must have shape",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_module_errors_reach_the_user(case: str):
    call, error, message = ERROR_CASES[case]
    with torch.no_grad(), pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("grad_mode", [contextlib.nullcontext, torch.no_grad], ids=["grad", "no-grad"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out-of-place", "in-place"])
def test_module_forward_mode_ad_carries_the_tangent(
    grad_mode: Callable[[], contextlib.AbstractContextManager], inplace: bool
):
    layer = ECA(8, inplace=inplace)
    weight = layer.conv.weight.detach().double()
    x, tangent = (torch.randn(2, 8, 3, 3, dtype=torch.float64, generator=_generator(seed)) for seed in (0, 1))
    with forward_ad.dual_level():
        expected = forward_ad.unpack_dual(eca_reference(forward_ad.make_dual(x, tangent), weight)).tangent
    layer.double()
    with grad_mode(), forward_ad.dual_level():
        dual = forward_ad.make_dual(x.clone(), tangent)
        got = forward_ad.unpack_dual(layer(dual)).tangent
    assert got is not None
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("residual", [False, True], ids=["layer", "residual"])
def test_in_place_on_an_inference_tensor_outside_inference_mode_raises_as_aten_does(residual: bool):
    with torch.inference_mode():
        x, identity = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    layer = ECA(8, inplace=True)
    with torch.no_grad(), pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
        layer.residual(x, identity) if residual else layer(x)
    with torch.inference_mode():  # inside inference mode the same call is fine
        expected = eca_residual_reference(
            x.clone(), layer.conv.weight.detach(), identity if residual else None, relu=residual
        )
        out = layer.residual(x, identity) if residual else layer(x)
    assert out is x
    _assert_close(out, expected, TOLERANCES[torch.float32])


@pytest.mark.parametrize("rows", ["shared", "per-channel"])
@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 11, 13])
def test_every_kernel_size_matches_the_reference(k: int, rows: str):
    # 1-9 shared kernels keep their taps in registers; the others go tap by tap.
    channels = 20
    x = torch.randn(3, channels, 4, 5, generator=_generator(k))
    weight = torch.randn(1 if rows == "shared" else channels, 1, k, generator=_generator(100 + k))
    for padding in ("zeros", "circular"):
        with torch.no_grad():
            out = eager_call(x, weight, None, None, "none", False, padding, "avg", "sigmoid", 1, channels)
        assert out is not None
        _assert_close(out, eca_residual_reference(x, weight, padding=padding), TOLERANCES[torch.float32])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("channels", [16, 2048], ids=["64-KiB-samples", "8-MiB-samples"])
def test_samples_on_both_sides_of_the_cache_budget_match_the_reference(channels: int, memory_format):
    # Samples up to the L2's size are pooled, gated and rescaled one by one, larger ones pass by
    # pass; no L2 is smaller than 64 KiB or as large as 8 MiB.
    x = torch.randn(3, channels, 32, 32, generator=_generator(channels)).contiguous(memory_format=memory_format)
    identity = _like(x, seed=1)
    weight = torch.randn(1, 1, 5, generator=_generator(2))
    expected = eca_residual_reference(x, weight, identity, relu=True)
    with torch.no_grad():
        out = eager_call(x, weight, identity, None, "relu", False, "zeros", "avg", "sigmoid", 1, channels)
        checked = _checked(lambda: eca_residual(x, weight, identity, inplace=False))
    assert out is not None
    _assert_close(out, expected, TOLERANCES[torch.float32])
    _assert_close(checked, expected, TOLERANCES[torch.float32])


def test_calls_of_changing_sizes_and_dtypes_share_their_threads_buffer_correctly():
    # An inference call's (N, C) mean and gates live in a buffer its thread keeps from call to call
    # (so the call frees no memory) up to 1 MiB, beyond in tensors of their own: calls needing more
    # room, less, more than the buffer holds, float64 instead of float32, and a new thread's first
    # call follow each other, each checked against the reference.
    calls = [((2, 8, 3, 3), torch.float32), ((64, 256, 2, 2), torch.float64), ((1, 4, 5, 5), torch.bfloat16)]
    calls += [((8, 2048, 2, 2), torch.float32), ((3, 16, 4, 4), torch.float64), ((65, 2048, 1, 2), torch.float32)]
    calls += [((64, 256, 2, 2), torch.float32)]
    weight = torch.randn(1, 1, 3, generator=_generator(7))
    failures: list[str] = []

    def run(seed: int) -> None:
        for index, (shape, dtype) in enumerate(calls[seed % 2 :] + calls[: seed % 2]):
            x = torch.randn(shape, generator=_generator(seed * 10 + index)).to(dtype)
            expected = eca_residual_reference(x, weight)  # before an in-place call overwrites x
            kernel = weight.to(torch.promote_types(dtype, torch.float32))
            inplace = index % 2 == 0
            with torch.no_grad():
                out = eager_call(x, kernel, None, None, "none", inplace, "zeros", "avg", "sigmoid", 1, shape[1])
            try:
                _assert_close(out, expected, TOLERANCES[dtype])
            except AssertionError as error:
                failures.append(f"thread {seed}, call {shape} {dtype}: {error}")

    run(0)
    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
