// Fused ECA kernels for CPU tensors: the whole forward and the whole backward, each one call.
// (The extension also holds the training node for CUDA tensors, triton_training.h.)
//
// Registered as torch.ops.ecanet.eca_forward / eca_backward / eca_mean and driven by
// ecanet/ops/cpu_kernels.py, which builds this file on first use; the entries eca_inference and
// eca_training (plain Python functions of the extension module, the second recording one C++
// autograd node) serve ECA.forward and ECA.residual without the dispatcher and without checks in
// Python. Every large tensor is
// (N, C, *) or (N, *, C) (channel_dim 1 or -1) with the same strides for all arguments, and is seen
// as (N, C, S) without a view: its memory is either channels-first (S contiguous) or channels-last
// (C contiguous) dense.
// Sums accumulate in float32 (float64 for float64 input); the (N, C) descriptor and gate are
// float32 (float64). Memory traffic is the minimum the math allows:
//   forward:  one read of x for the pooled mean; one pass act(x * gate + identity) -> out.
//   backward: one pass reading grad (and the ReLU output) and the tensor the gate multiplied,
//             summing their product per channel (and writing the masked gradient when the
//             shortcut needs it); one pass writing the input gradient grad * gate + d_mean / S.
//             In place the input is gone: x * gate is recovered as output - identity.
// The k-tap channel convolution, the gate non-linearity and their gradients run on the tiny
// (N, C) tensors in between, inside the same call.
//
// This file registers the operators and the entries. The build compiles three files, on as many
// threads as the machine has (the kernels' templates and torch's headers take most of the time):
//   eca_cpu.cpp       the registrations, with the entries in the headers it includes:
//     one_step_calls.h  eca_inference and pooled_projection, and the checks shared with eca_training;
//     fused_training.h  eca_training and its C++ autograd node;
//     triton_training.h the same node launching the compiled Triton kernels for CUDA tensors,
//     kernel_launch.h   through the CUDA driver, with no Python between the engine and the GPU;
//   operators.cpp     eca_mean, eca_forward and eca_backward (declared in operators.h), over
//     layout.h          the (N, C, S) view of the tensors and the threads a pass may use;
//     vectors.h         narrowing to the tensors' dtypes and the machine's vector instructions;
//     channel_reduce.h  sums over positions (the pooled mean, the backward's fused reduction);
//     rescale.h         the rescale pass act(x * gate + shift + identity);
//     channel_gate.h    the gate on the (N, C) descriptor and its gradient;
//   buffers.cpp       memory of its own for large outputs and gradients (fresh_like, buffers.h).

#include <torch/csrc/utils/pybind.h>  // casts tensors and optionals for the Python entries
#include <torch/library.h>

#include "buffers.h"
#include "fused_training.h"
#include "one_step_calls.h"
#include "operators.h"
#include "triton_training.h"

namespace ecanet {

TORCH_LIBRARY(ecanet, m) {
  m.def(
      "eca_forward(Tensor x, Tensor weight, Tensor? identity, bool relu, str padding, str gate, Tensor(a!) out,"
      " int channel_dim, Tensor? known_mean=None) -> (Tensor, Tensor)");
  m.def("eca_mean(Tensor x, int channel_dim) -> Tensor");
  m.def("fresh_like(Tensor x) -> Tensor");
  m.def(
      "eca_backward(Tensor grad, Tensor saved, Tensor? relu_out, Tensor mean, Tensor gate, Tensor weight,"
      " str padding, str gate_kind, bool inplace, Tensor? identity, Tensor(a!)? masked, Tensor(b!)? dx,"
      " int channel_dim) -> Tensor");
}

TORCH_LIBRARY_IMPL(ecanet, CPU, m) {
  m.impl("eca_mean", &eca_mean);
  m.impl("fresh_like", &fresh_like);
  m.impl("eca_forward", &eca_forward);
  m.impl("eca_backward", &eca_backward);
}

}  // namespace ecanet

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("eca_inference", &ecanet::eca_inference, "ECA or a block tail at inference, or None (see the C++ source)");
  m.def("eca_training", &ecanet::eca_training,
        "ECA or a block tail while autograd records, or None (see the C++ source)");
  m.def("pooled_projection", &ecanet::pooled_projection,
        "A bottleneck's ECA descriptor through its 1x1 convolution and BatchNorm, or None (see the C++ source)");
  ecanet::register_triton_training(m);
}
