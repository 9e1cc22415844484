// Fused ECA kernels for CPU tensors: the whole forward and the whole backward, each one call.
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

#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/extension.h>
#include <torch/library.h>

#ifdef __linux__
#include <sys/mman.h>
#endif
#if __has_include(<unistd.h>)
#include <unistd.h>  // sysconf
#endif
// The machine's vector instructions (the build uses -march=native): with AVX2, the sums go in
// explicit eight-lane vectors (eight short rows at once in eight_rows_reduce, a long row's lanes
// in long_row_reduce8, eight channels of channels-last positions in add_positions), short
// channels-first rows rescale back to back as one run (rescale_joined_rows8) and other bfloat16
// and float16 rescale passes go eight values at a time (rescale_run8); with AVX-512's bfloat16
// instructions, rescale passes over long bfloat16 rows narrow sixteen values per instruction.
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define ECANET_BFLOAT16_VECTORS 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace ecanet {
namespace {

// Elements per parallel task below which threads cost more than they save (ATen uses the same).
constexpr int64_t kGrain = 32768;
// Rows at least this long are summed in kLongRowLanes lanes (see row_reduce).
constexpr int64_t kLongRow = 128;
constexpr int64_t kLongRowLanes = 16;
// Rows at least this long (and shorter than kLongRow) are summed eight lanes wide.
constexpr int64_t kMediumRow = 32;
// Reductions read this many far-apart parts of a tensor side by side. One sequential stream from
// memory leaves the AVX2 EPYC's memory mostly idle: pooling 32x256x56x56 float32 channels-last
// from memory took 6.4 ms over four runs of positions a quarter of the sample apart, 13.5 ms over
// four neighbouring positions and 14.9 ms position by position; channels-first 7x7 rows 1.10
// against 1.44 ms over 32x2048x7x7 (presumably a single stream's bandwidth is bounded by the
// misses it keeps in flight, and four streams keep more of them in flight).
constexpr int64_t kStreams = 4;
// Most channels one task of a channels-last reduction sums (its accumulators: 8-16 KiB, in L1).
constexpr int64_t kMaxChannelBlock = 2048;

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

enum class Padding { zeros, circular };
enum class Gate { sigmoid, hard_sigmoid };

Padding padding_of(const std::string& name) {
  if (name == "zeros") return Padding::zeros;
  TORCH_CHECK(name == "circular", "ecanet: padding must be 'zeros' or 'circular', got '", name, "'");
  return Padding::circular;
}

Gate gate_of(const std::string& name) {
  if (name == "sigmoid") return Gate::sigmoid;
  TORCH_CHECK(name == "hard_sigmoid", "ecanet: gate must be 'sigmoid' or 'hard_sigmoid', got '", name, "'");
  return Gate::hard_sigmoid;
}

// Threads a parallel_for here would use (one inside another's task).
int64_t available_threads() { return at::in_parallel_region() ? 1 : at::get_num_threads(); }

int64_t tasks_grain(int64_t elements_per_task) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, elements_per_task));
}

// ---------------------------------------------------------------------------------------------
// Large passes.

// pointer + offset, or nullptr for a tensor the call does not have.
template <typename T>
inline T* at_offset(T* pointer, int64_t offset) {
  return pointer == nullptr ? pointer : pointer + offset;
}

// v in scalar_t, rounded to nearest even as torch rounds. For bfloat16 the rounding is written out
// on the float's bits so that the compiler vectorises it: c10's conversion (a branch on NaN) stays
// scalar, and without AVX-512's vcvtneps2bf16 it made a bfloat16 rescale no faster than a float32
// one (0.25 against 2.0 ns per value in a simd loop on an AVX2 EPYC, gcc 12).
template <typename scalar_t, typename acc_t>
inline scalar_t narrowed(acc_t v) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const float value = v;
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    const uint32_t rounded = (bits + ((bits >> 16) & 1u) + 0x7FFFu) >> 16;
    return c10::BFloat16(value != value ? uint16_t(0x7FC0) : uint16_t(rounded), c10::BFloat16::from_bits());
  } else {
    return static_cast<scalar_t>(v);
  }
}

// The tensors of a channel reduction (see reduction_term), addressed from some element on; the
// optional ones are nullptr when the reduction does not use them.
template <typename scalar_t>
struct ReductionOperands {
  const scalar_t* a;
  const scalar_t* other;
  const scalar_t* offset;
  const scalar_t* mask;
  scalar_t* masked;

  ReductionOperands from(int64_t base) const {
    return {a + base, at_offset(other, base), at_offset(offset, base), at_offset(mask, base), at_offset(masked, base)};
  }
};

// One element of a channel reduction: `a` (masked to 0 where mask <= 0, and then stored to
// `masked` when kStore) times `other` (or 1; minus `offset` when kOffset), in the accumulation type.
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
inline acc_t reduction_term(const ReductionOperands<scalar_t>& p, int64_t i) {
  acc_t value = static_cast<acc_t>(p.a[i]);
  if constexpr (kMask) value = static_cast<acc_t>(p.mask[i]) > acc_t(0) ? value : acc_t(0);
  if constexpr (kStore) p.masked[i] = narrowed<scalar_t>(value);
  if constexpr (kOther && kOffset) value *= static_cast<acc_t>(p.other[i]) - static_cast<acc_t>(p.offset[i]);
  if constexpr (kOther && !kOffset) value *= static_cast<acc_t>(p.other[i]);
  return value;
}

#ifdef __AVX2__
// Whether eight-lane AVX2 vectors (load8, store8) serve a pass: float32 accumulation of float32,
// bfloat16 or (with F16C) float16 values.
template <typename scalar_t, typename acc_t>
constexpr bool kEightLanes = std::is_same_v<acc_t, float> &&
                             (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16>
#ifdef __F16C__
                              || std::is_same_v<scalar_t, c10::Half>
#endif
                             );

// Eight values from p on, widened to float32 (exactly).
template <typename scalar_t>
inline __m256 load8(const scalar_t* p) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return _mm256_loadu_ps(p);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  } else {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
}

