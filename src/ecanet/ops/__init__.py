"""Fast paths behind :mod:`ecanet.functional`: one reduction pass, one rescale pass, fused backward.

:func:`ecanet.ops.dispatch.fast_eca` is the entry point, preceded by
:func:`ecanet.ops.dispatch.eager_call`, the same computation before any check in Python (on CPU
at inference one C++ call, on CUDA a call whose layout passed the checks before); both return
``None`` whenever the plain operators must run instead (TorchScript, tracing,
torch.compile/export, ONNX export, layouts or options the fast path does not cover), so callers
always have a correct fallback. The kernels come in interchangeable backends with one contract
(:class:`ecanet.ops.function.EcaKernels`): the compiled CPU kernels (:mod:`ecanet.ops.cpu_kernels`,
built on first use), :class:`ecanet.ops.composed.ComposedKernels` over ATen operators
(:mod:`ecanet.ops.aten_kernels`, CPU without a compiler, CUDA without Triton), and the Triton
kernels (:class:`ecanet.ops.triton_backend.TritonKernels`, CUDA), driven by the autograd Function
in :mod:`ecanet.ops.function`.
:func:`ecanet.ops.dispatch.eager_pooled_projection` serves ResNet bottlenecks at inference (ECA's
descriptor through their last 1x1 convolution and BatchNorm, see :mod:`ecanet.models.pooling`);
on CUDA at inference the Triton rescale also applies a block's last BatchNorm itself
(:mod:`ecanet.ops.frozen_norm`).
"""

from ecanet.ops.dispatch import eager_call, eager_pooled_projection, fast_eca, fast_mean

__all__ = ["eager_call", "eager_pooled_projection", "fast_eca", "fast_mean"]
