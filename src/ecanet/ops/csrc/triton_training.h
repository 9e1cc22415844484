// Training calls on CUDA tensors as one C++ autograd node that launches the compiled Triton kernels
// itself (TritonTraining). Included by eca_cpu.cpp, which registers the classes
// (register_triton_training); built from Python by ecanet/ops/triton_training.py.
//
// On a GPU an eager training call costs what the host needs to issue it. The Python autograd
// Function and ecanet's Python around the four launches of a training step (pooling and rescale,
// the backward's reduction and input gradient) cost more host time per ResNet-50 bottleneck than
// the GPU's work in bfloat16 (docs/performance.md). Here the launches planned for a prepared
// call's geometry (ecanet/ops/triton_kernels.py: TrainingPlans), their kernels compiled by
// Triton on the call's first steps, run from FusedTraining's forward and backward with no Python
// between the engine and the driver. Each launch does what its Python plan does with the same
// tensors; this file mirrors ForwardPlan, BackwardPlan and _Reduction there.

#pragma once

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/OpMathType.h>
#include <ATen/core/ivalue.h>

#include "fused_training.h"
#include "kernel_launch.h"

namespace ecanet {
namespace {

// Triton specialises a launch on whether each address is a multiple of 16; the planned launches'
// kernels were compiled for aligned addresses (as ecanet.ops.triton_launch.BoundLaunch takes them).
bool aligned(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// A channel reduction planned for a geometry (_Reduction): sums over positions of x, of the
// ReLU-masked x * other, or of x * (other - subtrahend), as its kernel was compiled, into (N, C),
// or (N, splits, C) partial sums added up after; then divided by `divisor` (float64 means), if any.
struct ChannelReduction {
  KernelLaunch launch;
  std::vector<int64_t> partial_shape;
  int64_t divisor;

  at::Tensor operator()(const at::Tensor& x, const at::Tensor& other, const at::Tensor& relu_out,
                        const at::Tensor& masked, const at::Tensor& subtrahend) const {
    const at::Tensor partial = at::empty(partial_shape, x.options().dtype(at::toOpMathType(x.scalar_type())));
    launch.run({&x, &other, &relu_out, &masked, &subtrahend, &partial});
    at::Tensor sums = partial_shape.size() == 2 ? partial : partial.sum(1);
    return divisor ? sums.div_(divisor) : sums;
  }
};

// A backward planned for a geometry (BackwardPlan): the fused reduction, then the input gradient
// with the gate's backward inside it, whose first tiles write rows of the kernel's gradient.
struct TritonBackward {
  ChannelReduction reduction;
  KernelLaunch input_gradient;
  std::vector<int64_t> rows_shape;  // (rows, *weight.shape)
};

// The launches of a prepared call's training steps: its forward (ForwardPlan, the gates kept) and
// its backward when the output overwrote the input and when not, each where its kernels are
// compiled. A call needing a backward not given takes the Python path.
struct TritonTraining : torch::CustomClassHolder {
  ChannelReduction pool;
  KernelLaunch rescale;
  std::optional<TritonBackward> backward, backward_in_place;
  bool relu;
  std::string padding, gate;
  int64_t channel_dim;

  TritonTraining(ChannelReduction pool, KernelLaunch rescale, std::optional<TritonBackward> backward,
                 std::optional<TritonBackward> backward_in_place, bool relu, std::string padding, std::string gate,
                 int64_t channel_dim)
      : pool(std::move(pool)),
        rescale(std::move(rescale)),
        backward(std::move(backward)),
        backward_in_place(std::move(backward_in_place)),
        relu(relu),
        padding(std::move(padding)),
        gate(std::move(gate)),
        channel_dim(channel_dim) {}

  // ECA or a block tail recorded as one FusedTraining node, on arguments whose shapes, strides,
  // dtypes and devices the plans were made for and with a graph to record (the caller,
  // ecanet.ops.prepared_calls.run, checked both); `inplace` as the layer asks it, after
  // ecanet.ops.second_derivatives. Nothing where the Python path must run: inference tensors and
  // writes into x that need autograd's checks (their errors are that path's), a backward not
  // planned, an address Triton would specialise differently.
  std::optional<at::Tensor> operator()(const at::Tensor& x, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& identity, bool inplace);
};

// TritonTraining's launches as FusedTraining runs them.
struct TritonLaunches {
  c10::intrusive_ptr<TritonTraining> plans;

  static at::Tensor empty_like(const at::Tensor& t) { return at::empty_like(t); }

  static bool takes_gradient(const at::Tensor& grad, const at::Tensor& like) {
    return same_geometry(grad, like) && aligned(grad);
  }

  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* identity,
                                             bool relu, const at::Tensor& out) const {
    const at::Tensor mean = plans->pool(x, x, x, x, x);
    const at::Tensor gates = at::empty_like(mean);
    const at::Tensor& shortcut = identity ? *identity : x;
    // The gate is worked out from the means inside the rescale; the last four are the norm's (none).
    plans->rescale.run({&x, &mean, &mean, &shortcut, &out, &weight, &gates, &mean, &mean, &mean, &mean, &mean});
    return {mean, gates};
  }

  void save(torch::autograd::AutogradContext* ctx) const {
    ctx->saved_data["plans"] = c10::IValue::make_capsule(plans);
  }

  static at::Tensor backward(torch::autograd::AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& like,
                             const std::optional<at::Tensor>& relu_out, const at::Tensor& mean, const at::Tensor& gates,
                             const at::Tensor& weight, bool inplace, const std::optional<at::Tensor>& identity,
                             const std::optional<at::Tensor>& masked, const std::optional<at::Tensor>& dx) {
    const auto* plans = static_cast<const TritonTraining*>(ctx->saved_data["plans"].toCapsule().get());
    const TritonBackward& plan = *(inplace ? plans->backward_in_place : plans->backward);
    // The input gradient reads the ReLU-masked gradient: stored even where the shortcut needs none.
    const at::Tensor masked_grad = relu_out ? (masked ? *masked : at::empty_like(grad)) : grad;
    const at::Tensor sums =
        plan.reduction(grad, like, relu_out ? *relu_out : grad, masked_grad, identity ? *identity : grad);
    if (!dx || dx->numel() == 0) {  // no input gradient to write: the kernel's gradient alone, in Python
      pybind11::gil_scoped_acquire gil;
      return pybind11::module_::import("ecanet.ops.triton_kernels")
          .attr("weight_gradient")(sums, gates, mean, weight, plans->padding, plans->gate, inplace)
          .cast<at::Tensor>();
    }
    const at::Tensor rows = at::empty(plan.rows_shape, mean.options());
    plan.input_gradient.run(
        {&masked_grad, &gates, &sums, &masked_grad, &*dx, &weight, &rows, &mean, &gates, &gates, &gates, &gates});
    const at::Tensor d_weight = rows.sum(0);
    return d_weight.scalar_type() == weight.scalar_type() ? d_weight : d_weight.to(weight.scalar_type());
  }
};

std::optional<at::Tensor> TritonTraining::operator()(const at::Tensor& x, const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& identity, bool inplace) {
  if (x.is_inference() || (identity && identity->is_inference())) return std::nullopt;  // autograd words these
  const std::optional<bool> in_place = writes_in_place(x, identity, inplace);
  if (!in_place || !(*in_place ? backward_in_place : backward)) return std::nullopt;
  if (!aligned(x) || !weight.is_contiguous() || !aligned(weight) || (identity && !aligned(*identity))) {
    return std::nullopt;
  }
  return FusedTraining<TritonLaunches>::apply(x, weight, identity, relu, *in_place, padding, gate, channel_dim,
                                              TritonLaunches{c10::intrusive_ptr<TritonTraining>::reclaim_copy(this)});
}

}  // namespace

// The classes ecanet/ops/triton_training.py builds a TritonTraining from, and launch_through.
void register_triton_training(pybind11::module_& m) {
  namespace py = pybind11;
  py::class_<KernelLaunch>(m, "KernelLaunch", "One compiled Triton kernel's launch (see kernel_launch.h)")
      .def(py::init<uint64_t, int64_t, int64_t, int64_t, const std::vector<std::string>&, const std::vector<double>&>(),
           py::arg("function"), py::arg("programs"), py::arg("threads"), py::arg("shared_bytes"), py::arg("types"),
           py::arg("scalars"))
      .def_property_readonly("tensors", &KernelLaunch::tensors);
  py::class_<ChannelReduction>(m, "ChannelReduction", "A channel reduction's launch (see triton_training.h)")
      .def(py::init<KernelLaunch, std::vector<int64_t>, int64_t>(), py::arg("launch"), py::arg("partial_shape"),
           py::arg("divisor"));
  py::class_<TritonBackward>(m, "TritonBackward", "A backward's two launches (see triton_training.h)")
      .def(py::init<ChannelReduction, KernelLaunch, std::vector<int64_t>>(), py::arg("reduction"),
           py::arg("input_gradient"), py::arg("rows_shape"));
  py::class_<TritonTraining, c10::intrusive_ptr<TritonTraining>>(m, "TritonTraining",
                                                                 "A prepared call's training launches from C++")
      .def(py::init<ChannelReduction, KernelLaunch, std::optional<TritonBackward>, std::optional<TritonBackward>, bool,
                    std::string, std::string, int64_t>(),
           py::arg("pool"), py::arg("rescale"), py::arg("backward"), py::arg("backward_in_place"), py::arg("relu"),
           py::arg("padding"), py::arg("gate"), py::arg("channel_dim"))
      .def("__call__", &TritonTraining::operator(), py::arg("x"), py::arg("weight"), py::arg("identity"),
           py::arg("inplace"));
  m.def("launch_through", &launch_through, py::arg("route"), py::arg("callable") = py::none(),
        "Where C++ kernel launches go: 'driver', 'python' (to the callable) or 'nowhere'");
}

}  // namespace ecanet
