// Sums over the positions of every (sample, channel): the pooled mean, and the backward's fused
// reduction of grad * x (with the ReLU mask).

#pragma once

#include <type_traits>
#include <vector>

#include "layout.h"
#include "vectors.h"

namespace ecanet {
namespace {

// Lanes of a long row's sum (see row_reduce).
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
// Runs of channels-first rows read side by side (channels-last positions always come in kStreams
// runs). On the AVX-512 EPYC (Zen 5) four runs of rows slowed the pooling down: one thread, 32
// samples, medians of two processes each, one run against four: bfloat16 28x28 0.84-1.07 against
// 2.20-2.31 ms, 14x14 0.41-0.48 against 0.99-1.05 ms, float32 14x14 0.90-1.14 against 1.25-1.28 ms
// (56x56 and 7x7 within the scatter), the backward's reduction alike (bfloat16 14x14 1.36 against
// 1.80 ms); channels-last positions there still took a third of the time in four runs (bfloat16
// 56x56 1.6 against 5.5 ms). AVX-512 CPUs take one run: the Xeon's committed results predate the
// runs.
#ifdef __AVX512F__
constexpr int64_t kRowStreams = 1;
#else
constexpr int64_t kRowStreams = kStreams;
#endif
// Most channels one task of a channels-last reduction sums (its accumulators: 8-16 KiB, in L1).
constexpr int64_t kMaxChannelBlock = 2048;
// Positions a float32 sum covers before it is carried on in float64. A float32 sum over millions
// of positions (a large 3-D volume's channel) drifts from the exact sum by about 1e-6 of it, 20-40x
// torch.mean's error; sums of at most this many positions stay within a few 1e-8. Maps up to
// 90x90 are one chunk, so the usual sizes run exactly as they would without chunks.
constexpr int64_t kChunk = 8192;

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

// row_reduce over rows of any length: in chunks of kChunk positions whose float32 sums add up in
// float64 (see kChunk).
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
inline acc_t chunked_row_reduce(int64_t length, const ReductionOperands<scalar_t>& row) {
  if (length <= kChunk) return row_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(length, row);
  double total = 0;
  for (int64_t start = 0; start < length; start += kChunk) {
    total += row_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(std::min(kChunk, length - start),
                                                                         row.from(start));
  }
  return static_cast<acc_t>(total);
}

// sums[r] for the channels-first rows r in [begin, end): the rows split into kRowStreams runs read
// side by side (a row from each in turn; short rows eight at a time, see eight_rows_reduce), and
// the rows left over one by one.
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
void channels_first_reduce(const Layout& L, const ReductionOperands<scalar_t>& tensors, int64_t begin, int64_t end,
                           acc_t* sums) {
  const int64_t run = (end - begin) / kRowStreams;
  auto row_of = [&](int64_t r) { return tensors.from(L.channels_first_row(r)); };
  int64_t i = 0;  // rows done in each run
#ifdef __AVX2__
  if constexpr (kEightLanes<scalar_t, acc_t>) {
    if (L.s >= 8 && L.s < kLongRow) {
      static_assert(8 % kRowStreams == 0, "eight_rows_reduce takes as many rows from every stream");
      constexpr int64_t kPerRun = 8 / kRowStreams;
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
    for (int q = 0; q < kRowStreams; ++q) {
      const int64_t r = begin + q * run + i;
      sums[r] = chunked_row_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L.s, row_of(r));
    }
  }
  for (int64_t r = begin + kRowStreams * run; r < end; ++r) {
    sums[r] = chunked_row_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L.s, row_of(r));
  }
}

// Channels per task of a channels-last reduction: a sample's rows are read in one contiguous
// sweep when all its channels fit one task (narrower blocks sweep the sample once per block,
// strided; at 32x1024x14x14 blocks of 256 took 15% longer in place), split only as far as the
// threads need tasks when there are fewer samples than threads (which happens only with more than
// kMaxChannelBlock channels: with fewer, such sums go by positions, positions_split_reduce).
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

// totals[c] = the sum of term(c, p) (see reduction_term) over the `count` channels-last positions
// p from `first` on, `stride` elements apart, for the channels c < width: four runs of positions a
// quarter of them apart read side by side, float32 sums carried on in float64 every kChunk
// positions. The totals are rounded once, to their own type (total_t).
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset, typename total_t>
void positions_reduce(const ReductionOperands<scalar_t>& first, int64_t stride, int64_t count, int64_t width,
                      total_t* totals) {
  static_assert(kStreams == 4, "the loop below reads four rows at a time");
  acc_t partial[kMaxChannelBlock];
  double carried[kMaxChannelBlock];
  const bool carry = std::is_same_v<acc_t, float> && count > kChunk;
  std::fill(partial, partial + width, acc_t(0));
  if (carry) std::fill(carried, carried + width, 0.0);
  auto carry_partial = [&] {
    for (int64_t c = 0; c < width; ++c) carried[c] += partial[c];
    std::fill(partial, partial + width, acc_t(0));
  };
  const int64_t run = count / kStreams;  // positions in each of the streams read side by side
  // Every loop indexes operands offset to its row, so the compiler sees contiguous accesses.
  for (int64_t chunk = 0; chunk < run; chunk += kChunk / kStreams) {
    for (int64_t s = chunk; s < std::min(run, chunk + kChunk / kStreams); ++s) {
      const ReductionOperands<scalar_t> rows[4] = {first.from(s * stride), first.from((s + run) * stride),
                                                   first.from((s + 2 * run) * stride),
                                                   first.from((s + 3 * run) * stride)};
      add_positions<scalar_t, acc_t, kOther, kMask, kStore, kOffset, 4>(width, rows, partial);
    }
    if (carry) carry_partial();
  }
  for (int64_t s = kStreams * run; s < count; ++s) {
    const ReductionOperands<scalar_t> row = first.from(s * stride);
    add_positions<scalar_t, acc_t, kOther, kMask, kStore, kOffset, 1>(width, &row, partial);
  }
  if (carry) {
    carry_partial();
    std::copy(carried, carried + width, totals);
  } else {
    std::copy(partial, partial + width, totals);
  }
}

// sums[n, c] for channels-last x with fewer samples than threads: each thread sums every channel
// over the positions the rescale pass gives it (the same split of the N * S positions, see
// rescale_pass), into float64 sums of its own, added up in thread order afterwards. Split by
// blocks of channels, as before, a thread in the rescale wrote lines the other core had read: ECA
// in place at 1x256x56x56 float32 took 79 us on two threads (pooling 28 us and rescale 21 us
// alone), more than on one (72 us), and in some processes 300 us; split by positions 40 us
// (1x512x28x28 41 -> 21 us, 1x2048x7x7 14 -> 11 us; Zen 5 EPYC).
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
void positions_split_reduce(const Layout& L, const ReductionOperands<scalar_t>& tensors, acc_t* sums) {
  const int64_t threads = available_threads(), sample_sums = L.n * L.c;
  thread_local std::vector<double> per_thread;  // kept from call to call: a call frees no memory
  per_thread.assign(threads * sample_sums, 0.0);
  double* const thread_sums = per_thread.data();  // the calling thread's: workers have their own per_thread
  at::parallel_for(0, L.n * L.s, tasks_grain(L.c), [&](int64_t begin, int64_t end) {
    double* mine = thread_sums + at::get_thread_num() * sample_sums;
    double totals[kMaxChannelBlock];
    for (int64_t r = begin; r < end;) {
      const int64_t sample = r / L.s, position = r % L.s, count = std::min(end - r, L.s - position);
      positions_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(
          tensors.from(L.row(sample, 0) + position * L.c), L.c, count, L.c, totals);
      for (int64_t c = 0; c < L.c; ++c) mine[sample * L.c + c] += totals[c];
      r += count;
    }
  });
  for (int64_t i = 0; i < sample_sums; ++i) {
    double total = 0.0;
    for (int64_t t = 0; t < threads; ++t) total += thread_sums[t * sample_sums + i];
    sums[i] = static_cast<acc_t>(total);
  }
}

// sums[n, c] = sum_s term(n, c, s), see reduction_term. Channels-first: tasks of whole rows of S
// contiguous elements (channels_first_reduce). Channels-last: one task per sample and block of
// channels, accumulating rows of contiguous channels, kStreams positions far apart at a time, or
// with fewer samples than threads, tasks of positions (positions_split_reduce).
template <typename scalar_t, typename acc_t, bool kOther, bool kMask, bool kStore, bool kOffset>
void channel_reduce(const Layout& L, const ReductionOperands<scalar_t>& tensors, acc_t* sums) {
  if (!L.channels_last) {
    at::parallel_for(0, L.n * L.c, tasks_grain(L.s), [&](int64_t begin, int64_t end) {
      channels_first_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L, tensors, begin, end, sums);
    });
    return;
  }
  if (L.n < available_threads() && L.c <= kMaxChannelBlock) {
    positions_split_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(L, tensors, sums);
    return;
  }
  const int64_t block = channel_block(L);
  const int64_t blocks = (L.c + block - 1) / block;
  at::parallel_for(0, L.n * blocks, tasks_grain(L.s * std::min(L.c, block)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t sample = t / blocks, c0 = (t % blocks) * block;
      positions_reduce<scalar_t, acc_t, kOther, kMask, kStore, kOffset>(
          tensors.from(L.row(sample, c0)), L.c, L.s, std::min(block, L.c - c0), sums + sample * L.c + c0);
    }
  });
}

}  // namespace
}  // namespace ecanet