// The eight float32 values of v narrowed to scalar_t as narrowed() narrows them, stored from p on.
// bfloat16 rounds to nearest even on the bits (a NaN becomes 0x7FC0), float16 by F16C's
// conversion (to nearest even, as c10's). Without AVX-512's vcvtneps2bf16, a bfloat16 rescale from
// the L2 took 0.18-0.29 ns per value this way against 0.22-0.30 in the compiler's simd loop (6-22%
// less at each row length), and a float16 rescale 0.10 against 0.73 (c10's float16 conversion
// stays scalar), on the AVX2 EPYC.
template <typename scalar_t>
inline void store8(scalar_t* p, __m256 v) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    _mm256_storeu_ps(p, v);
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    const __m256i halves = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0)), nan));
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(halves), _mm256_extracti128_si256(halves, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

// reduction_term for the eight elements from i on.
template <typename scalar_t, bool kOther, bool kMask, bool kStore, bool kOffset>
inline __m256 reduction_term8(const ReductionOperands<scalar_t>& p, int64_t i) {
  __m256 value = load8(p.a + i);
  if constexpr (kMask) value = _mm256_and_ps(value, _mm256_cmp_ps(load8(p.mask + i), _mm256_setzero_ps(), _CMP_GT_OQ));
  if constexpr (kStore) store8(p.masked + i, value);
  if constexpr (kOther && kOffset) value = _mm256_mul_ps(value, _mm256_sub_ps(load8(p.other + i), load8(p.offset + i)));
  if constexpr (kOther && !kOffset) value = _mm256_mul_ps(value, load8(p.other + i));
  return value;
}

// totals[q] = row_reduce over the row of `length` (8 to kLongRow) elements at rows[q], for eight
// rows at once: each row in one vector of eight lanes (its last length % 8 elements one by one),
// and the eight vectors' lanes added up together, three instructions deep, where row by row each
// row's lanes took a chain of steps (7x7 maps, rows of 49: 20% less time pooling a sample from
// the L2 on the AVX2 EPYC).
template <typename scalar_t, bool kOther, bool kMask, bool kStore, bool kOffset>
inline void eight_rows_reduce(int64_t length, const ReductionOperands<scalar_t>* rows, float* totals) {
  __m256 sums[8];
  alignas(32) float tails[8];
  const int64_t whole = length / 8 * 8;
  for (int q = 0; q < 8; ++q) {
    __m256 total = _mm256_setzero_ps();
    for (int64_t i = 0; i < whole; i += 8) {
      total = _mm256_add_ps(total, reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(rows[q], i));
    }
    sums[q] = total;
    float tail = 0;
    for (int64_t i = whole; i < length; ++i) {
      tail += reduction_term<scalar_t, float, kOther, kMask, kStore, kOffset>(rows[q], i);
    }
    tails[q] = tail;
  }
  // Lane q of `quads` (q < 4) sums four of row q's lanes, lane q + 4 the other four.
  const __m256 pairs01 = _mm256_hadd_ps(sums[0], sums[1]), pairs23 = _mm256_hadd_ps(sums[2], sums[3]);
  const __m256 pairs45 = _mm256_hadd_ps(sums[4], sums[5]), pairs67 = _mm256_hadd_ps(sums[6], sums[7]);
  const __m256 quads0123 = _mm256_hadd_ps(pairs01, pairs23), quads4567 = _mm256_hadd_ps(pairs45, pairs67);
  const __m256 low = _mm256_permute2f128_ps(quads0123, quads4567, 0x20);
  const __m256 high = _mm256_permute2f128_ps(quads0123, quads4567, 0x31);
  _mm256_storeu_ps(totals, _mm256_add_ps(_mm256_add_ps(low, high), _mm256_load_ps(tails)));
}

// row_reduce over a row of kLongRow values or more: its kLongRowLanes lanes as two eight-lane
// vectors, added up by the same tree (the values left over one by one). The compiler's code for
// the lanes added them up through the stack and widened float16 values one by one (c10's
// conversion stays scalar); on the AVX2 EPYC (one thread, paired rounds) pooling 32x1024x14x14
// to 32x256x56x56 took 0.80-0.93x the time in bfloat16, 0.30-0.48x in float16 and 0.92-0.99x in
// float32, in-place ECA 0.94-0.97x, 0.52-0.60x and 0.93-1.00x, and a training step of the block
// tail at 14x14 and 28x28 0.88-0.92x, 0.43-0.50x and 0.94-0.99x.
template <typename scalar_t, bool kOther, bool kMask, bool kStore, bool kOffset>
inline float long_row_reduce8(int64_t length, const ReductionOperands<scalar_t>& row) {
  static_assert(kLongRowLanes == 16, "two eight-lane vectors hold the lanes");
  __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
  int64_t done = 0;
  for (; done + kLongRowLanes <= length; done += kLongRowLanes) {
    low = _mm256_add_ps(low, reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(row, done));
    high = _mm256_add_ps(high, reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(row, done + 8));
  }
  const __m256 eight = _mm256_add_ps(low, high);
  __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
  four = _mm_add_ps(four, _mm_movehl_ps(four, four));
  float total = _mm_cvtss_f32(_mm_add_ss(four, _mm_shuffle_ps(four, four, 1)));
  for (; done < length; ++done) total += reduction_term<scalar_t, float, kOther, kMask, kStore, kOffset>(row, done);
  return total;
}
#endif

// The sum of reduction_term over one contiguous row. The compiler finishes every vectorised
// reduction by adding up its lanes one by one, so short rows use narrow vectors (few lanes to
// add up), medium rows eight lanes (eight bfloat16 values widen in one instruction: 7x7 maps,
// rows of 49, trained 10-22% faster in bfloat16 than with four lanes, float32 alike) and long
// rows kLongRowLanes sums of neighbouring elements, which the compiler packs into whole vectors
// and adds up once, as a tree; with AVX2, long_row_reduce8 writes those vectors out. (Four simd
// sums over the row's quarters, before, added up four vectors' lanes per row: rows of 196, 14x14
// maps, took 0.16-0.19 ns per float32 value from the L2 against 0.12 with the lanes, on the AVX2
// EPYC.)
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
inline acc_t row_reduce(int64_t length, const ReductionOperands<scalar_t>& row) {
#ifdef __AVX2__
  if constexpr (kEightLanes<scalar_t, acc_t>) {
    if (length >= kLongRow) return long_row_reduce8<scalar_t, kOther, kMask, kStore, kOffset>(length, row);
  }
#endif
  auto term = [&](int64_t i) { return reduction_term<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(row, i); };
  acc_t total = 0;
  int64_t done = 0;
  if (length >= kLongRow) {
    acc_t lanes[kLongRowLanes] = {};
    for (; done + kLongRowLanes <= length; done += kLongRowLanes) {
#pragma GCC unroll 16
      for (int64_t j = 0; j < kLongRowLanes; ++j) lanes[j] += term(done + j);
    }
#pragma GCC unroll 16
    for (int64_t width = kLongRowLanes / 2; width >= 1; width /= 2) {
#pragma GCC unroll 16
      for (int64_t j = 0; j < width; ++j) lanes[j] += lanes[j + width];
    }
    total = lanes[0];
  } else if (length >= kMediumRow) {
#pragma omp simd reduction(+ : total) simdlen(8)
    for (int64_t i = 0; i < length; ++i) total += term(i);
    return total;
  }
#pragma omp simd reduction(+ : total) simdlen(4)
  for (int64_t i = done; i < length; ++i) total += term(i);
  return total;
}

// sums[r] for the channels-first rows r in [begin, end): the rows split into kStreams runs read
// side by side (a row from each in turn; short rows eight at a time, see eight_rows_reduce), and
// the rows left over one by one.
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
void channels_first_reduce(const Layout& L, const ReductionOperands<scalar_t>& tensors, int64_t begin, int64_t end,
                           acc_t* sums) {
  const int64_t run = (end - begin) / kStreams;
  auto row_of = [&](int64_t r) { return tensors.from(L.channels_first_row(r)); };
  int64_t i = 0;  // rows done in each run
#ifdef __AVX2__
  if constexpr (kEightLanes<scalar_t, acc_t>) {
    if (L.s >= 8 && L.s < kLongRow) {
      static_assert(8 % kStreams == 0, "eight_rows_reduce takes as many rows from every stream");
      constexpr int64_t kPerRun = 8 / kStreams;
      for (; i + kPerRun <= run; i += kPerRun) {
        ReductionOperands<scalar_t> rows[8];
        float totals[8];
        for (int q = 0; q < 8; ++q) rows[q] = row_of(begin + (q / kPerRun) * run + i + q % kPerRun);
        eight_rows_reduce<scalar_t, kOther, kMask, kStore, kOffset>(L.s, rows, totals);
        for (int q = 0; q < 8; ++q) sums[begin + (q / kPerRun) * run + i + q % kPerRun] = totals[q];
      }
    }
  }
#endif
  for (; i < run; ++i) {
    for (int q = 0; q < kStreams; ++q) {
      const int64_t r = begin + q * run + i;
      sums[r] = row_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L.s, row_of(r));
    }
  }
  for (int64_t r = begin + kStreams * run; r < end; ++r) {
    sums[r] = row_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L.s, row_of(r));
  }
}

