// Training calls in one C++ step: ECA or a block tail recorded as one C++ autograd node (eca_training).
// Included by eca_cpu.cpp, which registers its entries.

#pragma once

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/utils/pybind.h>

#include "buffers.h"
#include "one_step_calls.h"
#include "operators.h"

namespace ecanet {
namespace {

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// Where the fused backward runs with create_graph=True (the gradients are differentiated again).
//
// x was kept: ecanet.ops.function.differentiable_gradients computes the gradients again in plain
// operators that autograd records; the Python Function answers with it too, so both share it.
torch::autograd::variable_list differentiable_gradients(const at::Tensor& grad, const at::Tensor& x,
                                                         const at::Tensor& relu_out, const at::Tensor& weight,
                                                         torch::autograd::AutogradContext* ctx, bool needs_identity) {
  pybind11::gil_scoped_acquire gil;
  const pybind11::object relu = relu_out.defined() ? pybind11::cast(relu_out) : pybind11::object(pybind11::none());
  const pybind11::object gradients = pybind11::module_::import("ecanet.ops.function")
                                         .attr("differentiable_gradients")(
                                             grad, x, relu, weight, ctx->saved_data["padding"].toStringRef(),
                                             ctx->saved_data["gate"].toStringRef(),
                                             ctx->saved_data["channel_dim"].toInt(),
                                             pybind11::make_tuple(ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                                                  needs_identity));
  torch::autograd::variable_list results(10);  // one per argument of forward; the rest stay undefined
  for (size_t i = 0; i < 3; ++i) {
    const pybind11::object gradient = gradients[pybind11::int_(i)];
    if (!gradient.is_none()) results[i] = gradient.cast<at::Tensor>();
  }
  return results;
}

// x was overwritten in place: the first gradients come back as aliases whose derivative raises,
// tied by `connection` (the saved output, whose history runs through this node to x) to the graph,
// so that a second derivative through here meets the error instead of skipping a node tied to
// nothing (torch.autograd.grad(..., allow_unused=True) would return None).
torch::autograd::variable_list refuse_second_derivative(torch::autograd::variable_list results,
                                                        const at::Tensor& connection) {
  for (at::Tensor& result : results) {
    if (result.defined()) result = result.detach().requires_grad_(true);
  }
  results.push_back(connection);
  pybind11::gil_scoped_acquire gil;
  const std::string message =
      pybind11::module_::import("ecanet.ops.function").attr("SECOND_DERIVATIVE_REFUSED").cast<std::string>();
  torch::autograd::DelayedError error(message, static_cast<int64_t>(results.size()));
  torch::autograd::variable_list aliases = error.apply(std::move(results));
  aliases.pop_back();
  return aliases;
}

// ECA or a block tail recorded for autograd as one C++ node around a backend's forward and
// backward: the compiled CPU kernels (CpuKernels, below) or the Triton kernels launched from C++
// (triton_training.h). It saves and returns what the Python autograd Function of
// ecanet/ops/function.py does for the other backends, without Python between the engine and the
// kernels: on small tensors that Function's machinery and the checked path cost several times the
// kernels' own work (on a GPU, the host's time per call is what ECA costs).
//
// Kernels provides: empty_like(t), a new tensor laid out like t; takes_gradient(grad, like),
// whether the backward can read an output gradient as it is (else it is copied into empty_like);
// forward(x, weight, identity, relu, out) -> (mean, gates); save(ctx), what its backward needs;
// and backward(ctx, grad, like, relu_out, mean, gates, weight, inplace, identity, masked, dx) ->
// the kernel's gradient, with the arguments of eca_backward.
template <typename Kernels>
struct FusedTraining : public torch::autograd::Function<FusedTraining<Kernels>> {
  // Bits of the saved "flags".
  static constexpr int64_t kRelu = 1, kInplace = 2, kIdentity = 4;

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& identity, bool relu, bool inplace,
                            const std::string& padding, const std::string& gate, int64_t channel_dim,
                            const Kernels& kernels) {
    const at::Tensor out = inplace ? x : Kernels::empty_like(x);
    const auto [mean, gates] = kernels.forward(x, weight, identity ? &*identity : nullptr, relu, out);
    if (inplace) ctx->mark_dirty({x});
    // In place, x itself is gone; the output stands in for it (see eca_backward's `inplace`).
    const at::Tensor none;
    ctx->save_for_backward({inplace ? none : x, relu || inplace ? out : none, mean, gates, weight,
                            inplace && identity ? *identity : none});
    ctx->saved_data["flags"] = (relu ? kRelu : 0) | (inplace ? kInplace : 0) | (identity ? kIdentity : 0);
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["gate"] = gate;
    ctx->saved_data["channel_dim"] = channel_dim;
    kernels.save(ctx);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const int64_t flags = ctx->saved_data["flags"].toInt();
    const bool relu = flags & kRelu, inplace = flags & kInplace;
    const bool needs_x = ctx->needs_input_grad(0), needs_weight = ctx->needs_input_grad(1);
    const bool needs_identity = (flags & kIdentity) && ctx->needs_input_grad(2);
    const bool recorded = at::GradMode::is_enabled();  // create_graph=True
    if (recorded && saved[0].defined()) {
      return differentiable_gradients(grads[0], saved[0], relu ? saved[1] : at::Tensor(), saved[4], ctx,
                                      needs_identity);
    }
    torch::autograd::variable_list results(10);  // one per argument of forward; the rest stay undefined
    {
      const at::NoGradGuard no_grad;
      const at::Tensor& like = saved[0].defined() ? saved[0] : saved[1];
      const at::Tensor grad =
          Kernels::takes_gradient(grads[0], like) ? grads[0] : Kernels::empty_like(like).copy_(grads[0]);
      // The shortcut's gradient is the ReLU-masked output gradient: stored only when wanted.
      const at::Tensor masked = relu && needs_identity ? Kernels::empty_like(like) : at::Tensor();
      const at::Tensor dx = needs_x ? Kernels::empty_like(like) : at::Tensor();
      const at::Tensor d_weight =
          Kernels::backward(ctx, grad, like, relu ? defined_or_none(saved[1]) : std::nullopt, saved[2], saved[3],
                            saved[4], inplace, defined_or_none(saved[5]), defined_or_none(masked), defined_or_none(dx));
      results[0] = dx;
      if (needs_weight) results[1] = d_weight;
      if (needs_identity) results[2] = relu ? masked : grad;
    }
    return recorded ? refuse_second_derivative(std::move(results), saved[1]) : results;
  }
};

// The compiled CPU kernels (operators.cpp) as FusedTraining runs them, for arguments checked by
// one_step_call.
struct CpuKernels {
  Layout layout;
  GateArgs gate;

