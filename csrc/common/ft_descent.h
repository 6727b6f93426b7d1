// ft_descent.h: the settings of an inner-descent loop, shared by the CPU and CUDA loops.
//
// Both loops run the same algorithm: from K start points θ0, steps of θ ← θ − lr·∇G with
// ∇G = H∇L on minibatches drawn from per-(stream, epoch) permutations (ft_rng.h), each model
// stopping on its own when G < G_tol (converged), G > growth·G(start) (diverged) or G is not
// finite. Its scalar settings are filled and checked here once, so the CPU binding (module.cpp) and
// the CUDA binding (cuda/cuda_bindings.cpp) cannot drift apart; each backend adds its own arrays.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ft {

struct DescentSettings {
  int64_t K = 0;
  int64_t N = 0;                      // training rows
  int B = 128;                        // minibatch size (ignored by gd)
  int64_t steps = 0;                  // max steps per model
  bool shared = true;                 // all models draw the same minibatches (common random numbers)
  const uint64_t* streams = nullptr;  // HOST [K] batch-order stream per model (streams[0] if shared)
  bool drop_last = false;
  bool full_batch = false;            // method="gd": ∇G on all N samples each step
  int eval_block = 1024;              // rows per block for full-batch passes
  double G_tol = 0;                   // converged when G < G_tol
  double growth = 0;                  // diverged when G > growth * G(start)
  int64_t record_every = 1;
  int64_t n_rec = 1;                  // columns of G_trace
  int64_t* progress = nullptr;        // HOST [4]: steps begun, model-steps executed, stop flag, models active
  // Checkpoints: θ after snap_steps[j] updates (strictly increasing, in [1, steps]) is copied to
  // snaps[j] [K, P] of each backend's args, at no extra descent. A model that stopped earlier
  // gives its endpoint; one still running when the loop was interrupted before that step, NaN.
  const int64_t* snap_steps = nullptr;  // HOST [n_snap]
  int64_t n_snap = 0;
};

// Checks and sets the checkpoint steps (std::invalid_argument naming the argument).
inline void fill_snapshots(DescentSettings& s, const int64_t* snap_steps, int64_t n_snap) {
  for (int64_t j = 0; j < n_snap; ++j) {
    if (snap_steps[j] < 1 || snap_steps[j] > s.steps)
      throw std::invalid_argument("snap_steps: each must lie in [1, steps]");
    if (j > 0 && snap_steps[j] <= snap_steps[j - 1])
      throw std::invalid_argument("snap_steps: must be strictly increasing");
  }
  s.snap_steps = n_snap > 0 ? snap_steps : nullptr;
  s.n_snap = n_snap;
}

// Checks the scalar settings (std::invalid_argument naming the argument) and fills s.
inline void fill_descent_settings(DescentSettings& s, int64_t K, int64_t N, int batch_size, int64_t steps,
                                  bool shared, const uint64_t* streams, bool drop_last, bool full_batch,
                                  int eval_block, double G_tol, double growth, int64_t record_every,
                                  int64_t* progress) {
  auto bad = [](const std::string& m) { throw std::invalid_argument(m); };
  if (K < 1) bad("theta0: K must be >= 1");
  if (N < 1) bad("X: needs at least one row");
  if (batch_size < 1) bad("batch_size: must be >= 1");
  if (!full_batch && batch_size > N) bad("batch_size: larger than the data set");
  if (drop_last && N / batch_size < 1) bad("batch_size: drop_last leaves no batch");
  if (steps < 0) bad("steps: must be >= 0");
  if (record_every < 1) bad("record_every: must be >= 1");
  if (eval_block < 1) bad("eval_block: must be >= 1");
  s.K = K;
  s.N = N;
  s.B = batch_size;
  s.steps = steps;
  s.shared = shared;
  s.streams = streams;
  s.drop_last = drop_last;
  s.full_batch = full_batch;
  s.eval_block = eval_block;
  s.G_tol = G_tol;
  s.growth = growth;
  s.record_every = record_every;
  s.n_rec = std::max<int64_t>(1, (steps + record_every - 1) / record_every);
  s.progress = progress;
}

// Publishes a finished step to the Python-side progress counters (relaxed atomics: Python only
// reads them for the bar): steps begun, model-steps executed (+= executed), models still active.
// Returns true when Python asked the loop to stop (Ctrl-C).
inline bool report_step(int64_t* progress, int64_t steps_begun, int64_t executed, int64_t active) {
  if (progress == nullptr) return false;
  __atomic_store_n(&progress[0], steps_begun, __ATOMIC_RELAXED);
  __atomic_store_n(&progress[1], __atomic_load_n(&progress[1], __ATOMIC_RELAXED) + executed, __ATOMIC_RELAXED);
  __atomic_store_n(&progress[3], active, __ATOMIC_RELAXED);
  return __atomic_load_n(&progress[2], __ATOMIC_RELAXED) != 0;
}

}  // namespace ft