// Channels per task of a channels-last reduction: a sample's rows are read in one contiguous
// sweep when all its channels fit one task (narrower blocks sweep the sample once per block,
// strided; at 32x1024x14x14 blocks of 256 took 15% longer in place), split only as far as the
// threads need tasks when there are fewer samples than threads.
int64_t channel_block(const Layout& L) {
  const int64_t splits = std::max<int64_t>(1, (available_threads() + L.n - 1) / L.n);
  const int64_t block = ((L.c + splits - 1) / splits + 15) / 16 * 16;  // whole vectors
  return std::min(block, kMaxChannelBlock);
}

// partial[j] += reduction_term at channel j < width of kRows channels-last positions (rows of
// contiguous channels), four added in pairs, (p0 + p1) + (p2 + p3), or one. With AVX2, eight
// channels per vector: the compiler's loop widened float16 values one by one. On the AVX2 EPYC
// (one thread, paired rounds) pooling channels-last 7x7 to 56x56 took 0.74-0.91x the time in
// bfloat16, 1.00-1.03x in float32, and 0.15x at 32x1024x14x14 in float16 (5.7x bfloat16's time
// before); a training step of the bfloat16 block tail at 14x14 0.85x.
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset, int kRows>
inline void add_positions(int64_t width, const ReductionOperands<scalar_t>* rows, acc_t* partial) {
  static_assert(kRows == 1 || kRows == 4, "positions come four at a time, or one");
  int64_t j = 0;
#ifdef __AVX2__
  if constexpr (kEightLanes<scalar_t, acc_t>) {
    for (; j + 8 <= width; j += 8) {
      __m256 sum = reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(rows[0], j);
      if constexpr (kRows == 4) {
        sum = _mm256_add_ps(_mm256_add_ps(sum, reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(rows[1], j)),
                            _mm256_add_ps(reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(rows[2], j),
                                          reduction_term8<scalar_t, kOther, kMask, kStore, kOffset>(rows[3], j)));
      }
      _mm256_storeu_ps(partial + j, _mm256_add_ps(_mm256_loadu_ps(partial + j), sum));
    }
  }
#endif
#pragma omp simd
  for (int64_t c = j; c < width; ++c) {
    acc_t sum = reduction_term<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(rows[0], c);
    if constexpr (kRows == 4) {
      sum = (sum + reduction_term<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(rows[1], c)) +
            (reduction_term<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(rows[2], c) +
             reduction_term<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(rows[3], c));
    }
    partial[c] += sum;
  }
}

// sums[n, c] = sum_s term(n, c, s), see reduction_term. Channels-first: tasks of whole rows of S
// contiguous elements (channels_first_reduce). Channels-last: one task per sample and block of
// channels, accumulating rows of contiguous channels, kStreams positions far apart at a time.
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
void channel_reduce(const Layout& L, const ReductionOperands<scalar_t>& tensors, acc_t* sums) {
  if (!L.channels_last) {
    at::parallel_for(0, L.n * L.c, tasks_grain(L.s), [&](int64_t begin, int64_t end) {
      channels_first_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L, tensors, begin, end, sums);
    });
    return;
  }
  const int64_t block = channel_block(L);
  const int64_t blocks = (L.c + block - 1) / block;
  static_assert(kStreams == 4, "the channels-last loop below reads four rows at a time");
  const int64_t run = L.s / kStreams;  // positions in each of the streams read side by side
  at::parallel_for(0, L.n * blocks, tasks_grain(L.s * std::min(L.c, block)), [&](int64_t begin, int64_t end) {
    acc_t partial[kMaxChannelBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t sample = t / blocks, c0 = (t % blocks) * block;
      const int64_t width = std::min(block, L.c - c0);
      std::fill(partial, partial + width, acc_t(0));
      // Every loop indexes operands offset to its row, so the compiler sees contiguous accesses.
      const ReductionOperands<scalar_t> first = tensors.from(L.row(sample, c0));
      for (int64_t s = 0; s < run; ++s) {
        const ReductionOperands<scalar_t> rows[4] = {first.from(s * L.c), first.from((s + run) * L.c),
                                                     first.from((s + 2 * run) * L.c), first.from((s + 3 * run) * L.c)};
        add_positions<scalar_t, acc_t, kOther, kMask, kStore, kOffset, 4>(width, rows, partial);
      }
      for (int64_t s = kStreams * run; s < L.s; ++s) {
        const ReductionOperands<scalar_t> row = first.from(s * L.c);
        add_positions<scalar_t, acc_t, kOther, kMask, kStore, kOffset, 1>(width, &row, partial);
      }
      std::copy(partial, partial + width, sums + sample * L.c + c0);
    }
  });
}

