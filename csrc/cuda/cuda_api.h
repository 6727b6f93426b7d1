// cuda_api.h: the CUDA half of fasttrap._core as the (host-compiled) bindings see it.
// Pointers are device addresses passed as integers from Python (torch or CuPy memory); the
// stream is the caller's. Nothing here needs CUDA headers.
#pragma once
#include <cstdint>

#include "ft_descent.h"
#include "ft_net.h"

namespace pybind11 {
class module_;
}

namespace ft {
namespace cuda {

// Visible CUDA devices; 0 on any driver or runtime error (no driver, no GPU, hidden GPUs).
int device_count();

// dtype: 0 = float32, 1 = float64. Shapes as in cpu_kernels.h.
void api_value_and_grad(const Net& net, int dtype, int K, int B, bool per_model, uintptr_t theta, uintptr_t X,
                        uintptr_t y, uintptr_t L, uintptr_t g, uintptr_t stream, bool tf32);
void api_hvp(const Net& net, int dtype, int K, int B, bool per_model, uintptr_t theta, uintptr_t X, uintptr_t y,
             uintptr_t v, uintptr_t Hv, uintptr_t stream, bool tf32);
void api_grad_G(const Net& net, int dtype, int K, int B, bool per_model, uintptr_t theta, uintptr_t X,
                uintptr_t y, uintptr_t L, uintptr_t G, uintptr_t dG, uintptr_t stream, bool tf32);
void api_evaluate(const Net& net, int dtype, int K, int64_t N, int block, uintptr_t theta, uintptr_t X,
                  uintptr_t y, uintptr_t loss, uintptr_t acc, uintptr_t grad, uintptr_t stream, bool tf32);

struct DescentArgs : DescentSettings {   // the scalar settings: common/ft_descent.h
  const void* theta0 = nullptr;    // device [K, P]
  void* theta = nullptr;           // device [K, P] out
  const void* X = nullptr;         // device [N, n0]
  const int64_t* y = nullptr;      // device [N]
  const void* lr = nullptr;        // device [K]
  void* status = nullptr;          // device int8 [K]
  void* steps_done = nullptr;      // device int64 [K]
  void* G_first = nullptr;         // device double [K]
  void* G_last = nullptr;          // device double [K]
  void* G_trace = nullptr;         // device T [K, n_rec] (NaN-filled by the caller)
  void* snaps = nullptr;           // device T [n_snap, K, P] out: θ at the checkpoints (ft_descent.h)
  bool use_graph = true;
};
void api_inner_descent(const Net& net, int dtype, const DescentArgs& a, uintptr_t stream, bool tf32);
void synchronize(uintptr_t stream);
// Replay cached CUDA graphs for value_and_grad, hvp and grad_G of modest size (default on).
void set_graph_calls(bool on);

// Registers the CUDA functions on the module (cuda_bindings.cpp).
void bind(pybind11::module_& m);

}  // namespace cuda
}  // namespace ft
