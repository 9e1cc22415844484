"""Fast paths behind :mod:`ecanet.functional`: one reduction pass, one rescale pass, fused backward.

:func:`ecanet.ops.dispatch.fast_eca` is the entry point; it returns ``None`` whenever the plain
operators must run instead (TorchScript, tracing, torch.compile/export, ONNX export, layouts or
options the fast path does not cover), so callers always have a correct fallback. The kernels come
in two interchangeable backends with the same four functions (:mod:`ecanet.ops.aten_kernels` for
CPU and CUDA, :mod:`ecanet.ops.triton_kernels` for CUDA tensors when Triton is installed), driven by
:mod:`ecanet.ops.function`.
"""

from ecanet.ops.dispatch import fast_eca

__all__ = ["fast_eca"]