  static at::Tensor empty_like(const at::Tensor& t) { return fresh_like(t); }

  static bool takes_gradient(const at::Tensor& grad, const at::Tensor& like) { return same_geometry(grad, like); }

  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* identity,
                                             bool relu, const at::Tensor& out) const {
    return forward_on(x, layout, gate, identity, relu, out, nullptr, new_descriptors(layout, x, true));
  }

  void save(torch::autograd::AutogradContext* ctx) const {}

  static at::Tensor backward(torch::autograd::AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& like,
                             const std::optional<at::Tensor>& relu_out, const at::Tensor& mean, const at::Tensor& gates,
                             const at::Tensor& weight, bool inplace, const std::optional<at::Tensor>& identity,
                             const std::optional<at::Tensor>& masked, const std::optional<at::Tensor>& dx) {
    return eca_backward(grad, like, relu_out, mean, gates, weight, ctx->saved_data["padding"].toStringRef(),
                        ctx->saved_data["gate"].toStringRef(), inplace, identity, masked, dx,
                        ctx->saved_data["channel_dim"].toInt());
  }
};

// Whether a training call writes its result into x, as ecanet.ops.function.fused_eca_function
// decides it, or nothing where a write into x needs autograd's own checks (x a leaf that requires
// grad, or a view): the checked path raises there. A block tail writes into x only when x's memory
// is its own (not the shortcut's) and x is float32 or float64, else into a new tensor.
std::optional<bool> writes_in_place(const at::Tensor& x, const std::optional<at::Tensor>& identity, bool inplace) {
  if (!inplace) return false;
  const bool leaf_with_grad = x.is_leaf() && x.requires_grad();
  if (identity) {
    // Half types keep x: output - identity, rounded at the shortcut's scale, would lose x * gate.
    const bool half = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
    return !(half || leaf_with_grad || x.is_view() || identity->storage().data() == x.storage().data());
  }
  if (leaf_with_grad || x.is_view()) return std::nullopt;
  return true;
}

// ECA or a block tail while autograd records, straight from the N-D tensors: the Python layer's
// common training call in one C++ step (ecanet/ops/dispatch.py, eager_call), recorded as one
// FusedTraining node. Returns the result, or nothing wherever the checked Python path must run
// instead: as for eca_inference, and where a write into x needs autograd's own checks (x a leaf,
// a view or an inference tensor). As that path does, a block tail writes into x only when x's
// memory is its own (not the shortcut's) and x is float32 or float64, else into a new tensor,
// and a descriptor of the right shape is not used (the backward needs the pooling of x itself).
std::optional<at::Tensor> eca_training(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& identity,
                                       const std::optional<at::Tensor>& descriptor, bool relu, bool inplace,
                                       const std::string& padding, const std::string& gate, int64_t channel_dim,
                                       int64_t channels) {
  if (!at::GradMode::is_enabled() ||
      !(x.requires_grad() || weight.requires_grad() || (identity && identity->requires_grad()))) {
    return std::nullopt;
  }
  if (x.is_inference() || (identity && identity->is_inference())) return std::nullopt;  // autograd words these
  const std::optional<bool> in_place = writes_in_place(x, identity, inplace);
  if (!in_place) return std::nullopt;
  // A descriptor of the right shape is not needed: the pooling runs anyway.
  const std::optional<OneStepCall> call =
      one_step_call(x, weight, identity, descriptor, padding, gate, channel_dim, channels);
  if (!call) return std::nullopt;
  return FusedTraining<CpuKernels>::apply(x, weight, identity, relu, *in_place, padding, gate, channel_dim,
                                         CpuKernels{call->layout, call->gate});
}

}  // namespace
}  // namespace ecanet
