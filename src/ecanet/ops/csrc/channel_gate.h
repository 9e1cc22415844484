// The gate on the (N, C) descriptor: the k-tap convolution across channels, the non-linearity, and
// their gradients.

#pragma once

#include "layout.h"

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

namespace ecanet {

enum class Padding { zeros, circular };
enum class Gate { sigmoid, hard_sigmoid };

// The kernel's taps and the gate's options as the passes take them (see gate_args).
struct GateArgs {
  at::Tensor taps;  // (rows, k), contiguous, in the accumulation dtype
  int64_t rows, k;
  Padding padding;
  Gate gate;
};

namespace {

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

}  // namespace
}  // namespace ecanet
