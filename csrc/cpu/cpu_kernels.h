// cpu_kernels.h: the CPU entry points of fasttrap._core (raw pointers; module.cpp wraps them).
//
// All arrays are C-contiguous; shapes are given beside each argument. Inputs are validated in
// Python before they get here (fasttrap/ops/validate.py), so these functions trust their shapes.
#pragma once
#include <cstdint>

#include "ft_descent.h"
#include "ft_net.h"

namespace ft {
namespace cpu {

struct Opts {
  int threads = 1;  // worker threads (OpenMP); OpenBLAS runs single-threaded inside each
  int chunk = 4;    // models per chunk when the batch is shared (wide layer-1 GEMMs)
};

// Batch of the K models: shared X [B, n0], y [B], or per model X [K, B, n0], y [K, B].
template <class T>
struct Batch {
  const T* X = nullptr;
  const int64_t* y = nullptr;
  int B = 0;
  bool per_model = false;
};

// L [K], g [K, P]
template <class T>
void value_and_grad(const Net& net, int64_t K, const T* theta, const Batch<T>& b, T* L, T* g,
                    const Opts& o);

// v [K, P] -> Hv [K, P]
template <class T>
void hvp(const Net& net, int64_t K, const T* theta, const Batch<T>& b, const T* v, T* Hv,
         const Opts& o);

// L [K], G [K], dG [K, P]: the fused ∇G = H∇L step
template <class T>
void grad_G(const Net& net, int64_t K, const T* theta, const Batch<T>& b, T* L, T* G, T* dG,
            const Opts& o);

// Full-data evaluation in blocks: X [N, n0], y [N] -> loss [K], acc [K], and grad [K, P]
// (the gradient of the mean loss over all N) when grad != nullptr, and sample_sq [K, N]
// (‖∇ℓ_α‖² of every sample's own loss, see sample_grad_sq) when sample_sq != nullptr.
template <class T>
void evaluate(const Net& net, int64_t K, const T* theta, const T* X, const int64_t* y, int64_t N,
              int block, T* loss, T* acc, T* grad, const Opts& o, T* sample_sq = nullptr);

// ---- spectra (cpu_spectra.cpp) -------------------------------------------------------------
// J [K, N, C, n0]: ∂f(x_i)/∂x_i of the outputs f = Z_L for every row of X [N, n0].
template <class T>
void input_jacobian(const Net& net, int64_t K, const T* theta, const T* X, int64_t N, T* J, const Opts& o);

// gram [K, C·n0, C·n0] = Σ_i vec J_i vec J_iᵀ (𝒥ᵀ𝒥 of the stacked [N, C·n0] Jacobian), in blocks of rows.
template <class T>
void jacobian_gram(const Net& net, int64_t K, const T* theta, const T* X, int64_t N, int block, T* gram,
                   const Opts& o);

// ---- inner descent -------------------------------------------------------------------------
enum Status : int8_t {
  ST_RUNNING = 0,
  ST_CONVERGED = 1,
  ST_MAX_STEPS = 2,
  ST_DIVERGED = 3,
  ST_NONFINITE = 4,
  ST_INTERRUPTED = 5,
};

// progress [4] (int64, shared with a polling Python thread):
//   [0] steps finished, [1] model-steps finished, [2] stop request (set by Python), [3] active
template <class T>
struct DescentArgs : DescentSettings {   // the scalar settings: common/ft_descent.h
  const T* theta0 = nullptr;   // [K, P]
  T* theta = nullptr;          // [K, P] out: θ* (may alias theta0)
  const T* X = nullptr;        // [N, n0] training inputs
  const int64_t* y = nullptr;  // [N]
  const T* lr = nullptr;       // [K]
  int8_t* status = nullptr;    // [K]
  int64_t* steps_done = nullptr;  // [K]
  double* G_first = nullptr;   // [K]
  double* G_last = nullptr;    // [K]
  T* G_trace = nullptr;        // [K, n_rec], NaN where not recorded
  T* snaps = nullptr;          // [n_snap, K, P] out: θ at the checkpoints (DescentSettings::snap_steps)
};

template <class T>
void inner_descent(const Net& net, const DescentArgs<T>& a, const Opts& o);

// Permutation of 0..N-1 for (stream, epoch): see ft_rng.h. perm [N]
void epoch_perm(uint64_t stream, uint64_t epoch, int64_t N, int32_t* perm);

}  // namespace cpu
}  // namespace ft