// One element of a rescale pass: act(x' * scale + shift + identity) with x' = x masked by
// relu_of > 0 when kMask (the backward's masked gradient, recomputed instead of stored).
template <typename scalar_t, typename acc_t, bool kIdentity, bool kRelu, bool kShift, bool kMask>
inline scalar_t rescaled(scalar_t x, acc_t scale, acc_t shift, const scalar_t* identity, const scalar_t* relu_of,
                         int64_t i) {
  acc_t v = static_cast<acc_t>(x);
  if constexpr (kMask) v = static_cast<acc_t>(relu_of[i]) > acc_t(0) ? v : acc_t(0);
  v *= scale;
  if constexpr (kShift) v += shift;
  if constexpr (kIdentity) v += static_cast<acc_t>(identity[i]);
  if constexpr (kRelu) v = v > acc_t(0) ? v : acc_t(0);
  return narrowed<scalar_t>(v);
}

#ifdef __AVX2__
// Whether rescale passes other than short channels-first rows (those go through
// rescale_joined_rows8 in every eight-lane dtype) go through rescale_run8: bfloat16 and float16,
// whose narrowing the compiler's simd loop does slowly (see store8). float32 stays in that loop,
// as fast, and so does bfloat16 where AVX-512's bfloat16 instructions take its long rows
// (rescale_run_bfloat16; not measured against rescale_run8 on short channels-last rows).
template <typename scalar_t>
constexpr bool kEightLaneRescale = !std::is_same_v<scalar_t, float> && kEightLanes<scalar_t, float>
#ifdef ECANET_BFLOAT16_VECTORS
                                   && !std::is_same_v<scalar_t, c10::BFloat16>
#endif
    ;

// rescaled() for the eight values from i on, with their scales g and shifts b.
template <typename scalar_t, bool kIdentity, bool kRelu, bool kShift, bool kMask>
inline void rescale8(int64_t i, const scalar_t* x, __m256 g, __m256 b, const scalar_t* identity,
                     const scalar_t* relu_of, scalar_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 v = load8(x + i);
  if constexpr (kMask) v = _mm256_and_ps(v, _mm256_cmp_ps(load8(relu_of + i), zero, _CMP_GT_OQ));
  v = _mm256_mul_ps(v, g);
  if constexpr (kShift) v = _mm256_add_ps(v, b);
  if constexpr (kIdentity) v = _mm256_add_ps(v, load8(identity + i));
  if constexpr (kRelu) v = _mm256_max_ps(v, zero);  // NaN -> 0, as `v > 0 ? v : 0`
  store8(out + i, v);
}

// rescaled() over a contiguous run of values, eight at a time (the last length % 8 one by one). The
// scale and shift are one value for the whole run (channels-first rows) or one per element
// (kPerElement: channels-last rows, one per channel).
template <typename scalar_t, bool kIdentity, bool kRelu, bool kShift, bool kMask, bool kPerElement>
void rescale_run8(int64_t length, const scalar_t* x, const float* scale, const float* shift, const scalar_t* identity,
                  const scalar_t* relu_of, scalar_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 g = kPerElement ? zero : _mm256_set1_ps(scale[0]);
  __m256 b = kShift && !kPerElement ? _mm256_set1_ps(shift[0]) : zero;
  int64_t i = 0;
  for (; i + 8 <= length; i += 8) {
    if constexpr (kPerElement) {
      g = _mm256_loadu_ps(scale + i);
      if constexpr (kShift) b = _mm256_loadu_ps(shift + i);
    }
    rescale8<scalar_t, kIdentity, kRelu, kShift, kMask>(i, x, g, b, identity, relu_of, out);
  }
  for (; i < length; ++i) {
    const int64_t at = kPerElement ? i : 0;
    out[i] = rescaled<scalar_t, float, kIdentity, kRelu, kShift, kMask>(x[i], scale[at], kShift ? shift[at] : 0.0f,
                                                                         identity, relu_of, i);
  }
}

// rescaled() over `rows` channels-first rows of `length` values each (8 up to kLongRow), stored back
// to back from x on, as one run eight values at a time: a vector across the end of a row takes each
// lane's scale (and shift) from its own row by a blend (a row holds at least eight values, so a
// vector meets at most two). Row by row, every row ended in values rescaled one by one, and vectors
// from the rows' unaligned starts (a row of 49 bfloat16 values is 98 bytes) crossed cache lines.
// On the AVX2 EPYC (one thread, each call's time against the row-by-row build's in the same round,
// medians of 61 rounds) at 32x2048x7x7 in place this took 0.89x the time in bfloat16, 0.88x in
// float16, 0.96x in float32; the block tail act(x * gate + identity) 0.60x / 0.93x / 0.99x, its
// training step 0.89x / 0.96x / 0.99x; at 64x512x4x4 0.81-0.96x; at 64x256x8x8 0.96-1.01x. Rows
// of kLongRow and more keep rescale_run8 or the compiler's loop: at 32x1024x14x14 (rows of 196)
// this run took 1.06x in place in float32, 0.94-1.02x in bfloat16.
template <typename scalar_t, bool kIdentity, bool kRelu, bool kShift, bool kMask>
void rescale_joined_rows8(int64_t rows, int64_t length, const scalar_t* x, const float* scale, const float* shift,
                          const scalar_t* identity, const scalar_t* relu_of, scalar_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int64_t total = rows * length;
  int64_t row = 0, row_end = length;  // the row of element i, and where it ends
  int64_t i = 0;
  for (; i + 8 <= total; i += 8) {
    __m256 g = _mm256_broadcast_ss(scale + row);
    __m256 b = kShift ? _mm256_broadcast_ss(shift + row) : zero;
    if (i + 8 >= row_end) {  // lanes i + j >= row_end belong to the next row (none when equal)
      const int64_t next = std::min(row + 1, rows - 1);
      const __m256i offsets = _mm256_add_epi32(lanes, _mm256_set1_epi32(static_cast<int32_t>(i - row_end)));
      const __m256 later = _mm256_castsi256_ps(_mm256_cmpgt_epi32(offsets, _mm256_set1_epi32(-1)));
      g = _mm256_blendv_ps(g, _mm256_broadcast_ss(scale + next), later);
      if constexpr (kShift) b = _mm256_blendv_ps(b, _mm256_broadcast_ss(shift + next), later);
      ++row;
      row_end += length;
    }
    rescale8<scalar_t, kIdentity, kRelu, kShift, kMask>(i, x, g, b, identity, relu_of, out);
  }
  const int64_t last = rows - 1;  // the values left over (fewer than eight) end the last row
  for (; i < total; ++i) {
    out[i] = rescaled<scalar_t, float, kIdentity, kRelu, kShift, kMask>(x[i], scale[last], kShift ? shift[last] : 0.0f,
                                                                         identity, relu_of, i);
  }
}
#endif

#ifdef ECANET_BFLOAT16_VECTORS
// 16 bfloat16 values widened to float32 (exact: a bfloat16 is the upper half of a float32).
inline __m512 widen_bfloat16(__mmask16 lanes, const c10::BFloat16* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(lanes, p)), 16));
}

