// The operators' definitions (declared in operators.h): the pooling, gate and rescale passes of
// a forward, and the fused reduction, gate gradient and input gradient of a backward, each one call.

#include "operators.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>

#if __has_include(<unistd.h>)
#include <unistd.h>  // sysconf
#endif

#include <vector>

#include "channel_reduce.h"
#include "rescale.h"

namespace ecanet {
namespace {

// mean[n, c] = the mean of x over S, in the accumulation type.
template <typename scalar_t, typename acc_t>
void channel_mean(const Layout& L, const scalar_t* x, acc_t* mean) {
  channel_reduce<scalar_t, acc_t, false, false, false, false>(L, {x, nullptr, nullptr, nullptr, nullptr}, mean);
  const acc_t inverse = acc_t(1) / static_cast<acc_t>(L.s);
  for (int64_t i = 0; i < L.n * L.c; ++i) mean[i] *= inverse;
}

// Samples of at most this many bytes are pooled, gated and rescaled one after the other, so the
// rescale reads each sample back from the L2 cache its pooling pass just filled; larger
// channels-first samples go a block of channels at a time (cached_channel_block). Other larger
// samples go one by one too when there is a sample for every thread: the rescale then reads the
// sample back from the L3, where pass by pass it comes from memory once the batch outgrows the L3
// (on the AVX2 EPYC, 32 MiB L3, in place at 32x1024x14x14 to 32x256x56x56, channels-last: 16-25%
// less time one by one, 1 or 2 threads; channels-first without blocks: 17-21%). The rest go pass
// by pass over the whole batch. The L2's size: ECANET_CPU_CACHE_BYTES where set (tests use it to
// take every route on any machine), else where the system reports it, else 1 MiB. On the Xeon
// build machine (2 MiB L2) in-place ECA on 1.5 MiB samples (32x512x28x28 float32, 32x256x56x56
// bfloat16) took 10-25% less time sample by sample than pass by pass.
int64_t sample_cache_bytes() {
  static const int64_t bytes = [] {
    const char* text = std::getenv("ECANET_CPU_CACHE_BYTES");
    if (text != nullptr && std::atoll(text) > 0) return static_cast<int64_t>(std::atoll(text));
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 > 0) return static_cast<int64_t>(l2);
#endif
    return int64_t(1) << 20;
  }();
  return bytes;
}

// Channels per block when a channels-first sample too large for the cache is pooled, gated and
// rescaled a block at a time (forward_on), or 0 where blocks do not apply. A channel's gate
// needs only the means of its k neighbours, so once a block is pooled, all but its last k/2
// channels can be gated and rescaled while the block is still in the L2 (half of it, so the
// output's lines fit beside). Zero padding only: wrapped, the first channels need the last ones.
// Only with a sample for every thread: the threads share the samples, not a sample's rows.
// Channels-first only: a channels-last block's rows start at the same offset in every 4 KiB page,
// so they fall in a width / C share of the L2's sets (at 32x1024x14x14 float32, blocks of 16 to
// 320 channels took 0.99-2.08x the time of whole samples).
int64_t cached_channel_block(const Layout& L, const GateArgs& args, int64_t element_bytes) {
  const int64_t row_bytes = L.s * element_bytes;
  if (L.channels_last || args.padding != Padding::zeros || row_bytes == 0 || L.n < available_threads()) return 0;
  const int64_t block = sample_cache_bytes() / 2 / row_bytes;
  return block >= args.k && block < L.c ? block : 0;
}

// Descriptors for an inference call (inference_descriptors), which nothing keeps after it: views
// of a buffer the calling thread keeps from call to call, so that the call frees no memory. Freeing
// a buffer next to the top of glibc's heap makes glibc give back (brk) whatever other code freed
// there before, in that call: on the AVX2 EPYC, in-place ECA at 32x512x28x28 bfloat16 right after
// timm's layer (which allocates and frees its 25.7 MB temporaries) took 7.2-10.1 ms whenever such
// a brk ran inside it (3.3-4.1 ms each), against 4.0-5.5 ms. Descriptors of more than
// kKeptDescriptorBytes in all (a batch of 64 at 2048 float32 channels fills them) get tensors of
// their own, so that no thread keeps more than that.
constexpr int64_t kKeptDescriptorBytes = int64_t(1) << 20;

}  // namespace

at::Tensor eca_mean(const at::Tensor& x, int64_t channel_dim) {
  TORCH_CHECK(x.device().is_cpu(), "ecanet::eca_mean is the CPU kernel, got a ", x.device(), " tensor");
  const Layout L = layout_of(x, channel_dim);
  at::Tensor mean = at::empty({L.n, L.c}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ecanet_eca_mean", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    channel_mean<scalar_t, acc_t>(L, x.const_data_ptr<scalar_t>(), mean.data_ptr<acc_t>());
  });
  return mean;
}

