// The (N, C, S) view of a kernel's tensors without a view, the checks of arguments laid out like
// it, and the threads a pass may use.

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <optional>

namespace ecanet {

// The shared geometry of the (N, C, S) views in one call.
struct Layout {
  int64_t n, c, s, batch_stride;
  bool channels_last;

  // Offset of element (n, c, 0) (channels-first) or (n, 0, c) (channels-last).
  int64_t row(int64_t sample, int64_t channel) const {
    return sample * batch_stride + (channels_last ? channel : channel * s);
  }

  // Offset of channels-first row r = n * C + c; no division when the batch is dense.
  int64_t channels_first_row(int64_t r) const { return batch_stride == c * s ? r * s : row(r / c, r % c); }

  // Offset of channels-last row r = n * S + position.
  int64_t channels_last_row(int64_t r) const {
    return batch_stride == c * s ? r * c : (r / s) * batch_stride + (r % s) * c;
  }
};

namespace {

// Elements per parallel task below which threads cost more than they save (ATen uses the same).
constexpr int64_t kGrain = 32768;

// x as (N, C, S) without a view, x being (N, C, *) (channel_dim 1) or (N, *, C) (channel_dim -1):
// the layout when x's memory is channels-first or channels-last dense (as ecanet/ops/views.py
// finds it), else nothing.
std::optional<Layout> dense_layout(const at::Tensor& x, int64_t channel_dim) {
  if (x.numel() == 0) return std::nullopt;  // the checked path handles empty tensors
  const int64_t dims = x.dim(), channel = channel_dim == 1 ? 1 : dims - 1;
  const int64_t n = x.size(0), c = x.size(channel), s = x.numel() / (n * c);
  // Dense in the order (N, C, rest) or (N, rest, C): each dim longer than 1 strides over the
  // elements of the dims inside it (the rest keep their order either way).
  auto dense = [&](bool channels_inner) {
    int64_t inside = 1;
    auto next = [&](int64_t d) {
      if (x.size(d) != 1 && x.stride(d) != inside) return false;
      inside *= x.size(d);
      return true;
    };
    if (channels_inner && !next(channel)) return false;
    for (int64_t d = dims - 1; d >= 1; --d) {
      if (d != channel && !next(d)) return false;
    }
    return (channels_inner || next(channel)) && next(0);
  };
  const bool last = dense(true), first = dense(false);
  if (!first && !last) return std::nullopt;
  return Layout{n, c, s, c * s, last && (!first || s == 1)};
}

// The layout of a kernel's argument x (see dense_layout); an empty x addresses nothing, so any
// dense layout of its sizes will do.
Layout layout_of(const at::Tensor& x, int64_t channel_dim) {
  TORCH_CHECK(x.dim() >= 3, "ecanet: expected (N, C, *) or (N, *, C) with at least 3 dims, got ", x.dim(), " dims");
  TORCH_CHECK(channel_dim == 1 || channel_dim == -1, "ecanet: channel_dim must be 1 or -1, got ", channel_dim);
  if (x.numel() == 0) {
    const int64_t channel = channel_dim == 1 ? 1 : x.dim() - 1;
    int64_t s = 1;
    for (int64_t d = 1; d < x.dim(); ++d) {
      if (d != channel) s *= x.size(d);
    }
    return Layout{x.size(0), x.size(channel), s, x.size(channel) * s, false};
  }
  const std::optional<Layout> L = dense_layout(x, channel_dim);
  TORCH_CHECK(L, "ecanet: the input must be channels-first or channels-last dense, got sizes ", x.sizes(),
              " and strides ", x.strides());
  return *L;
}

// Same elements at the same offsets (strides of size-1 dims do not matter).
bool same_geometry(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(same_geometry(t, x), "ecanet: ", name,
              " must have the input's shape and strides; got ", t.sizes(), " / ", t.strides(), " for ", x.sizes(),
              " / ", x.strides());
  TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device().is_cpu(), "ecanet: ", name,
              " must be a CPU tensor of the input's dtype");
}

// Bumps the version counter of a tensor written through its data pointer, as ATen's in-place
// operators do (inference tensors have none).
void mark_written(const at::Tensor& t) {
  if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}

// Threads a parallel_for here would use (one inside another's task).
int64_t available_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

int64_t tasks_grain(int64_t elements_per_task) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, elements_per_task));
}

}  // namespace
}  // namespace ecanet
