// cuda_api.h: the CUDA half of fasttrap._core, as the bindings see it.
#pragma once

namespace pybind11 {
class module_;
}

namespace ft {
namespace cuda {

// Visible CUDA devices; 0 on any driver or runtime error (no driver, no GPU, hidden GPUs).
int device_count();

// Registers the CUDA functions on the module (cuda_bindings.cpp).
void bind(pybind11::module_& m);

}  // namespace cuda
}  // namespace ft
