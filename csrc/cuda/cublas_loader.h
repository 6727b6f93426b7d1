// cublas_loader.h: the part of cuBLAS fasttrap uses, opened at run time with dlopen.
//
// Why: the module must import on machines with no CUDA libraries (CI builds the CUDA sources
// with nvcc alone; users without a GPU install the same package), so nothing links libcublas.
// The declarations below are cuBLAS's stable C ABI (cublas_api.h, v2 interface), written out
// because a compiler-only CUDA install ships no cuBLAS headers.
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace ft {
namespace cuda {

struct cublasContext;
using cublasHandle_t = cublasContext*;
using cublasStatus_t = int;
enum cublasOperation_t : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t : int {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_PEDANTIC_MATH = 2,
  CUBLAS_TF32_TENSOR_OP_MATH = 3,
};
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;

struct Cublas {
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t) = nullptr;
  cublasStatus_t (*set_workspace)(cublasHandle_t, void*, size_t) = nullptr;  // may be absent
  cublasStatus_t (*get_version)(cublasHandle_t, int*) = nullptr;
  cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                          const float*, const float*, int, const float*, int, const float*, float*,
                          int) = nullptr;
  cublasStatus_t (*dgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                          const double*, const double*, int, const double*, int, const double*,
                          double*, int) = nullptr;
  cublasStatus_t (*sgemm_sb)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                             const float*, const float*, int, long long, const float*, int,
                             long long, const float*, float*, int, long long, int) = nullptr;
  cublasStatus_t (*dgemm_sb)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                             const double*, const double*, int, long long, const double*, int,
                             long long, const double*, double*, int, long long, int) = nullptr;
  std::string path;
};

// The loaded library; throws std::runtime_error saying what was tried if none could be opened.
const Cublas& cublas();
// Where cuBLAS was found, or "" if it has not been (successfully) loaded yet.
std::string cublas_path();
// Adds a file to try first (from Python, which knows about pip's nvidia-cublas wheels).
void cublas_hint(const std::string& path);

}  // namespace cuda
}  // namespace ft
