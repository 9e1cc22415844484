// Narrowing to the tensors' dtypes and the machine's vector instructions, shared by the large
// passes (channel_reduce.h, rescale.h).

#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

// The machine's vector instructions (the build uses -march=native): with AVX2, the sums go in
// explicit eight-lane vectors (eight short rows at once in eight_rows_reduce, a long row's lanes
// in long_row_reduce8, eight channels of channels-last positions in add_positions), short
// channels-first rows rescale back to back as one run (rescale_joined_rows8) and other bfloat16
// and float16 rescale passes go eight values at a time (rescale_run8); on CPUs with AVX-512's
// bfloat16 instructions, rescale passes over long bfloat16 rows go sixteen values at a time.
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define ECANET_BFLOAT16_VECTORS 1
#endif

namespace ecanet {
namespace {

// Rows at least this long are long: reductions sum them in kLongRowLanes lanes (see row_reduce),
// rescales take them one by one rather than as one run (see rescale_joined_rows8).
constexpr int64_t kLongRow = 128;

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

#endif

}  // namespace
}  // namespace ecanet
