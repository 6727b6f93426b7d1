// cuda_kernels.cu: the CUDA backend of fasttrap._core.
#include <cuda_runtime.h>

#include "cuda_api.h"

namespace ft {
namespace cuda {

int device_count() {
  int n = 0;
  // With the static runtime this returns an error, never aborts, when no driver is installed.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

}  // namespace cuda
}  // namespace ft
