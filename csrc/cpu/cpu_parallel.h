// cpu_parallel.h: how the CPU core spreads work over threads.
//
// Policy: OpenBLAS always runs single-threaded; every thread is ours. Work comes in chunks of
// models. With at least as many chunks as threads, OpenMP threads take chunks (no
// oversubscription, each model's activations stay in its core's cache). With fewer chunks than
// threads (K = 1, say) the chunks run one after another and each large GEMM is split into
// row or column blocks across the threads instead (pgemm).
// Exceptions never cross an OpenMP region: the first one is kept and rethrown afterwards.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>

#include "ft_blas.h"

namespace ft {
namespace cpu {

// Threads that pgemm may split one GEMM over, for the calling thread (1: do not split).
inline int& split_threads() {
  thread_local int n = 1;
  return n;
}

// Sets split_threads() for the lifetime of the object.
struct SplitGemm {
  int prev;
  explicit SplitGemm(int n) : prev(split_threads()) { split_threads() = std::max(1, n); }
  ~SplitGemm() { split_threads() = prev; }
};

// A GEMM, split into column (or row) blocks of C across split_threads() threads when it is
// large enough to pay for the fork, and we are not already inside a parallel region.
template <class T>
void pgemm(blas::Tr ta, blas::Tr tb, int M, int N, int K, T alpha, const T* A, int lda,
           const T* B, int ldb, T beta, T* C, int ldc) {
  const int nt = split_threads();
  if (nt <= 1 || omp_in_parallel() || double(M) * N * K < 5e5) {
    blas::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (N >= M) {
    const int nb = (N + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; ++t) {
      const int a = t * nb, b = std::min(N, a + nb);
      if (b <= a) continue;
      const T* Bp = (tb == blas::N) ? B + a : B + int64_t(a) * ldb;
      blas::gemm(ta, tb, M, b - a, K, alpha, A, lda, Bp, ldb, beta, C + a, ldc);
    }
  } else {
    const int mb = (M + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; ++t) {
      const int a = t * mb, b = std::min(M, a + mb);
      if (b <= a) continue;
      const T* Ap = (ta == blas::N) ? A + int64_t(a) * lda : A + a;
      blas::gemm(ta, tb, b - a, N, K, alpha, Ap, lda, B, ldb, beta, C + int64_t(a) * ldc, ldc);
    }
  }
}

struct ErrorBox {
  std::exception_ptr err;
  std::mutex mu;
  void capture() {
    std::lock_guard<std::mutex> g(mu);
    if (!err) err = std::current_exception();
  }
  void rethrow() {
    if (err) std::rethrow_exception(err);
  }
};

inline int chunk_size(int64_t K, int threads, int chunk_max) {
  const int64_t per_thread = (K + threads - 1) / std::max(threads, 1);
  return int(std::max<int64_t>(1, std::min<int64_t>({per_thread, chunk_max, 64})));
}

// Calls body(i) for i in [0, n) under the policy above.
template <class F>
void for_chunks(int64_t n, int threads, F&& body) {
  ErrorBox box;
  if (n >= threads && threads > 1) {
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < n; ++i) {
        try {
          body(i);
        } catch (...) {
          box.capture();
        }
      }
    }
  } else {
    SplitGemm sg(threads);
    for (int64_t i = 0; i < n; ++i) {
      try {
        body(i);
      } catch (...) {
        box.capture();
      }
    }
  }
  box.rethrow();
}

}  // namespace cpu
}  // namespace ft