// rescaled() over a contiguous run of bfloat16 values, 16 lanes at a time (the last run masked),
// narrowed by the hardware's round-to-nearest-even (vcvtneps2bf16; it treats denormal float32
// values, below 1.2e-38, as zero). The scale and shift are one value for the whole run
// (channels-first rows) or one per element (kPerElement: channels-last rows, one per channel).
// Used for rows of kLongRow values and more.
template <bool kIdentity, bool kRelu, bool kShift, bool kMask, bool kPerElement>
void rescale_run_bfloat16(int64_t length, const c10::BFloat16* x, const float* scale, const float* shift,
                          const c10::BFloat16* identity, const c10::BFloat16* relu_of, c10::BFloat16* out) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 g = kPerElement ? zero : _mm512_set1_ps(scale[0]);
  __m512 b = kShift && !kPerElement ? _mm512_set1_ps(shift[0]) : zero;
  for (int64_t i = 0; i < length; i += 16) {
    const int64_t left = length - i;
    const __mmask16 lanes = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
    __m512 v = widen_bfloat16(lanes, x + i);
    if constexpr (kMask) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(widen_bfloat16(lanes, relu_of + i), zero, _CMP_GT_OQ), v);
    if constexpr (kPerElement) {
      g = _mm512_maskz_loadu_ps(lanes, scale + i);
      if constexpr (kShift) b = _mm512_maskz_loadu_ps(lanes, shift + i);
    }
    v = _mm512_mul_ps(v, g);
    if constexpr (kShift) v = _mm512_add_ps(v, b);
    if constexpr (kIdentity) v = _mm512_add_ps(v, widen_bfloat16(lanes, identity + i));
    if constexpr (kRelu) v = _mm512_max_ps(v, zero);  // NaN -> 0, as `v > 0 ? v : 0`
    _mm256_mask_storeu_epi16(out + i, lanes, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  }
}
#endif

