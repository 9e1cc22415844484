// Memory of its own for large outputs and gradients (declared in buffers.h): mappings advised as
// huge pages and recycled.

#include "buffers.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Allocator.h>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include <cstdlib>
#include <deque>
#include <iterator>
#include <mutex>

namespace ecanet {
namespace {

// Buffers at least this large get memory of their own (see fresh_like). Below glibc's largest mmap
// threshold (32 MiB) glibc's moving state decides whether a buffer page-faults: ECA's training
// step at 32x1024x14x14 float32 NCHW (a 25.7 MB input gradient), alternated with timm's layer,
// took 6241 page faults and 33-40 ms in every other call and none and 12-16 ms in the rest; from
// its own recycled mapping none and 11-18 ms in every call (AVX2 EPYC under KVM, one thread).
// The line was 8 MiB until the 6.4 MB bfloat16 buffers of a 32x2048x7x7 training step, from
// glibc, faulted in (1536 faults) or waited for glibc to trim its heap in a quarter of the steps
// between timm's: medians 1.28-2.54 ms over three benchmark runs, upper quartiles up to 4.15 ms,
// against 1.22-1.32 ms and 1.37 ms from mappings of their own (Zen 5 EPYC, two threads).
constexpr size_t kHugePageAdviceBytes = size_t(1) << 20;

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

}  // namespace

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

}  // namespace ecanet
