// cpu_kernels.h: the CPU entry points of fasttrap._core (raw pointers; bindings.cpp wraps them).
//
// All arrays are C-contiguous; shapes are given beside each argument. Inputs are validated in
// Python before they get here (fasttrap/_validate.py), so these functions trust their shapes.
#pragma once
#include <cstdint>

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
struct DescentArgs {
  int64_t K = 0;
  const T* theta0 = nullptr;   // [K, P]
  T* theta = nullptr;          // [K, P] out: θ* (may alias theta0)
  const T* X = nullptr;        // [N, n0] training inputs
  const int64_t* y = nullptr;  // [N]
  int64_t N = 0;
  const T* lr = nullptr;       // [K]
  int B = 128;                 // minibatch size (ignored by gd)
  int64_t steps = 0;           // max steps per model
  bool shared = true;          // all models draw the same minibatches (common random numbers)
  const uint64_t* streams = nullptr;  // [K] batch-order stream per model (streams[0] if shared)
  bool drop_last = false;
  bool full_batch = false;     // method="gd": ∇G on all N samples each step
  int eval_block = 1024;       // rows per block for full-batch passes
  double G_tol = 0;            // converged when G < G_tol
  double growth = 0;           // diverged when G > growth * G(start)
  int64_t record_every = 1;
  int64_t n_rec = 0;           // columns of G_trace
  int8_t* status = nullptr;    // [K]
  int64_t* steps_done = nullptr;  // [K]
  double* G_first = nullptr;   // [K]
  double* G_last = nullptr;    // [K]
  T* G_trace = nullptr;        // [K, n_rec], NaN where not recorded
  int64_t* progress = nullptr; // [4]
};

template <class T>
void inner_descent(const Net& net, const DescentArgs<T>& a, const Opts& o);

// Permutation of 0..N-1 for (stream, epoch): see ft_rng.h. perm [N]
void epoch_perm(uint64_t stream, uint64_t epoch, int64_t N, int32_t* perm);

}  // namespace cpu
}  // namespace ft
