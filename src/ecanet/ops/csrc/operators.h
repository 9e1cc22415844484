// The registered operators, eca_mean, eca_forward (pool, gate and rescale in one call) and
// eca_backward (the fused reduction, the gate's gradient and the input gradient in one call), and
// the parts of a forward the one-step entries call on arguments they have checked themselves.
// Defined in operators.cpp.

#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <tuple>

#include "channel_gate.h"
#include "layout.h"

namespace ecanet {

// The per-channel mean of x over S, (N, C) in the accumulation dtype.
at::Tensor eca_mean(const at::Tensor& x, int64_t channel_dim);

// act(x * gate + identity) into out, x's descriptor pooled (or the known mean) and gated by the
// k-tap convolution; returns the mean and the gates, (N, C) in the accumulation dtype.
std::tuple<at::Tensor, at::Tensor> eca_forward(const at::Tensor& x, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& identity, bool relu,
                                               const std::string& padding, const std::string& gate,
                                               const at::Tensor& out, int64_t channel_dim,
                                               const std::optional<at::Tensor>& known_mean);

// The kernel's gradient, and the gradients of x (into dx) and of the shortcut (into masked, the
// ReLU-masked output gradient) where given; after an in-place forward, saved is the output and
// x * gate is recovered as saved - identity.
at::Tensor eca_backward(const at::Tensor& grad_tensor, const at::Tensor& saved_tensor,
                        const std::optional<at::Tensor>& relu_out_tensor, const at::Tensor& mean,
                        const at::Tensor& gates, const at::Tensor& weight, const std::string& padding,
                        const std::string& gate, bool inplace, const std::optional<at::Tensor>& identity_tensor,
                        const std::optional<at::Tensor>& masked_tensor, const std::optional<at::Tensor>& dx_tensor,
                        int64_t channel_dim);

// The (N, C) mean and gates a forward fills, contiguous, in the accumulation type (no mean where the
// forward is given one).
struct Descriptors {
  at::Tensor mean, gates;
};

// New descriptors, for a forward whose mean and gates a backward keeps.
Descriptors new_descriptors(const Layout& L, const at::Tensor& x, bool with_mean);

// Descriptors for an inference call, which nothing keeps after it: views of a buffer the calling
// thread keeps from call to call, so that the call frees no memory (see operators.cpp).
Descriptors inference_descriptors(const Layout& L, const at::Tensor& x, bool with_mean);

// The forward on validated arguments: x and out (and identity) share the geometry L. Fills
// `into` (its mean only where none is known) and returns the mean and gates it used.
std::tuple<at::Tensor, at::Tensor> forward_on(const at::Tensor& x, const Layout& L, const GateArgs& args,
                                              const at::Tensor* identity_tensor, bool relu, const at::Tensor& out_tensor,
                                              const at::Tensor* known_mean, const Descriptors& into);

// Raises unless a given mean has the shape (N, C) of the layout L.
void check_known_mean(const std::optional<at::Tensor>& known_mean, const Layout& L);

}  // namespace ecanet