Descriptors new_descriptors(const Layout& L, const at::Tensor& x, bool with_mean) {
  const at::TensorOptions options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  return {with_mean ? at::empty({L.n, L.c}, options) : at::Tensor(), at::empty({L.n, L.c}, options)};
}

Descriptors inference_descriptors(const Layout& L, const at::Tensor& x, bool with_mean) {
  thread_local std::vector<double> storage;  // doubles: aligned for float32 and float64 alike
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  const int64_t doubles_each = (L.n * L.c * static_cast<int64_t>(c10::elementSize(acc)) + 7) / 8;
  if (2 * doubles_each * 8 > kKeptDescriptorBytes) return new_descriptors(L, x, with_mean);
  if (static_cast<int64_t>(storage.size()) < 2 * doubles_each) storage.resize(2 * doubles_each);
  const at::TensorOptions options = at::TensorOptions().dtype(acc);
  return {at::from_blob(storage.data(), {L.n, L.c}, options),
          at::from_blob(storage.data() + doubles_each, {L.n, L.c}, options)};
}

std::tuple<at::Tensor, at::Tensor> forward_on(const at::Tensor& x, const Layout& L, const GateArgs& args,
                                              const at::Tensor* identity_tensor, bool relu, const at::Tensor& out_tensor,
                                              const at::Tensor* known_mean, const Descriptors& into) {
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  const at::Tensor mean = known_mean != nullptr ? known_mean->to(acc).contiguous() : into.mean;
  const at::Tensor& gates = into.gates;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ecanet_eca_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const acc_t* taps = args.taps.const_data_ptr<acc_t>();
    acc_t* m = mean.data_ptr<acc_t>();
    acc_t* g = gates.data_ptr<acc_t>();
    scalar_t* out = out_tensor.data_ptr<scalar_t>();
    const scalar_t* identity = identity_tensor ? identity_tensor->const_data_ptr<scalar_t>() : nullptr;
    // Rescale of the rows of `part` (the whole batch, a sample or a block of its channels) that
    // start at element `offset` and gate row `first_row`.
    auto rescale = [&](const Layout& part, int64_t offset, int64_t first_row) {
      const scalar_t* shortcut = at_offset(identity, offset);
      if (identity != nullptr && relu) {
        rescale_pass<scalar_t, acc_t, true, true, false, false>(part, px + offset, g + first_row, nullptr, shortcut,
                                                                nullptr, out + offset);
      } else if (identity != nullptr) {
        rescale_pass<scalar_t, acc_t, true, false, false, false>(part, px + offset, g + first_row, nullptr, shortcut,
                                                                 nullptr, out + offset);
      } else if (relu) {
        rescale_pass<scalar_t, acc_t, false, true, false, false>(part, px + offset, g + first_row, nullptr, nullptr,
                                                                 nullptr, out + offset);
      } else {
        rescale_pass<scalar_t, acc_t, false, false, false, false>(part, px + offset, g + first_row, nullptr, nullptr,
                                                                  nullptr, out + offset);
      }
    };
    const int64_t sample_bytes = L.c * L.s * static_cast<int64_t>(sizeof(scalar_t));
    const int64_t block = cached_channel_block(L, args, sizeof(scalar_t));
    const bool one_by_one = sample_bytes <= sample_cache_bytes() || (block == 0 && L.n >= available_threads());
    if (known_mean == nullptr && L.n > 1 && one_by_one) {
      const Layout sample{1, L.c, L.s, L.batch_stride, L.channels_last};
      at::parallel_for(0, L.n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          channel_mean<scalar_t, acc_t>(sample, px + n * L.batch_stride, m + n * L.c);
          gate_channels<acc_t>(m + n * L.c, taps, args.rows, args.k, L.c, args.padding, args.gate, 0, L.c, g + n * L.c);
          rescale(sample, n * L.batch_stride, n * L.c);
        }
      });
    } else if (known_mean == nullptr && block > 0) {
      const int64_t half = args.k / 2;
      at::parallel_for(0, L.n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const int64_t base = n * L.batch_stride, row = n * L.c;
          int64_t pooled = 0, done = 0;  // channels pooled; channels gated and rescaled
          while (done < L.c) {
            const int64_t next = std::min(L.c, pooled + block);
            channel_mean<scalar_t, acc_t>(Layout{1, next - pooled, L.s, (next - pooled) * L.s, false},
                                          px + base + pooled * L.s, m + row + pooled);
            pooled = next;
            const int64_t ready = pooled == L.c ? L.c : pooled - half;  // their neighbours' means are in
            gate_channels<acc_t>(m + row, taps, args.rows, args.k, L.c, args.padding, args.gate, done, ready, g + row);
            rescale(Layout{1, ready - done, L.s, (ready - done) * L.s, false}, base + done * L.s, row + done);
            done = ready;
          }
        }
      });
    } else {
      if (known_mean == nullptr) channel_mean<scalar_t, acc_t>(L, px, m);
      channel_gate<acc_t>(m, taps, args.rows, args.k, L.n, L.c, args.padding, args.gate, g);
      rescale(L, 0, 0);
    }
  });
  // Written through a pointer: tell autograd (views share the counter), so that a graph that
  // saved this memory for its backward raises instead of reading the new values.
  mark_written(out_tensor);
  return {mean, gates};
}

