// cuda_engine.cuh: one MLP step for all K models at once on the GPU.
//
// The same four passes as the CPU engine (csrc/cpu/cpu_engine.h), with the same per-element math
// (csrc/common/ft_math.h); only the parallelisation differs. For models k = 0..K-1, A_0 = X:
//   forward    Z_l = A_{l-1} W_lᵀ + 1 b_lᵀ,  A_l = φ(Z_l),  loss and E_L = ∂ℓ/∂Z_L
//   backward   g_{W_l} = E_lᵀ A_{l-1},  g_{b_l} = 1ᵀE_l,  E_{l-1} = (E_l W_l) ⊙ φ'(Z_{l-1})
//   R-forward  R{Z_l} = R{A_{l-1}} W_lᵀ + A_{l-1} V_lᵀ + 1 c_lᵀ,  R{A_l} = φ'(Z_l) ⊙ R{Z_l}
//   R-backward R{E_{l-1}} = (R{E_l} W_l + E_l V_l) ⊙ φ' + (E_l W_l) ⊙ φ'' ⊙ R{Z_{l-1}}
//              (Hv)_{W_l} = [R{E_l}; E_l]ᵀ [A_{l-1}; R{A_{l-1}}],  (Hv)_{b_l} = 1ᵀ R{E_l}
//
// Layout: every activation-like array is "wide", [B, K·n_l], model k in columns k·n_l..(k+1)·n_l.
// Layer 1 with a shared X is ONE cuBLAS GEMM when the W_1 of all models are contiguous (the
// descent's packed store), else a strided-batched GEMM whose X stride is 0; deeper layers are
// strided-batched GEMMs over K. The layer-1 Gram trick: (X Xᵀ) E_1 for all models is one GEMM.
// cuBLAS is column-major: a row-major C = op(A) op(B) is computed as Cᵀ = op(B)ᵀ op(A)ᵀ.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ft_math.h"
#include "ft_net.h"
#include "cublas_loader.h"

namespace ft {
namespace cuda {

// ---------------------------------------------------------------- errors --------------------
inline void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ") in " + what + " at " + file + ":" +
                             std::to_string(line));
  }
}
inline void checkb(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error ") + std::to_string(s) + " in " + what +
                             " at " + file + ":" + std::to_string(line));
}
#define FT_CK(x) ::ft::cuda::check((x), #x, __FILE__, __LINE__)
#define FT_CB(x) ::ft::cuda::checkb((x), #x, __FILE__, __LINE__)
#define FT_LAUNCHED() FT_CK(cudaGetLastError())

constexpr int TPB = 256;
inline int grid_for(int64_t n) {
  const int64_t g = (n + TPB - 1) / TPB;
  return int(g < 1 ? 1 : (g > 262144 ? 262144 : g));
}
#define FT_GRID_STRIDE(q, n) \
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < (n); q += int64_t(gridDim.x) * blockDim.x)

// ---------------------------------------------------------------- context -------------------
struct Ctx {
  cudaStream_t stream = nullptr;
  cublasHandle_t h = nullptr;
};

// ---------------------------------------------------------------- GEMMs (row-major) ---------
inline cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

