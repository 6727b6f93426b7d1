// cuda_bindings.cpp: registers the CUDA entry points of fasttrap._core.
#include <pybind11/pybind11.h>

#include "cuda_api.h"

namespace py = pybind11;

namespace ft {
namespace cuda {

void bind(py::module_& m) { (void)m; }

}  // namespace cuda
}  // namespace ft
