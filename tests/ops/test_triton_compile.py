"""The Triton kernels compile for NVIDIA GPUs, ahead of time, on a machine without one.

Triton's interpreter (``test_triton_kernels.py``) checks what the kernels compute, not that the
compiler accepts them: a loop-carried value that changes type, a shape that only broadcasts in
NumPy, an operation a dtype lacks on the GPU fail only when Triton lowers the kernel to PTX and
``ptxas`` assembles it. So each kernel is compiled here for Ampere (sm_80) and Hopper (sm_90) in
the specialisations the wrappers launch (every dtype, every kind of pass), through ``ptxas`` to a
cubin, with a fresh cache so that nothing is taken from an earlier compile.
"""

import pytest

triton = pytest.importorskip("triton", reason="Triton is an optional accelerator dependency")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ecanet.ops import projected_gate_jit, triton_jit  # noqa: E402

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
        {"K": 7, "BLOCK_N": 64, "BLOCK_O": 32, "BLOCK_I": 64},
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