inline void gemm(Ctx& c, bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  FT_CB(cublas().sgemm(c.h, op(tb), op(ta), N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}
inline void gemm(Ctx& c, bool ta, bool tb, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  FT_CB(cublas().dgemm(c.h, op(tb), op(ta), N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}
inline void gemm_sb(Ctx& c, bool ta, bool tb, int M, int N, int K, float alpha, const float* A,
                    int lda, long long sA, const float* B, int ldb, long long sB, float beta,
                    float* C, int ldc, long long sC, int batch) {
  FT_CB(cublas().sgemm_sb(c.h, op(tb), op(ta), N, M, K, &alpha, B, ldb, sB, A, lda, sA, &beta, C,
                          ldc, sC, batch));
}
inline void gemm_sb(Ctx& c, bool ta, bool tb, int M, int N, int K, double alpha, const double* A,
                    int lda, long long sA, const double* B, int ldb, long long sB, double beta,
                    double* C, int ldc, long long sC, int batch) {
  FT_CB(cublas().dgemm_sb(c.h, op(tb), op(ta), N, M, K, &alpha, B, ldb, sB, A, lda, sA, &beta, C,
                          ldc, sC, batch));
}

// ---------------------------------------------------------------- parameter views -----------
// Where each model's parameters live, as device pointers (ft_net.h).
template <class T>
using LP = ParamView<T>;

// The batch: X [B, n0] shared (sX = 0) or [K, B, n0] (sX = B·n0); y [B] or [K, B].
template <class T>
struct Bat {
  const T* X = nullptr;
  long long sX = 0;
  const int64_t* y = nullptr;
  long long sy = 0;
  int B = 0;
  double norm = 1;
};

// Device workspace for K models and batch B, carved from one allocation.
template <class T>
struct DWork {
  std::vector<T*> RE, E, A, RA, F1, F2, D, RZ;
  double* loss = nullptr;   // [K]
  double* gn = nullptr;     // [K]  Σ‖g‖² (without g_{W_1} under the Gram trick)
  double* gw1 = nullptr;    // [K]  ⟨E_1, (X Xᵀ) E_1⟩
  int64_t* correct = nullptr;  // [K]
  T* gram = nullptr;        // [B, B]
  int Bc = 0;               // the batch size the arrays were carved for

  // Bytes needed (base == nullptr) or carve at base. Arrays of layer l: RE, E, A, RA, F1, F2,
  // D, RZ, each [B, K·n_l], in that order so [R{E}; E] and [A; R{A}] are stacked matrices.
  size_t carve(const Net& net, long long K, int B, char* base) {
    size_t off = 0;
    auto take = [&](size_t bytes) -> char* {
      off = (off + 255) & ~size_t(255);
      char* p = base ? base + off : nullptr;
      off += bytes;
      return p;
    };
    const int L = net.L();
    Bc = B;
    RE.assign(L + 1, nullptr); E = RE; A = RE; RA = RE; F1 = RE; F2 = RE; D = RE; RZ = RE;
    for (int l = 1; l <= L; ++l) {
      const size_t s = size_t(B) * K * net.n[l];
      T* p = reinterpret_cast<T*>(take(8 * s * sizeof(T)));
      if (p) {
        RE[l] = p; E[l] = p + s; A[l] = p + 2 * s; RA[l] = p + 3 * s;
        F1[l] = p + 4 * s; F2[l] = p + 5 * s; D[l] = p + 6 * s; RZ[l] = p + 7 * s;
      }
    }
    loss = reinterpret_cast<double*>(take(K * sizeof(double)));
    gn = reinterpret_cast<double*>(take(K * sizeof(double)));
    gw1 = reinterpret_cast<double*>(take(K * sizeof(double)));
    correct = reinterpret_cast<int64_t*>(take(K * sizeof(int64_t)));
    gram = reinterpret_cast<T*>(take(size_t(B) * B * sizeof(T)));
    return off + 256;
  }
};

// ---------------------------------------------------------------- kernels -------------------
template <int ACT, class T>
__global__ void k_bias_act(T* __restrict__ Z, T* __restrict__ F1, T* __restrict__ F2,
                           const T* __restrict__ b, long long sb, int B, int K, int n) {
  const int64_t total = int64_t(B) * K * n, row = int64_t(K) * n;
  FT_GRID_STRIDE(q, total) {
    const int64_t col = q % row;
    const int k = int(col / n), i = int(col % n);
    T a, d1, d2;
    act_eval_t<ACT>(Z[q] + b[k * sb + i], a, d1, d2);
    Z[q] = a;
    F1[q] = d1;
    if (ACT == ACT_TANH || ACT == ACT_SIGMOID) F2[q] = d2;
  }
}

// One thread per (row, model): softmax cross-entropy of the row.
template <class T>
__global__ void k_out_nll(T* __restrict__ Z, T* __restrict__ E, const T* __restrict__ b, long long sb,
                          const int64_t* __restrict__ y, long long sy, int B, int K, int C, T invB,
                          double* __restrict__ loss, int64_t* __restrict__ correct) {
  FT_GRID_STRIDE(q, int64_t(B) * K) {
    const int r = int(q / K), k = int(q % K);
    const int64_t o = int64_t(r) * K * C + int64_t(k) * C;
    T* z = Z + o;
    const T* bk = b + k * sb;
    for (int i = 0; i < C; ++i) z[i] += bk[i];
    const int64_t yy = y[k * sy + r];
    int am = 0;
    const T l = nll_row(z, C, yy, invB, z, E + o, am);
    if (loss) atomicAdd(loss + k, double(l) * double(invB));
    if (correct && am == yy) atomicAdd(reinterpret_cast<unsigned long long*>(correct + k), 1ULL);
  }
}

// One thread per (row, model): mse against one-hot targets; H = diagonal Hessian factor.
template <class T>
__global__ void k_out_mse(T* __restrict__ Z, T* __restrict__ E, T* __restrict__ H, const T* __restrict__ b,
                          long long sb, const int64_t* __restrict__ y, long long sy, int B, int K, int C,
                          int out_act, T scale, double* __restrict__ loss, int64_t* __restrict__ correct) {
  FT_GRID_STRIDE(q, int64_t(B) * K) {
    const int r = int(q / K), k = int(q % K);
    const int64_t o = int64_t(r) * K * C + int64_t(k) * C;
    const T* bk = b + k * sb;
    const int64_t yy = y[k * sy + r];
    double ls = 0;
    int am = 0;
    T best = T(0);
    for (int i = 0; i < C; ++i) {
      const T z = Z[o + i] + bk[i];
      if (i == 0 || z > best) { best = z; am = i; }
      T oo, e, h;
      ls += double(mse_elem(out_act, z, T(i == yy ? 1 : 0), scale, oo, e, h));
      Z[o + i] = oo;
      E[o + i] = e;
      H[o + i] = h;
    }
    if (loss) atomicAdd(loss + k, ls);
    if (correct && am == yy) atomicAdd(reinterpret_cast<unsigned long long*>(correct + k), 1ULL);
  }
}

template <class T>
__global__ void k_mul(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  FT_GRID_STRIDE(q, n) out[q] = a[q] * b[q];
}

template <class T>
__global__ void k_hidden_RE(T* __restrict__ tmp, const T* __restrict__ F1, const T* __restrict__ D,
                            const T* __restrict__ F2, const T* __restrict__ RZ, int64_t n) {
  FT_GRID_STRIDE(q, n) tmp[q] = hidden_RE(tmp[q], F1[q], D[q], F2[q], RZ[q]);
}

// Column sums of a wide [B, K·n] array into per-model vectors:
//   dst_k[i] = beta·dst_k[i] + Σ_r alpha_k·M[r, k·n + i]   (alpha = nullptr means 1),
// and with alpha given, alpha_k·M is written back into M (the step size folded into R{E} for
// the update GEMM that follows). A block takes 32 columns × 8 row lanes: the rows are split
// 8 ways (coalesced across the 32 columns) and the lanes reduced in shared memory, so even a
// small K keeps the GPU busy and no thread walks all B rows alone.
constexpr int CS_COLS = 32, CS_LANES = 8;
template <class T>
__global__ void k_colsum2(T* __restrict__ dst, long long sdst, T* __restrict__ M, const T* __restrict__ alpha,
                          int B, int K, int n, T beta) {
  __shared__ T part[CS_LANES][CS_COLS];
  const int64_t cols = int64_t(K) * n;
  const int64_t col = int64_t(blockIdx.x) * CS_COLS + threadIdx.x;
  T s = T(0);
  if (col < cols) {
    const T a = alpha ? alpha[col / n] : T(1);
    for (int r = threadIdx.y; r < B; r += CS_LANES) {
      T v = M[int64_t(r) * cols + col];
      if (alpha) {
        v *= a;
        M[int64_t(r) * cols + col] = v;
      }
      s += v;
    }
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    for (int j = 1; j < CS_LANES; ++j) s += part[j][threadIdx.x];
    T* d = dst + (col / n) * sdst + col % n;
    *d = (beta == T(0) ? T(0) : beta * *d) + s;
  }
}

template <class T>
void colsum(cudaStream_t st, T* dst, long long sdst, T* M, const T* alpha, int B, int K, int n, T beta) {
  const int64_t cols = int64_t(K) * n;
  const dim3 block(CS_COLS, CS_LANES);
  k_colsum2<T><<<unsigned((cols + CS_COLS - 1) / CS_COLS), block, 0, st>>>(dst, sdst, M, alpha, B, K, n, beta);
}

template <class T>
__global__ void k_add_bias(T* __restrict__ M, const T* __restrict__ c, long long sc, int B, int K, int n) {
  const int64_t row = int64_t(K) * n;
  FT_GRID_STRIDE(q, int64_t(B) * row) {
    const int64_t col = q % row;
    M[q] += c[(col / n) * sc + col % n];
  }
}

// RZ += c (per model's bias direction), and, for hidden layers, RA = F1 ⊙ RZ, in one pass.
template <class T>
__global__ void k_add_bias_mul(T* __restrict__ RZ, const T* __restrict__ c, long long sc, const T* __restrict__ F1,
                               T* __restrict__ RA, int B, int K, int n) {
  const int64_t row = int64_t(K) * n;
  FT_GRID_STRIDE(q, int64_t(B) * row) {
    const int64_t col = q % row;
    const T z = RZ[q] + c[(col / n) * sc + col % n];
    RZ[q] = z;
    if (RA) RA[q] = F1[q] * z;
  }
}

// Scales model k's columns of a wide [B, K·n] array by alpha[k].
template <class T>
__global__ void k_scale_cols(T* __restrict__ M, const T* __restrict__ alpha, int B, int K, int n) {
  const int64_t row = int64_t(K) * n;
  FT_GRID_STRIDE(q, int64_t(B) * row) M[q] *= alpha[(q % row) / n];
}

template <class T>
__global__ void k_nll_R(const T* __restrict__ P, const T* __restrict__ RZ, T* __restrict__ RE, int B,
                        int K, int C, T invB) {
  FT_GRID_STRIDE(q, int64_t(B) * K) {
    const int64_t o = (q / K) * int64_t(K) * C + (q % K) * int64_t(C);
    nll_row_R(P + o, RZ + o, C, invB, RE + o);
  }
}

// Block reduction of a double over the block's threads.
__device__ inline double block_sum(double v) {
  __shared__ double sh[TPB / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  v = (threadIdx.x < blockDim.x / 32) ? sh[lane] : 0.0;
  if (wid == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// out[k] = Σ_{q ∈ [lo, hi)} g[k·P + q]²   (one block per model)
template <class T>
__global__ void k_sqnorm(const T* __restrict__ g, long long P, long long lo, long long hi, double* out) {
  const int k = blockIdx.x;
  double s = 0;
  for (long long q = lo + threadIdx.x; q < hi; q += blockDim.x) {
    const double v = double(g[k * P + q]);
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) out[k] = s;
}

// out[k] = ⟨E_k, S_k⟩ over the model's columns of two wide [B, K·n] arrays (one block per model)
template <class T>
__global__ void k_dot_models(const T* __restrict__ E, const T* __restrict__ S, int B, int K, int n, double* out) {
  const int k = blockIdx.x;
  double s = 0;
  for (int64_t q = threadIdx.x; q < int64_t(B) * n; q += blockDim.x) {
    const int64_t o = (q / n) * int64_t(K) * n + int64_t(k) * n + q % n;
    s += double(E[o]) * double(S[o]);
  }
  s = block_sum(s);
  if (threadIdx.x == 0) out[k] = s;
}

template <class T>
__global__ void k_finish(const double* loss, const double* gn, const double* gw1, T* L, T* G, int K) {
  FT_GRID_STRIDE(k, K) {
    if (L) L[k] = T(loss[k]);
    if (G) G[k] = T(0.5 * (gn[k] + gw1[k]));
  }
}

template <class T>
__global__ void k_acc(const int64_t* correct, T* acc, double N, int K) {
  FT_GRID_STRIDE(k, K) acc[k] = T(double(correct[k]) / N);
}

// ---------------------------------------------------------------- the passes ---------------
template <class T>
void forward(Ctx& c, const Net& net, const LP<T>& P, const Bat<T>& bt, DWork<T>& w, int K,
             bool with_loss, bool with_acc) {
  const int L = net.L(), B = bt.B;
  for (int l = 1; l <= L; ++l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = K * nout, ldi = K * nin;
    T* Z = w.A[l];
    if (l == 1) {
      if (bt.sX == 0 && P.W1_contig(net))
        gemm(c, false, true, B, K * nout, nin, T(1), bt.X, nin, P.W[1], nin, T(0), Z, ldo);
      else
        gemm_sb(c, false, true, B, nout, nin, T(1), bt.X, nin, bt.sX, P.W[1], nin, P.sW[1], T(0), Z,
                ldo, nout, K);
    } else {
      gemm_sb(c, false, true, B, nout, nin, T(1), w.A[l - 1], ldi, nin, P.W[l], nin, P.sW[l], T(0),
              Z, ldo, nout, K);
    }
    const int64_t n = int64_t(B) * ldo;
    if (l < L) {
      dispatch_act(net.act, [&](auto Aa) {
        constexpr int ACT = decltype(Aa)::value;
        k_bias_act<ACT, T><<<grid_for(n), TPB, 0, c.stream>>>(Z, w.F1[l], w.F2[l], P.b[l], P.sb[l], B, K, nout);
        return 0;
      });
      FT_LAUNCHED();
    } else {
      const int rows = B * K;
      double* ls = with_loss ? w.loss : nullptr;
      int64_t* cr = with_acc ? w.correct : nullptr;
      if (net.loss == LOSS_NLL)
        k_out_nll<T><<<grid_for(rows), TPB, 0, c.stream>>>(Z, w.E[L], P.b[L], P.sb[L], bt.y, bt.sy, B, K,
                                                            nout, T(1.0 / bt.norm), ls, cr);
      else
        k_out_mse<T><<<grid_for(rows), TPB, 0, c.stream>>>(Z, w.E[L], w.F1[L], P.b[L], P.sb[L], bt.y, bt.sy,
                                                            B, K, nout, net.out_act,
                                                            T(1.0 / (bt.norm * nout)), ls, cr);
      FT_LAUNCHED();
    }
  }
}

// G (optional): where ∇L goes, g = beta·g + ∂ℓ/∂θ. skip_gW1: the Gram trick stands in for g_{W_1}.
template <class T>
void backward(Ctx& c, const Net& net, const LP<T>& P, const Bat<T>& bt, DWork<T>& w, int K,
              const LP<T>* G, T beta, bool skip_gW1) {
  const int L = net.L(), B = bt.B;
  const bool d2 = act_has_d2(net.act);
  for (int l = L; l >= 1; --l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = K * nout, ldi = K * nin;
    if (G) {
      colsum<T>(c.stream, G->b[l], G->sb[l], w.E[l], static_cast<const T*>(nullptr), B, K, nout, beta);
      FT_LAUNCHED();
      if (!(l == 1 && skip_gW1)) {
        if (l == 1)
          gemm_sb(c, true, false, nout, nin, B, T(1), w.E[1], ldo, nout, bt.X, nin, bt.sX, beta, G->W[1],
                  nin, G->sW[1], K);
        else
          gemm_sb(c, true, false, nout, nin, B, T(1), w.E[l], ldo, nout, w.A[l - 1], ldi, nin, beta,
                  G->W[l], nin, G->sW[l], K);
      }
    }
    if (l > 1) {
      T* Dst = d2 ? w.D[l - 1] : w.E[l - 1];
      gemm_sb(c, false, false, B, nin, nout, T(1), w.E[l], ldo, nout, P.W[l], nin, P.sW[l], T(0), Dst,
              ldi, nin, K);
      const int64_t n = int64_t(B) * ldi;
      k_mul<T><<<grid_for(n), TPB, 0, c.stream>>>(w.E[l - 1], Dst, w.F1[l - 1], n);
      FT_LAUNCHED();
    }
  }
}

// (X Xᵀ) E_1 into RZ_1 for all models (one GEMM) and ⟨E_1, ·⟩ per model into w.gw1.
template <class T>
void gram_S(Ctx& c, const Net& net, const Bat<T>& bt, DWork<T>& w, int K) {
  const int B = bt.B, n1 = net.n[1], ld = K * n1;
  gemm(c, false, false, B, ld, B, T(1), w.gram, B, w.E[1], ld, T(0), w.RZ[1], ld);
  k_dot_models<T><<<K, TPB, 0, c.stream>>>(w.E[1], w.RZ[1], B, K, n1, w.gw1);
  FT_LAUNCHED();
}

template <class T>
void rforward(Ctx& c, const Net& net, const LP<T>& P, const LP<T>& V, const Bat<T>& bt, DWork<T>& w,
              int K, bool gram_done) {
  const int L = net.L(), B = bt.B;
  for (int l = 1; l <= L; ++l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = K * nout, ldi = K * nin;
    T* RZ = w.RZ[l];
    if (l == 1) {
      if (!gram_done) {
        if (bt.sX == 0 && V.W1_contig(net))
          gemm(c, false, true, B, ldo, nin, T(1), bt.X, nin, V.W[1], nin, T(0), RZ, ldo);
        else
          gemm_sb(c, false, true, B, nout, nin, T(1), bt.X, nin, bt.sX, V.W[1], nin, V.sW[1], T(0), RZ,
                  ldo, nout, K);
      }
    } else {
      gemm_sb(c, false, true, B, nout, nin, T(1), w.RA[l - 1], ldi, nin, P.W[l], nin, P.sW[l], T(0), RZ,
              ldo, nout, K);
      gemm_sb(c, false, true, B, nout, nin, T(1), w.A[l - 1], ldi, nin, V.W[l], nin, V.sW[l], T(1), RZ,
              ldo, nout, K);
    }
    const int64_t n = int64_t(B) * ldo;
    k_add_bias_mul<T><<<grid_for(n), TPB, 0, c.stream>>>(RZ, V.b[l], V.sb[l], w.F1[l], l < L ? w.RA[l] : nullptr,
                                                         B, K, nout);
    FT_LAUNCHED();
  }
  const int C = net.n[L];
  if (net.loss == LOSS_NLL) {
    k_nll_R<T><<<grid_for(int64_t(B) * K), TPB, 0, c.stream>>>(w.A[L], w.RZ[L], w.RE[L], B, K, C, T(1.0 / bt.norm));
  } else {
    const int64_t n = int64_t(B) * K * C;
    k_mul<T><<<grid_for(n), TPB, 0, c.stream>>>(w.RE[L], w.F1[L], w.RZ[L], n);
  }
  FT_LAUNCHED();
}

// Out = beta·Out + Hv, or with alpha (device [K]): each model's R{E}, E scaled by alpha[k] first,
// so with Out = P, beta = 1, alpha = -lr (0 for a stopped model) this is the folded update.
template <class T>
void rbackward(Ctx& c, const Net& net, const LP<T>& P, const LP<T>& V, const Bat<T>& bt, DWork<T>& w,
               int K, const LP<T>& Out, T beta, const T* alpha) {
  const int L = net.L(), B = bt.B;
  const bool d2 = act_has_d2(net.act);
  for (int l = L; l >= 1; --l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = K * nout, ldi = K * nin;
    if (l > 1) {
      T* tmp = w.RE[l - 1];
      gemm_sb(c, false, false, B, nin, nout, T(1), w.RE[l], ldo, nout, P.W[l], nin, P.sW[l], T(0), tmp,
              ldi, nin, K);
      gemm_sb(c, false, false, B, nin, nout, T(1), w.E[l], ldo, nout, V.W[l], nin, V.sW[l], T(1), tmp,
              ldi, nin, K);
      const int64_t n = int64_t(B) * ldi;
      if (d2)
        k_hidden_RE<T><<<grid_for(n), TPB, 0, c.stream>>>(tmp, w.F1[l - 1], w.D[l - 1], w.F2[l - 1], w.RZ[l - 1], n);
      else
        k_mul<T><<<grid_for(n), TPB, 0, c.stream>>>(tmp, tmp, w.F1[l - 1], n);
      FT_LAUNCHED();
    }
    const int64_t n = int64_t(B) * ldo;
    colsum<T>(c.stream, Out.b[l], Out.sb[l], w.RE[l], alpha, B, K, nout, beta);
    if (alpha && l > 1) k_scale_cols<T><<<grid_for(n), TPB, 0, c.stream>>>(w.E[l], alpha, B, K, nout);
    FT_LAUNCHED();
    if (l == 1) {
      if (bt.sX == 0 && Out.W1_contig(net))
        gemm(c, true, false, ldo, nin, B, T(1), w.RE[1], ldo, bt.X, nin, beta, Out.W[1], nin);
      else
        gemm_sb(c, true, false, nout, nin, B, T(1), w.RE[1], ldo, nout, bt.X, nin, bt.sX, beta, Out.W[1],
                nin, Out.sW[1], K);
    } else if (B == w.Bc) {
      // [R{E}; E]ᵀ [A; R{A}]: the arrays are carved so that these are stacked [2B, K·n] matrices.
      gemm_sb(c, true, false, nout, nin, 2 * B, T(1), w.RE[l], ldo, nout, w.A[l - 1], ldi, nin, beta,
              Out.W[l], nin, Out.sW[l], K);
    } else {  // a short batch in arrays carved for a longer one: the two products apart
      gemm_sb(c, true, false, nout, nin, B, T(1), w.RE[l], ldo, nout, w.A[l - 1], ldi, nin, beta,
              Out.W[l], nin, Out.sW[l], K);
      gemm_sb(c, true, false, nout, nin, B, T(1), w.E[l], ldo, nout, w.RA[l - 1], ldi, nin, T(1),
              Out.W[l], nin, Out.sW[l], K);
    }
  }
}

}  // namespace cuda
}  // namespace ft
