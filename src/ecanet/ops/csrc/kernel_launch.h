// One compiled Triton kernel's launch from C++: its arguments packed as Triton's own launcher packs
// them, handed to the CUDA driver (cuLaunchKernel) on the current stream. Included by
// triton_training.h.
//
// Triton's launcher (Triton 3.8's backends/nvidia/driver.c) passes the driver one pointer per
// parameter, leaving out the constexprs (among them the arguments Triton specialised into
// constants, such as an integer equal to 1), each to the value in its C type (a tensor's address
// as a 64-bit device pointer, i32 as int32_t, fp32 as float, ...), then two more for the global
// and the profile scratch buffers, null for kernels that need neither (a kernel reads only the
// parameters it declares). The driver is opened with dlopen, so the extension builds and loads on
// machines without CUDA; there, launches go to a stand-in (launch_through).

#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/utils/pybind.h>

#include <dlfcn.h>

#include <cstring>
#include <string>
#include <vector>

namespace ecanet {
namespace {

// The type of one parameter a launch passes (Triton's signature type, constexprs left out).
enum class ParameterType { pointer, i32, i64, fp32, fp64 };

ParameterType parameter_type(const std::string& name) {
  if (name == "pointer") return ParameterType::pointer;
  if (name == "i32") return ParameterType::i32;
  if (name == "i64") return ParameterType::i64;
  if (name == "fp32") return ParameterType::fp32;
  if (name == "fp64") return ParameterType::fp64;
  TORCH_CHECK(false, "ecanet: a C++ launch cannot pass a kernel parameter of type ", name);
}

// The CUDA driver's entry points a launch needs, from libcuda.so.1 (loaded already by torch
// wherever CUDA runs). Declared here rather than from cuda.h: CUresult is an int, the handles are
// pointers.
struct CudaDriver {
  using LaunchKernel = int (*)(void* function, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x,
                               unsigned block_y, unsigned block_z, unsigned shared_bytes, void* stream,
                               void** parameters, void** extra);
  using GetCurrentContext = int (*)(void** context);
  using GetDevice = int (*)(int* device, int ordinal);
  using RetainPrimaryContext = int (*)(void** context, int device);
  using SetCurrentContext = int (*)(void* context);
  using GetErrorName = int (*)(int error, const char** name);

  LaunchKernel launch_kernel = nullptr;
  GetCurrentContext get_current_context = nullptr;
  GetDevice get_device = nullptr;
  RetainPrimaryContext retain_primary_context = nullptr;
  SetCurrentContext set_current_context = nullptr;
  GetErrorName get_error_name = nullptr;

  static const CudaDriver& get() {
    static const CudaDriver driver = [] {
      CudaDriver d;
      void* library = dlopen("libcuda.so.1", RTLD_LAZY);
      TORCH_CHECK(library != nullptr, "ecanet: cannot open the CUDA driver (libcuda.so.1) to launch a kernel");
      d.launch_kernel = reinterpret_cast<LaunchKernel>(dlsym(library, "cuLaunchKernel"));
      d.get_current_context = reinterpret_cast<GetCurrentContext>(dlsym(library, "cuCtxGetCurrent"));
      d.get_device = reinterpret_cast<GetDevice>(dlsym(library, "cuDeviceGet"));
      d.retain_primary_context = reinterpret_cast<RetainPrimaryContext>(dlsym(library, "cuDevicePrimaryCtxRetain"));
      d.set_current_context = reinterpret_cast<SetCurrentContext>(dlsym(library, "cuCtxSetCurrent"));
      d.get_error_name = reinterpret_cast<GetErrorName>(dlsym(library, "cuGetErrorName"));
      TORCH_CHECK(d.launch_kernel && d.get_current_context && d.get_device && d.retain_primary_context &&
                      d.set_current_context && d.get_error_name,
                  "ecanet: the CUDA driver lacks an entry point a launch needs");
      return d;
    }();
    return driver;
  }