void check_known_mean(const std::optional<at::Tensor>& known_mean, const Layout& L) {
  TORCH_CHECK(!known_mean || (known_mean->dim() == 2 && known_mean->size(0) == L.n && known_mean->size(1) == L.c),
              "ecanet: the given mean must have shape (N, C) = (", L.n, ", ", L.c, "), got ", known_mean->sizes());
}

std::tuple<at::Tensor, at::Tensor> eca_forward(const at::Tensor& x, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& identity, bool relu,
                                               const std::string& padding, const std::string& gate,
                                               const at::Tensor& out, int64_t channel_dim,
                                               const std::optional<at::Tensor>& known_mean) {
  TORCH_CHECK(x.device().is_cpu(), "ecanet::eca_forward is the CPU kernel, got a ", x.device(), " tensor");
  const Layout L = layout_of(x, channel_dim);
  check_like(out, x, "out");
  if (identity) check_like(*identity, x, "identity");
  check_known_mean(known_mean, L);
  const GateArgs args = gate_args(weight, L.c, at::toOpMathType(x.scalar_type()), padding, gate);
  return forward_on(x, L, args, identity ? &*identity : nullptr, relu, out, known_mean ? &*known_mean : nullptr,
                    new_descriptors(L, x, !known_mean));
}

at::Tensor eca_backward(const at::Tensor& grad_tensor, const at::Tensor& saved_tensor,
                        const std::optional<at::Tensor>& relu_out_tensor, const at::Tensor& mean,
                        const at::Tensor& gates, const at::Tensor& weight, const std::string& padding,
                        const std::string& gate, bool inplace, const std::optional<at::Tensor>& identity_tensor,
                        const std::optional<at::Tensor>& masked_tensor, const std::optional<at::Tensor>& dx_tensor,
                        int64_t channel_dim) {
  TORCH_CHECK(grad_tensor.device().is_cpu(), "ecanet::eca_backward is the CPU kernel, got a ", grad_tensor.device(),
              " tensor");
  const Layout L = layout_of(grad_tensor, channel_dim);
  check_like(saved_tensor, grad_tensor, "saved input");
  if (relu_out_tensor) check_like(*relu_out_tensor, grad_tensor, "ReLU output");
  if (masked_tensor) check_like(*masked_tensor, grad_tensor, "masked gradient buffer");
  if (dx_tensor) check_like(*dx_tensor, grad_tensor, "input gradient buffer");
  TORCH_CHECK(!masked_tensor || relu_out_tensor, "ecanet: a masked gradient buffer needs the ReLU output");
  TORCH_CHECK(!identity_tensor || inplace,
              "ecanet: the identity is only needed in place (the saved tensor is the output)");
  if (identity_tensor) check_like(*identity_tensor, grad_tensor, "identity");
  const at::ScalarType acc = at::toOpMathType(grad_tensor.scalar_type());
  TORCH_CHECK(mean.scalar_type() == acc && gates.scalar_type() == acc && mean.is_contiguous() &&
                  gates.is_contiguous() && mean.numel() == L.n * L.c && gates.numel() == L.n * L.c,
              "ecanet: mean and gate must be contiguous (N, C) tensors in ", acc);
  const GateArgs args = gate_args(weight, L.c, acc, padding, gate);
  at::Tensor d_logits = at::empty({L.n, L.c}, mean.options());
  at::Tensor d_mean = at::empty({L.n, L.c}, mean.options());
  at::Tensor d_taps = at::zeros({args.rows, args.k}, mean.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_tensor.scalar_type(), "ecanet_eca_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* grad = grad_tensor.const_data_ptr<scalar_t>();
    const scalar_t* saved = saved_tensor.const_data_ptr<scalar_t>();
    const scalar_t* relu_out = relu_out_tensor ? relu_out_tensor->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* masked = masked_tensor ? masked_tensor->data_ptr<scalar_t>() : nullptr;
    acc_t* dl = d_logits.data_ptr<acc_t>();
    const scalar_t* identity = identity_tensor ? identity_tensor->const_data_ptr<scalar_t>() : nullptr;
    const acc_t* g = gates.const_data_ptr<acc_t>();
    acc_t* dm = d_mean.data_ptr<acc_t>();
    scalar_t* dx = dx_tensor ? dx_tensor->data_ptr<scalar_t>() : nullptr;
    const acc_t inverse = acc_t(1) / static_cast<acc_t>(L.s);
    // The backward of the samples in `part` (the whole batch or one sample), whose elements start
    // at `offset` and whose (N, C) rows at `row`; their tap gradients are added to taps_grad.
    auto backward_of = [&](const Layout& part, int64_t offset, int64_t row, acc_t* taps_grad) {
      // sum_s(masked grad * x); in place x is not kept: x * gate = out - identity (or out alone).
      auto sums = [&](auto mask, auto store, auto shift) {
        channel_reduce<scalar_t, acc_t, true, decltype(mask)::value, decltype(store)::value, decltype(shift)::value>(
            part, ReductionOperands<scalar_t>{grad, saved, identity, relu_out, masked}.from(offset), dl + row);
      };
      const std::true_type yes;
      const std::false_type no;
      if (identity != nullptr) {
        masked != nullptr ? sums(yes, yes, yes) : relu_out != nullptr ? sums(yes, no, yes) : sums(no, no, yes);
      } else {
        masked != nullptr ? sums(yes, yes, no) : relu_out != nullptr ? sums(yes, no, no) : sums(no, no, no);
      }
      for (int64_t i = row; i < row + part.n * L.c; ++i) {
        acc_t d_gate = dl[i];
        // In place, the saved tensor is the output and the sums are gate * sum(grad * x). Where the gate is
        // exactly 0 its derivative is 0 too (sigmoid, hard sigmoid), so the channel gets 0.
        if (inplace) d_gate = g[i] == acc_t(0) ? acc_t(0) : d_gate / g[i];
        dl[i] = d_gate * gate_slope(g[i], args.gate);
      }
      channel_conv_backward<acc_t>(mean.const_data_ptr<acc_t>() + row, dl + row, args.taps.const_data_ptr<acc_t>(),
                                   args.rows, args.k, part.n, L.c, args.padding, dm + row, taps_grad);
      if (dx == nullptr) return;
      for (int64_t i = row; i < row + part.n * L.c; ++i) dm[i] *= inverse;
      // From the stored masked gradient when there is one, else masking grad again on the fly.
      if (masked != nullptr) {
        rescale_pass<scalar_t, acc_t, false, false, true, false>(part, masked + offset, g + row, dm + row, nullptr,
                                                                 nullptr, dx + offset);
      } else if (relu_out != nullptr) {
        rescale_pass<scalar_t, acc_t, false, false, true, true>(part, grad + offset, g + row, dm + row, nullptr,
                                                                relu_out + offset, dx + offset);
      } else {
        rescale_pass<scalar_t, acc_t, false, false, true, false>(part, grad + offset, g + row, dm + row, nullptr,
                                                                 nullptr, dx + offset);
      }
    };
    acc_t* taps_grad = d_taps.data_ptr<acc_t>();
    if (dx != nullptr && L.n > 1 && L.n >= available_threads()) {
      // Sample by sample, as the forward: the input gradient's pass reads the sample's gradient back
      // from cache. Each sample's tap gradients go to a row of their own (no two threads add to the
      // same taps), added up in sample order afterwards (an order that does not depend on them).
      const int64_t taps_count = args.rows * args.k;
      at::Tensor per_sample = at::zeros({L.n, taps_count}, mean.options());
      acc_t* sample_taps = per_sample.data_ptr<acc_t>();
      const Layout sample{1, L.c, L.s, L.batch_stride, L.channels_last};
      at::parallel_for(0, L.n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          backward_of(sample, n * L.batch_stride, n * L.c, sample_taps + n * taps_count);
        }
      });
      for (int64_t n = 0; n < L.n; ++n) {
        for (int64_t t = 0; t < taps_count; ++t) taps_grad[t] += sample_taps[n * taps_count + t];
      }
    } else {
      backward_of(L, 0, 0, taps_grad);
    }
  });
  if (masked_tensor) mark_written(*masked_tensor);
  if (dx_tensor) mark_written(*dx_tensor);
  return d_taps.view(weight.sizes()).to(weight.scalar_type());
}

}  // namespace ecanet
