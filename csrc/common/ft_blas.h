// ft_blas.h: the BLAS calls of the CPU core, typed. Every matrix product of the CPU path goes
// through here to OpenBLAS (scipy-openblas32, whose symbols carry the scipy_ prefix).
// All matrices are row-major.
#pragma once
#include <cblas.h>

namespace ft {
namespace blas {

enum Tr { N = 0, T = 1 };

inline CBLAS_TRANSPOSE tr(Tr t) { return t == T ? CblasTrans : CblasNoTrans; }

// C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C
inline void gemm(Tr ta, Tr tb, int M, int Nn, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  scipy_cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), M, Nn, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(Tr ta, Tr tb, int M, int Nn, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  scipy_cblas_dgemm(CblasRowMajor, tr(ta), tr(tb), M, Nn, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// C[n,n] (upper triangle) = alpha * op(A) op(A)ᵀ + beta * C, op(A) [n, k]; trans = T: A is [k, n]
inline void syrk(Tr trans, int n, int k, float alpha, const float* A, int lda, float beta, float* C, int ldc) {
  scipy_cblas_ssyrk(CblasRowMajor, CblasUpper, tr(trans), n, k, alpha, A, lda, beta, C, ldc);
}
inline void syrk(Tr trans, int n, int k, double alpha, const double* A, int lda, double beta, double* C, int ldc) {
  scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, tr(trans), n, k, alpha, A, lda, beta, C, ldc);
}

inline void set_threads(int n) { scipy_openblas_set_num_threads(n); }
inline const char* config() { return scipy_openblas_get_config(); }

}  // namespace blas
}  // namespace ft