  void check(int result, const char* what) const {
    if (result == 0) return;
    const char* name = "an unknown error";
    get_error_name(result, &name);
    TORCH_CHECK(false, "ecanet: ", what, " failed: ", name, " (CUDA driver error ", result, ")");
  }

  // Makes the primary context of `device` current where the calling thread has none (a thread
  // that has not used CUDA yet, such as a new autograd worker), as Triton's launcher does.
  void ensure_context(int device) const {
    void* context = nullptr;
    check(get_current_context(&context), "cuCtxGetCurrent");
    if (context != nullptr) return;
    int handle = 0;
    check(get_device(&handle, device), "cuDeviceGet");
    check(retain_primary_context(&context, handle), "cuDevicePrimaryCtxRetain");
    check(set_current_context(context), "cuCtxSetCurrent");
  }
};

// Where launches go: the driver, or stand-ins where there is no GPU. "python" hands each launch to
// a Python callable (tests run the kernel in Triton's interpreter on the tensors it is given);
// "nowhere" drops it after packing (the host benchmark times everything but the driver).
enum class LaunchRoute { driver, python, nowhere };

struct LaunchStandIn {
  LaunchRoute route = LaunchRoute::driver;
  pybind11::object callable;
};

LaunchStandIn& launch_stand_in() {
  // Never destroyed: a Python callable left set must not be released after the interpreter ends.
  static LaunchStandIn* const stand_in = new LaunchStandIn();
  return *stand_in;
}

// Sets where launches go (see LaunchRoute); `callable` is called for "python" as
// callable(function, programs, threads, shared_bytes, parameters: bytes, tensors: list).
void launch_through(const std::string& route, const pybind11::object& callable) {
  LaunchStandIn& stand_in = launch_stand_in();
  if (route == "driver") {
    stand_in.route = LaunchRoute::driver;
  } else if (route == "python") {
    TORCH_CHECK(PyCallable_Check(callable.ptr()), "ecanet: launch_through('python', ...) needs a callable");
    stand_in.route = LaunchRoute::python;
  } else if (route == "nowhere") {
    stand_in.route = LaunchRoute::nowhere;
  } else {
    TORCH_CHECK(false, "ecanet: launches go through 'driver', 'python' or 'nowhere', not '", route, "'");
  }
  stand_in.callable = stand_in.route == LaunchRoute::python ? callable : pybind11::object();
}

// The current CUDA stream of the device a launch runs on, as the driver takes it.
void* current_stream(const c10::Device& device) {
  const c10::impl::VirtualGuardImpl guard(device.type());
  return guard.getStream(device).native_handle();
}

// One compiled kernel's launch, planned for a geometry: the kernel, its one-dimensional grid and
// block, and its parameters after the tensors (sizes, strides, scales), already in their C types.
// run() packs the tensors' addresses in front of them.
class KernelLaunch {
 public:
  KernelLaunch(uint64_t function, int64_t programs, int64_t threads, int64_t shared_bytes,
               const std::vector<std::string>& types, const std::vector<double>& scalars)
      : function_(function), programs_(programs), threads_(threads), shared_bytes_(shared_bytes) {
    TORCH_CHECK(programs >= 0 && programs < (int64_t(1) << 31) && threads > 0 && threads <= 1024 &&
                    shared_bytes >= 0,
                "ecanet: a kernel launch needs a grid under 2^31 programs and 1 to 1024 threads per program");
    size_t scalar = 0;
    for (const std::string& name : types) {
      const ParameterType type = parameter_type(name);
      if (type == ParameterType::pointer) {
        TORCH_CHECK(scalar == 0, "ecanet: a launch's tensors come before its other parameters");
        ++tensors_;
        continue;
      }
      TORCH_CHECK(scalar < scalars.size(), "ecanet: a kernel launch needs a value for every parameter");
      values_.push_back(packed(type, scalars[scalar++]));
      sizes_.push_back(type == ParameterType::i32 || type == ParameterType::fp32 ? 4 : 8);
    }
    TORCH_CHECK(scalar == scalars.size(), "ecanet: a kernel launch got more values than parameters");
  }

