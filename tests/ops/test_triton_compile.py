"""The Triton kernels compile for NVIDIA GPUs, ahead of time, on a machine without one.

Triton's interpreter (``test_triton_kernels.py``) checks what the kernels compute, not that the
compiler accepts them: a loop-carried value that changes type, a shape that only broadcasts in
NumPy, an operation a dtype lacks on the GPU fail only when Triton lowers the kernel to PTX and
``ptxas`` assembles it. So each kernel is compiled here for Ampere (sm_80) and Hopper (sm_90) in
the specialisations the wrappers launch (every dtype, every kind of pass), through ``ptxas`` to a
cubin, with a fresh cache so that nothing is taken from an earlier compile. The compiled-inference
operators' kernels are also compiled exactly as an H100 would get them from ECA-ResNet-50 at batch
64 (:func:`ecanet.bench.host.cuda_source`: each integer equal to 1 a constant, alignments known).
"""

import pytest

triton = pytest.importorskip("triton", reason="Triton is an optional accelerator dependency")

import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ecanet.bench.host import cuda_source  # noqa: E402
from ecanet.ops import projected_gate, projected_gate_jit, triton_jit, triton_kernels  # noqa: E402
from ecanet.ops.frozen_norm import FrozenNorm  # noqa: E402

ACCUMULATOR_POINTERS = {
    "partial_ptr",
    "a_ptr",
    "b_ptr",
    "side_out_ptr",
    "mean_ptr",
    "d_gate_ptr",
    "gate_ptr",
    "d_weight_ptr",
}
"""Pointers to ``(N, C)`` sums, means, gates and their gradients, and to partial kernel gradients:
float32, or float64 for float64 data."""

NORM_POINTERS = {"norm_mean_ptr", "norm_var_ptr", "norm_weight_ptr", "norm_bias_ptr"}
"""A BatchNorm's statistics and affine: float32 (its parameters' dtype under autocast)."""

SCALARS = {"sn": "i64", "sc": "i64", "ss": "i64", "scale": "fp32", "norm_eps": "fp32", "inv_positions": "fp32"}
"""Strides are 64-bit; the other integers (sizes, splits) 32-bit."""

_ACCUMULATE = {"fp32": "fp32", "bf16": "fp32", "fp16": "fp32", "fp64": "fp64"}

_TILE = {"BLOCK_C": 64, "BLOCK_S": 32}
_GATE_OPTIONS = {"K": 5, "PER_CHANNEL": False, "CIRCULAR": False, "GATE": 0}

CASES = {
    "pooling": ("channel_reduce_kernel", {"PRODUCT": False, "RELU": False, "SUBTRACT": False, **_TILE}),
    "gate-gradient sums, masked, in place": (
        "channel_reduce_kernel",
        {"PRODUCT": True, "RELU": True, "SUBTRACT": True, **_TILE},
    ),
    "rescale, block tail, gate kept": (
        "channel_affine_kernel",
        {
            "INPUT_GRADIENT": False,
            "STORE_GATES": True,
            "NORM": False,
            "INPLACE": False,
            **_GATE_OPTIONS,
            "HAS_IDENTITY": True,
            "RELU": True,
            "CHANNELS_INNER": True,
            **_TILE,
        },
    ),
    "rescale through a BatchNorm": (
        "channel_affine_kernel",
        {
            "INPUT_GRADIENT": False,
            "STORE_GATES": False,
            "NORM": True,
            "INPLACE": False,
            **_GATE_OPTIONS,
            "HAS_IDENTITY": True,
            "RELU": True,
            "CHANNELS_INNER": False,
            **_TILE,
        },
    ),
    "input gradient, per-channel kernel, hard sigmoid, in place": (
        "channel_affine_kernel",
        {
            "INPUT_GRADIENT": True,
            "STORE_GATES": False,
            "NORM": False,
            "INPLACE": True,
            "K": 3,
            "PER_CHANNEL": True,
            "CIRCULAR": True,
            "GATE": 1,
            "HAS_IDENTITY": False,
            "RELU": False,
            "CHANNELS_INNER": False,
            **_TILE,
        },
    ),
    "kernel gradient alone": (
        "weight_gradient_kernel",
        {**_GATE_OPTIONS, "INPLACE": False, "BLOCK_C": 256},
    ),
    "compiled inference: activation and its sums": ("norm_relu_sums_kernel", _TILE),
    "compiled inference: gate through the projection": (
        "projected_gate_kernel",
        {"K": 7, "BLOCK_N": 64, "BLOCK_O": 16, "BLOCK_I": 64},
    ),
}


