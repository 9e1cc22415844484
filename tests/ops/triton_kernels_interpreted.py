"""Checks of the Triton kernels in Triton's interpreter, run by ``test_triton_kernels.py`` in a fresh process.

Not collected by a plain ``pytest`` run (the name does not start with ``test_``): the interpreter
must be switched on before Triton is first imported, which this module does on its first line.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

from ecanet.ops import triton_kernels
from ecanet.ops.composed import ComposedKernels
from ecanet.ops.function import fused_eca_function
from reference import eca_reference

LAYOUTS = {
    "channels-first": ((2, 6, 3, 5), torch.contiguous_format, 1),
    "channels-last": ((2, 6, 3, 5), torch.channels_last, 1),
    "tokens": ((2, 7, 70), torch.contiguous_format, -1),
    "1d-long": ((1, 3, 300), torch.contiguous_format, 1),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("residual", "inplace"), [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_reference(layout, residual, inplace, dtype):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    x = torch.randn(shape, dtype=torch.float64).to(dtype=dtype, memory_format=memory_format)
    identity = torch.randn(shape, dtype=torch.float64).to(dtype=dtype, memory_format=memory_format)
    weight = torch.randn(1, 1, 3, dtype=torch.float64)
    grad = torch.randn(shape, dtype=torch.float64)

    x_ref = x.double().clone().requires_grad_()
    id_ref = identity.double().clone().requires_grad_()
    w_ref = weight.clone().requires_grad_()
    expected = eca_reference(x_ref, w_ref, channel_dim=channel_dim)
    if residual:
        expected = torch.clamp(expected + id_ref, min=0)
    expected.backward(grad)

    source = x.clone().requires_grad_()
    kernel = weight.to(dtype).requires_grad_()
    shortcut = identity.clone().requires_grad_() if residual else None
    out = fused_eca_function(
        source * 1.0,
        kernel,
        shortcut,
        residual,
        inplace,
        "zeros",
        "sigmoid",
        channel_dim,
        ComposedKernels(triton_kernels),
    )
    out.backward(grad.to(dtype))
    torch.testing.assert_close(out.double(), expected, **tolerance)
    torch.testing.assert_close(source.grad.double(), x_ref.grad, **tolerance)
    torch.testing.assert_close(kernel.grad.double(), w_ref.grad, rtol=tolerance["rtol"], atol=1e-4)
    if residual:
        torch.testing.assert_close(shortcut.grad.double(), id_ref.grad, **tolerance)


def test_sums_accumulate_half_precision_in_float32():
    # 4096 values of 1 + 2^-7: a bfloat16 running sum would stall far below the true total.
    x3 = torch.full((1, 2, 4096), 1.0 + 2.0**-7, dtype=torch.bfloat16)
    sums = triton_kernels.channel_sum(x3)
    assert sums.dtype == torch.float32
    torch.testing.assert_close(sums, torch.full((1, 2), 4096 * (1.0 + 2.0**-7)), rtol=1e-6, atol=0)