  int64_t tensors() const { return tensors_; }

  // Launches the kernel on `tensors` (this launch's tensor parameters in order), on the current
  // stream of their device. A kernel with no programs launches nothing.
  void run(std::initializer_list<const at::Tensor*> tensors) const {
    TORCH_CHECK(static_cast<int64_t>(tensors.size()) == tensors_, "ecanet: a kernel launch got ",
                tensors.size(), " tensors for ", tensors_, " parameters");
    if (programs_ == 0) return;
    constexpr size_t kMostParameters = 32;
    const size_t count = tensors.size() + values_.size() + 2;  // and the two scratch pointers
    TORCH_CHECK(count <= kMostParameters, "ecanet: a kernel launch has too many parameters");
    uint64_t addresses[kMostParameters] = {};  // the tensors' addresses, then two null scratch pointers
    void* parameters[kMostParameters];
    size_t i = 0;
    for (const at::Tensor* t : tensors) {
      addresses[i] = reinterpret_cast<uint64_t>(t->data_ptr());
      parameters[i] = &addresses[i];
      ++i;
    }
    for (const uint64_t& value : values_) parameters[i++] = const_cast<uint64_t*>(&value);
    parameters[i] = &addresses[tensors.size()];
    parameters[i + 1] = &addresses[tensors.size() + 1];
    const LaunchStandIn& stand_in = launch_stand_in();
    if (stand_in.route == LaunchRoute::nowhere) return;
    if (stand_in.route == LaunchRoute::python) {
      hand_to_python(stand_in.callable, tensors, parameters, count);
      return;
    }
    // The kernel was loaded into the primary context of the tensors' device (by Triton, for the
    // prepared call, whose key fixes the device): that context must be the current one.
    const c10::Device device = (*tensors.begin())->device();
    const c10::DeviceGuard on_device(device);
    const CudaDriver& driver = CudaDriver::get();
    driver.ensure_context(device.index());
    driver.check(driver.launch_kernel(reinterpret_cast<void*>(function_), static_cast<unsigned>(programs_), 1, 1,
                                      static_cast<unsigned>(threads_), 1, 1, static_cast<unsigned>(shared_bytes_),
                                      current_stream(device), parameters, nullptr),
                 "cuLaunchKernel");
  }

 private:
  // A value in its C type, at the start of an 8-byte slot.
  static uint64_t packed(ParameterType type, double value) {
    uint64_t slot = 0;
    if (type == ParameterType::i32) {
      const int32_t v = static_cast<int32_t>(value);
      std::memcpy(&slot, &v, sizeof v);
    } else if (type == ParameterType::i64) {
      const int64_t v = static_cast<int64_t>(value);
      std::memcpy(&slot, &v, sizeof v);
    } else if (type == ParameterType::fp32) {
      const float v = static_cast<float>(value);
      std::memcpy(&slot, &v, sizeof v);
    } else {
      std::memcpy(&slot, &value, sizeof value);
    }
    return slot;
  }

  void hand_to_python(const pybind11::object& callable, std::initializer_list<const at::Tensor*> tensors,
                      void* const* parameters, size_t count) const {
    std::string bytes;
    const size_t pointers = tensors.size();
    for (size_t i = 0; i < count; ++i) {
      const bool scalar = i >= pointers && i < pointers + values_.size();
      const size_t size = scalar ? sizes_[i - pointers] : 8;
      bytes.append(static_cast<const char*>(parameters[i]), size);
    }
    pybind11::gil_scoped_acquire gil;
    pybind11::list given;
    for (const at::Tensor* t : tensors) given.append(*t);
    callable(function_, programs_, threads_, shared_bytes_, pybind11::bytes(bytes), given);
  }

  uint64_t function_;
  int64_t programs_, threads_, shared_bytes_;
  int64_t tensors_ = 0;
  std::vector<uint64_t> values_;  // the other parameters, packed
  std::vector<size_t> sizes_;     // their sizes in bytes
};

}  // namespace
}  // namespace ecanet
