// Memory of its own for large outputs and gradients. Defined in buffers.cpp.

#pragma once

#include <ATen/core/Tensor.h>

namespace ecanet {

// A new tensor like x for a kernel to fill (at::empty_like). On Linux a large one gets its own
// memory mapping advised as transparent huge pages, recycled when freed (see HugePageAllocator):
// its first write then faults in 2 MiB pages instead of 4 KiB ones (on the build machine, where
// transparent huge pages are "madvise", a fresh 51 MB buffer filled in 8.6 ms instead of
// 19.4 ms), or none at all.
at::Tensor fresh_like(const at::Tensor& x);

}  // namespace ecanet
