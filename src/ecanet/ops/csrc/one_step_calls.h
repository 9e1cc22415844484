// The inference entries called from Python without the dispatcher: ECA or a block tail at inference
// (eca_inference) and a bottleneck's pooled projection (pooled_projection), with the argument
// checks they share with the training entry (fused_training.h).
// Included by eca_cpu.cpp, which registers its entries.

#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>

#include "buffers.h"
#include "channel_gate.h"
#include "layout.h"
#include "operators.h"

namespace ecanet {
namespace {

// Whether t is an ordinary CPU tensor: no Python subclass, no functorch wrapper, no lazy negation.
bool plain_cpu(const at::Tensor& t) {
  static const c10::DispatchKeySet wrapped({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                            c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                            c10::DispatchKey::Functionalize});
  return t.device().is_cpu() && t.layout() == at::kStrided && !t.is_neg() && !t.key_set().has_any(wrapped);
}

bool kernel_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// What both one-step entries (eca_inference, eca_training) check alike: no operator-recording
// mode, tensors the kernels take (plain CPU tensors, a kernel dtype, x dense in one of the two
// layouts, the identity laid out like x), the channel count the caller was built for, and a valid
// kernel, options and descriptor shape. Returns x's layout and the gate's arguments, or nothing.
struct OneStepCall {
  Layout layout;
  GateArgs gate;
};

std::optional<OneStepCall> one_step_call(const at::Tensor& x, const at::Tensor& weight,
                                         const std::optional<at::Tensor>& identity,
                                         const std::optional<at::Tensor>& descriptor, const std::string& padding,
                                         const std::string& gate, int64_t channel_dim, int64_t channels) {
  if (c10::impl::TorchDispatchModeTLS::stack_len() > 0) return std::nullopt;
  if (x.dim() < 3 || (channel_dim != 1 && channel_dim != -1) || !plain_cpu(x) || !plain_cpu(weight) ||
      !kernel_dtype(x.scalar_type())) {
    return std::nullopt;
  }
  if (identity && (!plain_cpu(*identity) || identity->scalar_type() != x.scalar_type() ||
                   !same_geometry(*identity, x))) {
    return std::nullopt;
  }
  if (descriptor && !plain_cpu(*descriptor)) return std::nullopt;
  const std::optional<Layout> L = dense_layout(x, channel_dim);
  if (!L || (channels >= 0 && L->c != channels)) return std::nullopt;
  try {
    check_known_mean(descriptor, *L);
    return OneStepCall{*L, gate_args(weight, L->c, at::toOpMathType(x.scalar_type()), padding, gate)};
  } catch (const c10::Error&) {
    return std::nullopt;
  }
}

// ECA or a block tail at inference, straight from the N-D tensors: the Python layer's common case
// in one C++ step (ecanet/ops/dispatch.py, eager_call). Returns the result, or nothing
// wherever the checked Python path must run instead: a graph to record, an operator-recording
// mode, layouts or dtypes the kernels do not cover, and any invalid argument, whose error that
// path words (forward-mode AD, tracing and transforms are ruled out in Python beforehand).
// `channels` is the count the caller was built for, or -1.
std::optional<at::Tensor> eca_inference(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& identity,
                                        const std::optional<at::Tensor>& descriptor, bool relu, bool inplace,
                                        const std::string& padding, const std::string& gate, int64_t channel_dim,
                                        int64_t channels) {
  if (at::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || (identity && identity->requires_grad()))) {
    return std::nullopt;
  }
  // Writing into an inference tensor outside inference mode is an error ATen words.
  if (inplace && x.is_inference() && !c10::InferenceMode::is_enabled()) return std::nullopt;
  const std::optional<OneStepCall> call =
      one_step_call(x, weight, identity, descriptor, padding, gate, channel_dim, channels);
  if (!call) return std::nullopt;
  const at::Tensor out = inplace ? x : fresh_like(x);
  forward_on(x, call->layout, call->gate, identity ? &*identity : nullptr, relu, out,
             descriptor ? &*descriptor : nullptr, inference_descriptors(call->layout, x, !descriptor));
  return out;
}

// A bottleneck's pooled descriptor through its 1x1 convolution and eval-mode BatchNorm at
// inference, mean(bn(conv(z))) = bn(conv(mean(z))), in one C++ step (ecanet/models/pooling.py,
// pooled_through_projection): the pooling pass, then a few operations on (N, C) tensors that
// from Python would each cost more than the arithmetic. Returns (N, C_out) in the accumulation
// type, or nothing wherever the Python path must run (a graph to record, an operator-recording
// mode, layouts, dtypes or devices the kernels do not cover, parameters that do not fit).
std::optional<at::Tensor> pooled_projection(const at::Tensor& z, const at::Tensor& weight,
                                            const std::optional<at::Tensor>& bias, const at::Tensor& running_mean,
                                            const at::Tensor& running_var,
                                            const std::optional<at::Tensor>& norm_weight,
                                            const std::optional<at::Tensor>& norm_bias, double eps) {
  if (c10::impl::TorchDispatchModeTLS::stack_len() > 0 || z.dim() != 4 || !plain_cpu(z) ||
      !kernel_dtype(z.scalar_type())) {
    return std::nullopt;
  }
  const std::optional<Layout> L = dense_layout(z, 1);
  if (!L || weight.dim() != 4) return std::nullopt;
  const int64_t inputs = L->c, outputs = weight.size(0);
  const bool recording = at::GradMode::is_enabled();
  auto fits = [&](const at::Tensor& t, int64_t numel) {
    return plain_cpu(t) && t.numel() == numel && !(recording && t.requires_grad());
  };
  if (recording && z.requires_grad()) return std::nullopt;
  if (!fits(weight, outputs * inputs) || (bias && !fits(*bias, outputs)) || !fits(running_mean, outputs) ||
      !fits(running_var, outputs) || (norm_weight && !fits(*norm_weight, outputs)) ||
      (norm_bias && !fits(*norm_bias, outputs))) {
    return std::nullopt;
  }
  const at::ScalarType acc = at::toOpMathType(z.scalar_type());
  const at::Tensor pooled = eca_mean(z, 1);
  const at::Tensor matrix = weight.reshape({outputs, inputs}).to(acc).t();
  const at::Tensor projected = bias ? at::addmm(bias->to(acc), pooled, matrix) : at::mm(pooled, matrix);
  at::Tensor scale = running_var.to(acc).add(eps).rsqrt_();
  if (norm_weight) scale.mul_(norm_weight->to(acc));
  at::Tensor shift = running_mean.to(acc).mul(scale).neg_();
  if (norm_bias) shift.add_(norm_bias->to(acc));
  return projected.mul_(scale).add_(shift);
}

}  // namespace
}  // namespace ecanet
