// The rescale pass act(x * gate + shift + identity) over a whole tensor, in any of the two layouts.

#pragma once

#include "layout.h"
#include "vectors.h"

namespace ecanet {
namespace {

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

#ifdef __AVX512F__
// Sixteen values from p on widened to float32 (exactly), and sixteen float32 values stored to p,
// rounded as narrowed() rounds; all sixteen (kWhole), or those in `lanes` (the others read as 0).
template <bool kWhole>
inline __m512 load16(__mmask16 lanes, const float* p) {
  return kWhole ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes, p);
}

template <bool kWhole>
inline void store16(__mmask16 lanes, float* p, __m512 v) {
  if constexpr (kWhole) {
    _mm512_storeu_ps(p, v);
  } else {
    _mm512_mask_storeu_ps(p, lanes, v);
  }
}

#ifdef ECANET_BFLOAT16_VECTORS
// bfloat16 is the upper half of a float32. Narrowing rounds to nearest even on the bits, a NaN
// becoming 0x7FC0, as store8 and c10::BFloat16 do. (AVX-512's vcvtneps2bf16 flushes subnormal
// results, below 1.2e-38, to zero: bit-exact results need the integer rounding, a few
// instructions per 16 values in a pass bound by memory.)
template <bool kWhole>
inline __m512 load16(__mmask16 lanes, const c10::BFloat16* p) {
  const __m256i bits = kWhole ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskz_loadu_epi16(lanes, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

template <bool kWhole>
inline void store16(__mmask16 lanes, c10::BFloat16* p, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m256i halves = _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC0)));
  if constexpr (kWhole) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), halves);
  } else {
    _mm256_mask_storeu_epi16(p, lanes, halves);
  }
}
#endif

// Whether scalar_t has sixteen-lane vectors: float32, and bfloat16 with AVX-512's bfloat16
// instructions (float16 keeps eight lanes).
template <typename scalar_t>
constexpr bool kSixteenLanes = std::is_same_v<scalar_t, float>
#ifdef ECANET_BFLOAT16_VECTORS
                               || std::is_same_v<scalar_t, c10::BFloat16>
#endif
    ;

// rescaled() for the 16 values from i on (all, or those in `lanes`), with their scales g and
// shifts b. Only a row's last values go masked: on the AVX-512 EPYC (Zen 5) masked loads and stores
// streamed from memory 4x slower (a 32x256x56x56 bfloat16 rescale 9.6 ms masked throughout, 2.3 ms
// with whole vectors).
template <typename scalar_t, bool kWhole, bool kIdentity, bool kRelu, bool kShift, bool kMask>
inline void rescale16(int64_t i, __mmask16 lanes, const scalar_t* x, __m512 g, __m512 b, const scalar_t* identity,
                      const scalar_t* relu_of, scalar_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 v = load16<kWhole>(lanes, x + i);
  if constexpr (kMask) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(load16<kWhole>(lanes, relu_of + i), zero, _CMP_GT_OQ), v);
  v = _mm512_mul_ps(v, g);
  if constexpr (kShift) v = _mm512_add_ps(v, b);
  if constexpr (kIdentity) v = _mm512_add_ps(v, load16<kWhole>(lanes, identity + i));
  if constexpr (kRelu) v = _mm512_max_ps(v, zero);  // NaN -> 0, as `v > 0 ? v : 0`
  store16<kWhole>(lanes, out + i, v);
}

#ifdef ECANET_BFLOAT16_VECTORS
// rescaled() over a contiguous run of bfloat16 values, 16 at a time (rescale16). The scale and
// shift are one value for the whole run (channels-first rows) or one per element (kPerElement:
// channels-last rows, one per channel). Used for rows of kLongRow values and more.
template <bool kIdentity, bool kRelu, bool kShift, bool kMask, bool kPerElement>
void rescale_run_bfloat16(int64_t length, const c10::BFloat16* x, const float* scale, const float* shift,
                          const c10::BFloat16* identity, const c10::BFloat16* relu_of, c10::BFloat16* out) {
  auto step = [&](auto whole, int64_t i, __mmask16 lanes) {
    constexpr bool kWhole = decltype(whole)::value;
    __m512 g = kPerElement ? load16<kWhole>(lanes, scale + i) : _mm512_set1_ps(scale[0]);
    __m512 b = _mm512_setzero_ps();
    if constexpr (kShift) b = kPerElement ? load16<kWhole>(lanes, shift + i) : _mm512_set1_ps(shift[0]);
    rescale16<c10::BFloat16, kWhole, kIdentity, kRelu, kShift, kMask>(i, lanes, x, g, b, identity, relu_of, out);
  };
  int64_t i = 0;
  for (; i + 16 <= length; i += 16) step(std::true_type(), i, __mmask16(0xFFFF));
  if (i < length) step(std::false_type(), i, __mmask16((1u << (length - i)) - 1u));
}
#endif

// rescale_joined_rows8 sixteen values at a time, for rows of 16 values and more (a vector then
// meets at most two rows; the next row's lanes take its scale by a masked blend). On the AVX-512
// EPYC (Zen 5), one thread, rescaling 32x2048x7x7 in place (rows of 49) took 0.058 ns per value
// against 0.109 in eight lanes in float32 (ATen's mul_ by a number: 0.045), 0.072 against 0.140 in
// bfloat16; in place, ECA's layer went from 2.35x timm's speed to 2.80x.
template <typename scalar_t, bool kIdentity, bool kRelu, bool kShift, bool kMask>
void rescale_joined_rows16(int64_t rows, int64_t length, const scalar_t* x, const float* scale, const float* shift,
                           const scalar_t* identity, const scalar_t* relu_of, scalar_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  const int64_t total = rows * length;
  int64_t row = 0, row_end = length;  // the row of element i, and where it ends
  int64_t i = 0;
  for (; i + 16 <= total; i += 16) {
    __m512 g = _mm512_set1_ps(scale[row]);
    __m512 b = kShift ? _mm512_set1_ps(shift[row]) : zero;
    if (i + 16 >= row_end) {  // lanes from row_end - i on belong to the next row (none when equal)
      const int64_t next = std::min(row + 1, rows - 1);
      const __mmask16 later = static_cast<__mmask16>(0xFFFFu << (row_end - i));
      g = _mm512_mask_blend_ps(later, g, _mm512_set1_ps(scale[next]));
      if constexpr (kShift) b = _mm512_mask_blend_ps(later, b, _mm512_set1_ps(shift[next]));
      ++row;
      row_end += length;
    }
    rescale16<scalar_t, true, kIdentity, kRelu, kShift, kMask>(i, __mmask16(0xFFFF), x, g, b, identity, relu_of, out);
  }
  const int64_t last = rows - 1;  // the values left over (fewer than 16) end the last row
  for (; i < total; ++i) {
    out[i] = rescaled<scalar_t, float, kIdentity, kRelu, kShift, kMask>(x[i], scale[last], kShift ? shift[last] : 0.0f,
                                                                         identity, relu_of, i);
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
#ifdef __AVX512F__
          if constexpr (kSixteenLanes<scalar_t>) {
            if (L.s >= 16) {
              rescale_joined_rows16<scalar_t, kIdentity, kRelu, kShift, kMask>(
                  end - begin, L.s, x + base, scale + begin, kShift ? shift + begin : nullptr,
                  at_offset(identity, base), at_offset(relu_of, base), out + base);
              return;
            }
          }
#endif
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

}  // namespace
}  // namespace ecanet