// out = rescaled(x) with scale and shift per (n, c), one pass; out may be x itself.
template <typename scalar_t, typename acc_t, bool kIdentity, bool kRelu, bool kShift, bool kMask>
void rescale_pass(const Layout& L, const scalar_t* x, const acc_t* scale, const acc_t* shift, const scalar_t* identity,
                  const scalar_t* relu_of, scalar_t* out) {
  // Every loop indexes pointers offset to its row (at_offset), so the compiler sees contiguous accesses.
  if (!L.channels_last) {
#ifdef __AVX2__
    if constexpr (kEightLanes<scalar_t, acc_t>) {
      if (L.s >= 8 && L.s < kLongRow && (L.n == 1 || L.batch_stride == L.c * L.s)) {  // rows back to back
        at::parallel_for(0, L.n * L.c, tasks_grain(L.s), [&](int64_t begin, int64_t end) {
          const int64_t base = begin * L.s;
          rescale_joined_rows8<scalar_t, kIdentity, kRelu, kShift, kMask>(
              end - begin, L.s, x + base, scale + begin, kShift ? shift + begin : nullptr, at_offset(identity, base),
              at_offset(relu_of, base), out + base);
        });
        return;
      }
    }
#endif
    at::parallel_for(0, L.n * L.c, tasks_grain(L.s), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t base = L.channels_first_row(r), length = L.s;
        const scalar_t* px = x + base;
        const scalar_t* pi = at_offset(identity, base);
        const scalar_t* pm = at_offset(relu_of, base);
        scalar_t* po = out + base;
#ifdef ECANET_BFLOAT16_VECTORS
        if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
          if (length >= kLongRow) {  // shorter rows (7x7: 49) ran 25% slower in masked vectors
            rescale_run_bfloat16<kIdentity, kRelu, kShift, kMask, false>(length, px, scale + r,
                                                                          kShift ? shift + r : nullptr, pi, pm, po);
            continue;
          }
        }
#endif
#ifdef __AVX2__
        if constexpr (kEightLaneRescale<scalar_t>) {
          rescale_run8<scalar_t, kIdentity, kRelu, kShift, kMask, false>(length, px, scale + r,
                                                                         kShift ? shift + r : nullptr, pi, pm, po);
          continue;
        }
#endif
        const acc_t g = scale[r], b = kShift ? shift[r] : acc_t(0);
#pragma omp simd
        for (int64_t i = 0; i < length; ++i) {
          po[i] = rescaled<scalar_t, acc_t, kIdentity, kRelu, kShift, kMask>(px[i], g, b, pi, pm, i);
        }
      }
    });
    return;
  }
  at::parallel_for(0, L.n * L.s, tasks_grain(L.c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t sample = r / L.s, length = L.c;
      const int64_t base = L.channels_last_row(r);
      const scalar_t* px = x + base;
      const scalar_t* pi = at_offset(identity, base);
      const scalar_t* pm = at_offset(relu_of, base);
      scalar_t* po = out + base;
      const acc_t* g = scale + sample * L.c;
      const acc_t* b = kShift ? shift + sample * L.c : g;
#ifdef ECANET_BFLOAT16_VECTORS
      if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
        if (length >= kLongRow) {
          rescale_run_bfloat16<kIdentity, kRelu, kShift, kMask, true>(length, px, g, b, pi, pm, po);
          continue;
        }
      }
#endif
#ifdef __AVX2__
      if constexpr (kEightLaneRescale<scalar_t>) {
        rescale_run8<scalar_t, kIdentity, kRelu, kShift, kMask, true>(length, px, g, b, pi, pm, po);
        continue;
      }
#endif
#pragma omp simd
      for (int64_t j = 0; j < length; ++j) {
        po[j] = rescaled<scalar_t, acc_t, kIdentity, kRelu, kShift, kMask>(px[j], g[j], b[j], pi, pm, j);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The gate on (N, C): k-tap convolution across channels, then the non-linearity.

// Index of channel c + offset after padding, or -1 for a zero pad.
inline int64_t padded_channel(int64_t c, int64_t offset, int64_t channels, Padding padding) {
  const int64_t j = c + offset;
  if (j >= 0 && j < channels) return j;
  if (padding == Padding::zeros) return -1;
  return (j % channels + channels) % channels;
}

// Calls f(c) for the channels outside [lo, hi): the at most k/2 at each end that meet the padding.
template <typename F>
inline void for_each_edge_channel(int64_t lo, int64_t hi, int64_t channels, const F& f) {
  for (int64_t c = 0; c < std::min(lo, channels); ++c) f(c);
  for (int64_t c = std::max(hi, lo); c < channels; ++c) f(c);
}

// exp(t) in float32 for t in [-87, 88] (callers clamp), within 2.6e-7 relative (4 ulp): t = n ln2
// + r with |r| <= ln2 / 2 (ln2 in two parts, so n ln2 is exact enough), e^r by its degree-6
// Taylor polynomial, 2^n from its exponent bits. Branch-free and without library calls (n is
// rounded by adding and subtracting 1.5 * 2^23), so it vectorises in a simd loop, where std::exp
// would stay a scalar call.
inline float exp_reduced(float t) {
  const float n = (t * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = (t - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float power;
  std::memcpy(&power, &bits, sizeof power);
  return p * power;
}

// The sigmoid in float32 through exp_reduced; below -87 (a gate under 1.7e-38, the smallest
// normal float) the gate is 0, so no denormal number ever reaches the rescale, and a NaN logit
// stays NaN. float64 uses std::exp.
template <typename acc_t>
inline acc_t sigmoid(acc_t z) {
  if constexpr (std::is_same_v<acc_t, float>) {
    const float g = 1.0f / (1.0f + exp_reduced(std::max(std::min(-z, 87.0f), -87.0f)));
    return z < -87.0f ? 0.0f : g;
  } else {
    return acc_t(1) / (acc_t(1) + std::exp(-z));
  }
}

// o[c] = sum_j w[j] * m[c + j - K/2] for the interior channels c in [lo, hi) of one sample, with
// the K taps in registers: one load per tap and one store per output, vectorised over c.
template <int K, typename acc_t>
inline void interior_conv(const acc_t* w, const acc_t* m, int64_t lo, int64_t hi, acc_t* o) {
  acc_t taps[K];
  for (int j = 0; j < K; ++j) taps[j] = w[j];
#pragma omp simd
  for (int64_t c = lo; c < hi; ++c) {
    acc_t z = 0;
    for (int j = 0; j < K; ++j) z += taps[j] * m[c + j - K / 2];
    o[c] = z;
  }
}

// o[c] = gate(sum_j taps[c or 0][j] * m[c + j - k/2]) for the channels c in [lo, hi) of one
// sample's means m, padded with zeros or wrapped: the interior channels (no padding involved) in
// one vectorised loop (a shared kernel of the sizes ECA uses, 1 to 9, with its taps in registers;
// other kernels tap by tap), the at most k/2 edge channels at each end one by one; then the
// non-linearity over the range while it is in L1 (a NaN logit gives a NaN gate, as in ATen: the
// clamps keep their first argument when it is NaN). Reads m[c + j - k/2] only for the channels
// in the range (and, wrapped, their neighbours across the ends).
template <typename acc_t>
void gate_channels(const acc_t* m, const acc_t* taps, int64_t rows, int64_t k, int64_t channels, Padding padding,
                   Gate gate, int64_t lo, int64_t hi, acc_t* o) {
  const int64_t half = k / 2;
  const int64_t inner_lo = std::max(lo, std::min(half, channels));
  const int64_t inner_hi = std::max(inner_lo, std::min(hi, channels - half));
  if (rows == 1 && k == 1) {
    interior_conv<1>(taps, m, inner_lo, inner_hi, o);
  } else if (rows == 1 && k == 3) {
    interior_conv<3>(taps, m, inner_lo, inner_hi, o);
  } else if (rows == 1 && k == 5) {
    interior_conv<5>(taps, m, inner_lo, inner_hi, o);
  } else if (rows == 1 && k == 7) {
    interior_conv<7>(taps, m, inner_lo, inner_hi, o);
  } else if (rows == 1 && k == 9) {
    interior_conv<9>(taps, m, inner_lo, inner_hi, o);
  } else {
    std::fill(o + inner_lo, o + inner_hi, acc_t(0));
    const int64_t row = rows == 1 ? 0 : 1;  // the tap of channel c is taps[c * row * k + j]
    for (int64_t j = 0; j < k; ++j) {
#pragma omp simd
      for (int64_t c = inner_lo; c < inner_hi; ++c) o[c] += taps[c * row * k + j] * m[c + j - half];
    }
  }
  auto edge = [&](int64_t c) {
    acc_t z = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t src = padded_channel(c, j - half, channels, padding);
      if (src >= 0) z += taps[(rows == 1 ? 0 : c) * k + j] * m[src];
    }
    o[c] = z;
  };
  for (int64_t c = lo; c < std::min(inner_lo, hi); ++c) edge(c);
  for (int64_t c = inner_hi; c < hi; ++c) edge(c);
  if (gate == Gate::sigmoid) {
#pragma omp simd
    for (int64_t c = lo; c < hi; ++c) o[c] = sigmoid(o[c]);
  } else {
#pragma omp simd
    for (int64_t c = lo; c < hi; ++c) o[c] = std::min(std::max(o[c] / acc_t(6) + acc_t(0.5), acc_t(0)), acc_t(1));
  }
}

// gates[n, c] for every sample and channel: gate_channels over each sample's row of means.
template <typename acc_t>
void channel_gate(const acc_t* mean, const acc_t* taps, int64_t rows, int64_t k, int64_t n, int64_t channels,
                  Padding padding, Gate gate, acc_t* gates) {
  at::parallel_for(0, n, tasks_grain(channels * k), [&](int64_t begin, int64_t end) {
    for (int64_t sample = begin; sample < end; ++sample) {
      gate_channels<acc_t>(mean + sample * channels, taps, rows, k, channels, padding, gate, 0, channels,
                           gates + sample * channels);
    }
  });
}

// The gate's derivative from its value: sigmoid' = g (1 - g); hard sigmoid' = 1/6 inside (-3, 3).
template <typename acc_t>
inline acc_t gate_slope(acc_t g, Gate gate) {
  if (gate == Gate::sigmoid) return g * (acc_t(1) - g);
  return g > acc_t(0) && g < acc_t(1) ? acc_t(1) / acc_t(6) : acc_t(0);
}

// d_logits -> d_mean (the transposed channel convolution) and d_taps (accumulated).
template <typename acc_t>
void channel_conv_backward(const acc_t* mean, const acc_t* d_logits, const acc_t* taps, int64_t rows, int64_t k,
                           int64_t n, int64_t channels, Padding padding, acc_t* d_mean, acc_t* d_taps) {
  const int64_t half = k / 2;
  std::fill(d_mean, d_mean + n * channels, acc_t(0));
  for (int64_t sample = 0; sample < n; ++sample) {
    const acc_t* m = mean + sample * channels;
    const acc_t* dl = d_logits + sample * channels;
    acc_t* dm = d_mean + sample * channels;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t offset = j - half;
      const int64_t lo = std::max<int64_t>(0, -offset), hi = std::min(channels, channels - offset);
      if (rows == 1) {
        const acc_t w = taps[j];
        acc_t tap_total = 0;
#pragma omp simd reduction(+ : tap_total)
        for (int64_t c = lo; c < hi; ++c) {
          dm[c + offset] += w * dl[c];
          tap_total += dl[c] * m[c + offset];
        }
        d_taps[j] += tap_total;
      } else {
        for (int64_t c = lo; c < hi; ++c) {
          dm[c + offset] += taps[c * k + j] * dl[c];
          d_taps[c * k + j] += dl[c] * m[c + offset];
        }
      }
      for_each_edge_channel(lo, hi, channels, [&](int64_t c) {
        const int64_t src = padded_channel(c, offset, channels, padding);
        if (src < 0) return;
        const int64_t row = rows == 1 ? 0 : c;
        dm[src] += taps[row * k + j] * dl[c];
        d_taps[row * k + j] += dl[c] * m[src];
      });
    }
  }
}

struct GateArgs {
  at::Tensor taps;  // (rows, k), contiguous, in the accumulation dtype
  int64_t rows, k;
  Padding padding;
  Gate gate;
};

GateArgs gate_args(const at::Tensor& weight, int64_t channels, at::ScalarType acc, const std::string& padding,
                   const std::string& gate) {
  TORCH_CHECK(weight.dim() == 3 && weight.size(1) == 1 && weight.size(2) % 2 == 1,
              "ecanet: weight must have shape [1 or C, 1, k] with k odd, got ", weight.sizes());
  TORCH_CHECK(weight.size(0) == 1 || weight.size(0) == channels, "ecanet: weight has ", weight.size(0),
              " rows for ", channels, " channels");
  const Padding pad = padding_of(padding);
  TORCH_CHECK(pad == Padding::zeros || weight.size(2) / 2 <= channels, "ecanet: circular padding needs k // 2 <= C");
  return GateArgs{weight.to(acc).contiguous().view({weight.size(0), weight.size(2)}), weight.size(0), weight.size(2),
                  pad, gate_of(gate)};
}

// ---------------------------------------------------------------------------------------------
// The two operators.

// mean[n, c] = the mean of x over S, in the accumulation type.
template <typename scalar_t, typename acc_t>
void channel_mean(const Layout& L, const scalar_t* x, acc_t* mean) {
  channel_reduce<scalar_t, acc_t, false, false, false, false>(L, {x, nullptr, nullptr, nullptr, nullptr}, mean);
  const acc_t inverse = acc_t(1) / static_cast<acc_t>(L.s);
  for (int64_t i = 0; i < L.n * L.c; ++i) mean[i] *= inverse;
}

// The per-channel mean of x over S, (N, C) in the accumulation dtype.
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

// The (N, C) mean and gates a forward fills, contiguous, in the accumulation type (no mean where the
// forward is given one).
struct Descriptors {
  at::Tensor mean, gates;
};

Descriptors new_descriptors(const Layout& L, const at::Tensor& x, bool with_mean) {
  const at::TensorOptions options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  return {with_mean ? at::empty({L.n, L.c}, options) : at::Tensor(), at::empty({L.n, L.c}, options)};
}

// Descriptors for an inference call, which nothing keeps after it: views of a buffer the calling
// thread keeps from call to call, so that the call frees no memory. Freeing a buffer next to the
// top of glibc's heap makes glibc give back (brk) whatever other code freed there before, in that
// call: on the AVX2 EPYC, in-place ECA at 32x512x28x28 bfloat16 right after timm's layer (which
// allocates and frees its 25.7 MB temporaries) took 7.2-10.1 ms whenever such a brk ran inside it
// (3.3-4.1 ms each), against 4.0-5.5 ms. Descriptors of more than kKeptDescriptorBytes in all (a
// batch of 64 at 2048 float32 channels fills them) get tensors of their own, so that no thread
// keeps more than that.
constexpr int64_t kKeptDescriptorBytes = int64_t(1) << 20;

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

// The forward on validated arguments: x and out (and identity) share the geometry L. Fills
// `into` (its mean only where none is known) and returns the mean and gates it used.
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

// Buffers at least this large get memory of their own (see fresh_like). Below glibc's largest mmap
// threshold (32 MiB) glibc's moving state decides whether a buffer page-faults: ECA's training
// step at 32x1024x14x14 float32 NCHW (a 25.7 MB input gradient), alternated with timm's layer,
// took 6241 page faults and 33-40 ms in every other call and none and 12-16 ms in the rest; from
// its own recycled mapping none and 11-18 ms in every call (AVX2 EPYC under KVM, one thread).
constexpr size_t kHugePageAdviceBytes = size_t(8) << 20;

#ifdef __linux__
// How many bytes of freed mappings are kept for reuse: ECANET_BUFFER_CACHE_MB (default 256; 0 keeps none).
size_t buffer_cache_limit() {
  static const size_t limit = [] {
    const char* text = std::getenv("ECANET_BUFFER_CACHE_MB");
    const long long megabytes = text == nullptr ? 256 : std::atoll(text);
    return megabytes > 0 ? size_t(megabytes) << 20 : size_t(0);
  }();
  return limit;
}

// Allocates every buffer as an anonymous memory mapping of its own, advised as transparent huge
// pages before anything touches it. A freed mapping is kept for the next buffer of the same size
// while the kept ones total at most buffer_cache_limit() (the oldest are unmapped first), so a
// loop that allocates the same large outputs and gradients step after step writes into memory
// that is already mapped: a fresh mapping's first write faults every page in, and the kernel
// zeroes each one, which costs about as much as the write itself.
struct HugePageAllocator final : c10::Allocator {
  struct Mapping {
    void* address;
    size_t bytes;
  };

  // Never destroyed: tensors may be freed while the process exits.
  static std::mutex& lock() {
    static auto* mutex = new std::mutex();
    return *mutex;
  }

  // Freed mappings, oldest first, and their total size; guarded by lock().
  static std::deque<Mapping>& kept() {
    static auto* mappings = new std::deque<Mapping>();
    return *mappings;
  }
  static size_t kept_bytes;

  static void release(void* context) {
    auto* mapping = static_cast<Mapping*>(context);
    const Mapping freed = *mapping;
    delete mapping;
    std::vector<Mapping> unmapped;
    {
      std::lock_guard<std::mutex> guard(lock());
      if (freed.bytes <= buffer_cache_limit()) {
        kept().push_back(freed);
        kept_bytes += freed.bytes;
        while (kept_bytes > buffer_cache_limit()) {
          unmapped.push_back(kept().front());
          kept_bytes -= kept().front().bytes;
          kept().pop_front();
        }
      } else {
        unmapped.push_back(freed);
      }
    }
    for (const Mapping& m : unmapped) munmap(m.address, m.bytes);
  }

  // A kept mapping of exactly `bytes`, the most recently freed first, or nullptr.
  static void* reuse(size_t bytes) {
    std::lock_guard<std::mutex> guard(lock());
    auto& mappings = kept();
    for (auto it = mappings.rbegin(); it != mappings.rend(); ++it) {
      if (it->bytes == bytes) {
        void* address = it->address;
        kept_bytes -= bytes;
        mappings.erase(std::next(it).base());
        return address;
      }
    }
    return nullptr;
  }

  c10::DataPtr allocate(size_t bytes) override {
    if (bytes == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
    void* address = reuse(bytes);
    if (address == nullptr) {
      address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      TORCH_CHECK(address != MAP_FAILED, "ecanet: could not map ", bytes, " bytes for a tensor");
      madvise(address, bytes, MADV_HUGEPAGE);  // a hint: where it fails or huge pages are off, nothing changes
    }
    return {address, new Mapping{address, bytes}, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
size_t HugePageAllocator::kept_bytes = 0;
#endif

// A new tensor like x for a kernel to fill (at::empty_like). On Linux a large one gets its own
// memory mapping advised as transparent huge pages, recycled when freed (see HugePageAllocator):
// its first write then faults in 2 MiB pages instead of 4 KiB ones (on the build machine, where
// transparent huge pages are "madvise", a fresh 51 MB buffer filled in 8.6 ms instead of
// 19.4 ms), or none at all.
at::Tensor fresh_like(const at::Tensor& x) {
#ifdef __linux__
  if (x.device().is_cpu() && x.nbytes() >= kHugePageAdviceBytes && x.is_non_overlapping_and_dense()) {
    static HugePageAllocator allocator;
    return at::Tensor(at::detail::empty_strided_generic(x.sizes(), x.strides(), &allocator,
                                                        c10::DispatchKeySet(c10::DispatchKey::CPU), x.scalar_type()));
  }
#endif
  return at::empty_like(x);
}

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

// ---------------------------------------------------------------------------------------------
// Training calls in one C++ step.

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// What torch.autograd.function.once_differentiable does to a backward's results when the backward
// itself is recorded (create_graph=True): they come back as aliases whose derivative raises.
torch::autograd::variable_list once_differentiable(torch::autograd::variable_list results) {
  for (at::Tensor& result : results) {
    if (result.defined()) result = result.detach().requires_grad_(true);
  }
  torch::autograd::DelayedError error(
      "ecanet: trying to differentiate twice ECA's fused backward, which has no second derivative",
      static_cast<int64_t>(results.size()));
  return error.apply(std::move(results));
}

// ECA or a block tail recorded for autograd as one C++ node around the forward and backward above.
// It saves and returns what the Python autograd Function of ecanet/ops/function.py does for the
// other backends, without Python between the engine and the kernels: on small tensors that
// Function's machinery and the checked path cost several times the kernels' own work.
struct FusedTraining : public torch::autograd::Function<FusedTraining> {
  enum Flag : int64_t { kRelu = 1, kInplace = 2, kIdentity = 4 };

  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& identity, bool relu, bool inplace,
                            const std::string& padding, const std::string& gate, int64_t channel_dim,
                            const Layout& L, const GateArgs& args) {
    const at::Tensor out = inplace ? x : fresh_like(x);
    const auto [mean, gates] = forward_on(x, L, args, identity ? &*identity : nullptr, relu, out, nullptr,
                                          new_descriptors(L, x, true));
    if (inplace) ctx->mark_dirty({x});
    // In place, x itself is gone; the output stands in for it (see eca_backward's `inplace`).
    const at::Tensor none;
    ctx->save_for_backward({inplace ? none : x, relu || inplace ? out : none, mean, gates, weight,
                            inplace && identity ? *identity : none});
    ctx->saved_data["flags"] = (relu ? kRelu : 0) | (inplace ? kInplace : 0) | (identity ? kIdentity : 0);
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["gate"] = gate;
    ctx->saved_data["channel_dim"] = channel_dim;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const int64_t flags = ctx->saved_data["flags"].toInt();
    const bool relu = flags & kRelu, inplace = flags & kInplace;
    const bool needs_x = ctx->needs_input_grad(0), needs_weight = ctx->needs_input_grad(1);
    const bool needs_identity = (flags & kIdentity) && ctx->needs_input_grad(2);
    const bool recorded = at::GradMode::is_enabled() && grads[0].requires_grad();
    torch::autograd::variable_list results(10);  // one per argument of forward; the rest stay undefined
    {
      const at::NoGradGuard no_grad;
      const at::Tensor& like = saved[0].defined() ? saved[0] : saved[1];
      const at::Tensor grad = same_geometry(grads[0], like) ? grads[0] : fresh_like(like).copy_(grads[0]);
      // The shortcut's gradient is the ReLU-masked output gradient: stored only when wanted.
      const at::Tensor masked = relu && needs_identity ? fresh_like(like) : at::Tensor();
      const at::Tensor dx = needs_x ? fresh_like(like) : at::Tensor();
      const at::Tensor d_weight =
          eca_backward(grad, like, relu ? defined_or_none(saved[1]) : std::nullopt, saved[2], saved[3], saved[4],
                       ctx->saved_data["padding"].toStringRef(), ctx->saved_data["gate"].toStringRef(), inplace,
                       defined_or_none(saved[5]), defined_or_none(masked), defined_or_none(dx),
                       ctx->saved_data["channel_dim"].toInt());
      results[0] = dx;
      if (needs_weight) results[1] = d_weight;
      if (needs_identity) results[2] = relu ? masked : grad;
    }
    return recorded ? once_differentiable(std::move(results)) : results;
  }
};

// ECA or a block tail while autograd records, straight from the N-D tensors: the Python layer's
// common training call in one C++ step (ecanet/ops/dispatch.py, eager_call), recorded as one
// FusedTraining node. Returns the result, or nothing wherever the checked Python path must run
// instead: as for eca_inference, and where a write into x needs autograd's own checks (x a leaf,
// a view or an inference tensor). As that path does, a block tail writes into x only when x's
// memory is its own (not the shortcut's), else into a new tensor, and a descriptor of the right
// shape is not used (the backward needs the pooling of x itself).
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
  const bool leaf_with_grad = x.is_leaf() && x.requires_grad();
  if (inplace && identity && (leaf_with_grad || x.is_view() || identity->storage().data() == x.storage().data())) {
    inplace = false;
  } else if (inplace && (leaf_with_grad || x.is_view())) {
    return std::nullopt;
  }
  // A descriptor of the right shape is not needed: the pooling runs anyway.
  const std::optional<OneStepCall> call =
      one_step_call(x, weight, identity, descriptor, padding, gate, channel_dim, channels);
  if (!call) return std::nullopt;
  return FusedTraining::apply(x, weight, identity, relu, inplace, padding, gate, channel_dim, call->layout, call->gate);
}

}  // namespace

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
}
