// cpu_spectra.cpp: the input→output Jacobian of K MLPs, per sample, and its accumulated Gram.
//
// For a sample x with forward pass Z_l = A_{l-1} W_lᵀ + b_l, A_l = φ(Z_l) (A_0 = x), the Jacobian
// of the outputs f(x) = Z_L with respect to the input is
//     J(x) = W_L D_{L-1} W_{L-1} ⋯ D_1 W_1                      [C, n0],  D_l = diag φ'(Z_l).
// It is built from the output side as one GEMM per layer for a block of b samples at once:
//     M_{L-1} = W_L ⊙ φ'(Z_{L-1})  (row i of sample s scaled column-wise)     [b·C, n_{L-1}]
//     M_{l-1} = (M_l W_l) ⊙ φ'(Z_{l-1})                                        [b·C, n_{l-1}]
//     J      = M_1 W_1                                                          [b·C, n0]
// so there is no backward pass per class (the draft method's C backward passes become one
// [b·C, n_1] × [n_1, n0] product). For C-class outputs and N samples, stacking the J(x_i)
// flattened as rows gives 𝒥 [N, C·n0]; jacobian_gram accumulates 𝒥ᵀ𝒥 = Σ_i vec J_i vec J_iᵀ
// block by block with a SYRK into [C·n0, C·n0], so 𝒥 is never held whole.
//
// φ' comes from ft_math.h (act_eval), the same per-element math as every other kernel.
// Threads: the work of one model is a few large GEMMs, so they run one model at a time with
// OpenBLAS's own threads (o.threads), restored to 1 afterwards (the core's convention).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "ft_blas.h"
#include "ft_math.h"

namespace ft {
namespace cpu {
namespace {

struct BlasThreads {
  explicit BlasThreads(int n) { blas::set_threads(std::max(1, n)); }
  ~BlasThreads() { blas::set_threads(1); }
};

// J of rows r0 .. r0+b-1 for model k, written to J [b, C, n0]. work: scratch buffers.
template <class T>
void jacobian_block(const Net& net, const T* th, const T* X, int b, T* J,
                    std::vector<std::vector<T>>& A, std::vector<std::vector<T>>& D,
                    std::vector<T>& M0, std::vector<T>& M1) {
  const int L = net.L();
  const int C = net.n[L];
  const int n0 = net.n[0];
  if (L == 1) {   // a linear model: J(x) = W_1 for every x
    const T* W = th + net.offW[1];
    for (int s = 0; s < b; ++s) std::memcpy(J + size_t(s) * C * n0, W, sizeof(T) * size_t(C) * n0);
    return;
  }
  // forward: A_l and D_l = φ'(Z_l) for the hidden layers l = 1..L-1
  const T* in = X;
  for (int l = 1; l < L; ++l) {
    const int nl = net.n[l], np = net.n[l - 1];
    A[l].resize(size_t(b) * nl);
    D[l].resize(size_t(b) * nl);
    T* Z = A[l].data();
    blas::gemm(blas::N, blas::T, b, nl, np, T(1), in, np, th + net.offW[l], np, T(0), Z, nl);
    const T* bias = th + net.offb[l];
    T* d = D[l].data();
    for (int s = 0; s < b; ++s)
      for (int j = 0; j < nl; ++j) {
        T a, d1, d2;
        act_eval(net.act, Z[size_t(s) * nl + j] + bias[j], a, d1, d2);
        Z[size_t(s) * nl + j] = a;
        d[size_t(s) * nl + j] = d1;
      }
    in = Z;
  }
  // M_{L-1} = W_L ⊙ φ'(Z_{L-1}), per sample
  {
    const int nl = net.n[L - 1];
    const T* W = th + net.offW[L];
    M0.resize(size_t(b) * C * nl);
    for (int s = 0; s < b; ++s) {
      const T* d = D[L - 1].data() + size_t(s) * nl;
      for (int c = 0; c < C; ++c) {
        T* m = M0.data() + (size_t(s) * C + c) * nl;
        const T* w = W + size_t(c) * nl;
        for (int j = 0; j < nl; ++j) m[j] = w[j] * d[j];
      }
    }
  }
  // M_{l-1} = (M_l W_l) ⊙ φ'(Z_{l-1}) for l = L-1 .. 2
  for (int l = L - 1; l >= 2; --l) {
    const int nl = net.n[l], np = net.n[l - 1];
    M1.resize(size_t(b) * C * np);
    blas::gemm(blas::N, blas::N, b * C, np, nl, T(1), M0.data(), nl, th + net.offW[l], np, T(0), M1.data(), np);
    for (int s = 0; s < b; ++s) {
      const T* d = D[l - 1].data() + size_t(s) * np;
      for (int c = 0; c < C; ++c) {
        T* m = M1.data() + (size_t(s) * C + c) * np;
        for (int j = 0; j < np; ++j) m[j] *= d[j];
      }
    }
    std::swap(M0, M1);
  }
  // J = M_1 W_1
  blas::gemm(blas::N, blas::N, b * C, n0, net.n[1], T(1), M0.data(), net.n[1], th + net.offW[1], n0, T(0), J, n0);
}

}  // namespace

template <class T>
void input_jacobian(const Net& net, int64_t K, const T* theta, const T* X, int64_t N, T* J, const Opts& o) {
  BlasThreads bt(o.threads);
  const int C = net.n.back(), n0 = net.n[0];
  const int block = 256;
  std::vector<std::vector<T>> A(net.L() + 1), D(net.L() + 1);
  std::vector<T> M0, M1;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t r0 = 0; r0 < N; r0 += block) {
      const int b = int(std::min<int64_t>(block, N - r0));
      jacobian_block(net, theta + k * net.P, X + r0 * n0, b, J + (k * N + r0) * int64_t(C) * n0, A, D, M0, M1);
    }
}

template <class T>
void jacobian_gram(const Net& net, int64_t K, const T* theta, const T* X, int64_t N, int block, T* gram,
                   const Opts& o) {
  BlasThreads bt(o.threads);
  const int C = net.n.back(), n0 = net.n[0];
  const int64_t kd = int64_t(C) * n0;
  std::vector<std::vector<T>> A(net.L() + 1), D(net.L() + 1);
  std::vector<T> M0, M1, Jb(size_t(std::min<int64_t>(block, N)) * kd);
  for (int64_t k = 0; k < K; ++k) {
    T* G = gram + k * kd * kd;
    for (int64_t r0 = 0; r0 < N; r0 += block) {
      const int b = int(std::min<int64_t>(block, N - r0));
      jacobian_block(net, theta + k * net.P, X + r0 * n0, b, Jb.data(), A, D, M0, M1);
      // upper triangle of G += Jbᵀ Jb, Jb [b, kd]
      blas::syrk(blas::T, int(kd), b, T(1), Jb.data(), int(kd), r0 == 0 ? T(0) : T(1), G, int(kd));
    }
    for (int64_t i = 0; i < kd; ++i)
      for (int64_t j = 0; j < i; ++j) G[i * kd + j] = G[j * kd + i];
  }
}

#define FT_INSTANTIATE(T)                                                                              \
  template void input_jacobian<T>(const Net&, int64_t, const T*, const T*, int64_t, T*, const Opts&); \
  template void jacobian_gram<T>(const Net&, int64_t, const T*, const T*, int64_t, int, T*, const Opts&);
FT_INSTANTIATE(float)
FT_INSTANTIATE(double)
#undef FT_INSTANTIATE

}  // namespace cpu
}  // namespace ft