def _signature(kernel, constants: dict, dtype: str) -> dict[str, str]:
    """Triton's type for each argument of ``kernel`` when its data tensors are ``dtype``."""
    signature = {}
    for param in kernel.params:
        name = param.name
        if param.is_constexpr:
            signature[name] = "constexpr"
        elif name in SCALARS:
            signature[name] = SCALARS[name]
        elif name in NORM_POINTERS:
            signature[name] = "*fp32"
        elif name in ACCUMULATOR_POINTERS:
            signature[name] = "*" + _ACCUMULATE[dtype]
        elif name.endswith("_ptr"):
            signature[name] = "*" + dtype
        else:
            signature[name] = "i32"
    assert set(constants) == {name for name, kind in signature.items() if kind == "constexpr"}, constants
    return signature


@pytest.fixture(autouse=True)
def _fresh_triton_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_compiles_for_the_gpu(case, dtype, capability, tmp_path):
    name, constants = CASES[case]
    kernel = getattr(projected_gate_jit if hasattr(projected_gate_jit, name) else triton_jit, name)
    assert isinstance(kernel, triton.runtime.JITFunction), "imported under TRITON_INTERPRET=1"
    source = ASTSource(fn=kernel, signature=_signature(kernel, constants, dtype), constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32))
    assert f".target sm_{capability}" in compiled.asm["ptx"]
    assert len(compiled.asm["cubin"]) > 0
    assert any(tmp_path.iterdir())  # compiled now, into this test's own cache


class _RecordedLaunches:
    """Stands in for :mod:`ecanet.ops.projected_gate`'s launchers: keeps each launch's arguments
    (as the wrappers pass them, then the planned scalars) and constexprs, and launches nothing."""

    def __init__(self) -> None:
        self.launches: dict[str, tuple[tuple, dict]] = {}

    def __call__(self, name: str):
        recorded = self

        class Planner:
            @staticmethod
            def plan(programs, scalars, constexprs):
                def launch(*args):
                    recorded.launches[name] = ((*args, *scalars), constexprs)

                return launch

        return Planner


_RESNET50_BRANCHES = {"layer1": (64, 56, 3), "layer2": (128, 28, 5), "layer3": (256, 14, 5), "layer4": (512, 7, 7)}
"""Each stage's 3x3 branch of ECA-ResNet-50 at 224 px: width, size of the map, and the released
checkpoints' kernel size."""


@pytest.mark.parametrize("stage", list(_RESNET50_BRANCHES))
@pytest.mark.parametrize(
    ("memory_format", "dtype"),
    [
        (torch.contiguous_format, torch.float32),
        (torch.channels_last, torch.float32),
        (torch.channels_last, torch.bfloat16),
    ],
)
def test_compiled_inference_kernels_compile_as_an_h100_launches_them(stage, memory_format, dtype, monkeypatch):
    # The specialisations ECA-ResNet-50 at batch 64 launches on an H100 (132 SMs): the wrappers'
    # own arguments and plans, each integer equal to 1 a constant, the 16-byte alignments as a GPU sees them.
    width, size, k = _RESNET50_BRANCHES[stage]
    recorded = _RecordedLaunches()
    monkeypatch.setattr(projected_gate, "_launcher", recorded)
    monkeypatch.setattr(
        projected_gate,
        "reduction_plan",
        lambda shape, device: triton_kernels._reduction_plan(shape, triton_kernels.gpu_split_policy(132)),
    )
    projected_gate._sums_launch.cache_clear()
    projected_gate._gate_launch.cache_clear()
    try:
        y = torch.empty(64, width, size, size, dtype=dtype).to(memory_format=memory_format)
        norm = FrozenNorm(*(torch.empty(width, dtype=dtype) for _ in range(4)), 1e-5)
        _, partial = projected_gate.norm_relu_sums_in_triton(y, norm)
        conv_weight = torch.empty(4 * width, width, 1, 1, dtype=dtype).to(memory_format=memory_format)
        norm3 = FrozenNorm(*(torch.empty(4 * width, dtype=dtype) for _ in range(4)), 1e-5)
        projected_gate.projected_gate_in_triton(
            partial, size * size, conv_weight, torch.empty(1, 1, k, dtype=dtype), norm3
        )
    finally:
        projected_gate._sums_launch.cache_clear()
        projected_gate._gate_launch.cache_clear()
    assert set(recorded.launches) == {"norm_relu_sums_kernel", "projected_gate_kernel"}
    for name, (args, constexprs) in recorded.launches.items():
        source = cuda_source(getattr(projected_gate_jit, name), args, constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        assert len(compiled.asm["cubin"]) > 0 and ".local" not in compiled.asm["ptx"], name  # nothing spilled
