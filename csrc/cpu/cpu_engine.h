// cpu_engine.h: one MLP step for a chunk of c models on the CPU, in four passes.
//
// For models j = 0..c-1 of a chunk (DESIGN §2.2), with A_0 = X:
//   forward    Z_l = A_{l-1} W_lᵀ + 1 b_lᵀ,  A_l = φ(Z_l),  loss ℓ and E_L = ∂ℓ/∂Z_L
//   backward   g_{W_l} = E_lᵀ A_{l-1},  g_{b_l} = 1ᵀE_l,  E_{l-1} = (E_l W_l) ⊙ φ'(Z_{l-1})
//   R-forward  R{Z_l} = R{A_{l-1}} W_lᵀ + A_{l-1} V_lᵀ + 1 c_lᵀ,  R{A_l} = φ'(Z_l) ⊙ R{Z_l}
//   R-backward R{E_{l-1}} = (R{E_l} W_l + E_l V_l) ⊙ φ' + (E_l W_l) ⊙ φ'' ⊙ R{Z_{l-1}}
//              (Hv)_{W_l} = R{E_l}ᵀ A_{l-1} + E_lᵀ R{A_{l-1}},  (Hv)_{b_l} = 1ᵀ R{E_l}
// With V = ∇L this is ∇G = H∇L and G = ½‖∇L‖².
//
// Why a chunk: activations of the c models sit side by side, [B, c·n_l] with model j in columns
// j·n_l .. (j+1)·n_l, so that when the models share their input X, layer 1 of all of them is ONE
// GEMM (X · [W_1^(1) … W_1^(c)]ᵀ, and [R{E_1}^(1) … R{E_1}^(c)]ᵀ X for the update), and
// the elementwise passes run over long contiguous rows. Deeper layers are per-model GEMMs.
//
// The Gram trick (layer 1, V = ∇L): A_0 V_1ᵀ = X Xᵀ E_1 and ‖g_{W_1}‖² = ⟨E_1, X Xᵀ E_1⟩, with
// X Xᵀ [B, B] computed once per batch for every model, so g_{W_1} is never formed and two of the
// four n_0-wide GEMMs of layer 1 disappear. The caller decides by a cost model (use_gram()).
//
// Every matrix product is a BLAS call (ft_blas.h, through pgemm); what is written here is
// elementwise.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ft_blas.h"
#include "ft_math.h"
#include "ft_net.h"
#include "cpu_parallel.h"

namespace ft {
namespace cpu {

constexpr blas::Tr NT = blas::N;
constexpr blas::Tr TT = blas::T;

// Where each model's parameters live (ft_net.h).
template <class T>
using Params = ParamView<T>;

// Chunk of c models: global index of the first one in the parameter arrays, and the batch.
template <class T>
struct Chunk {
  int c = 1;
  int64_t k0 = 0;           // index of model j=0 in P (the weights)
  int B = 0;                // rows in this batch
  double norm = 0;          // the loss is a mean over `norm` samples (B for a batch)
  bool shared = true;       // all models see X[0] (wide layer-1 GEMMs allowed)
  const T* X[64];           // [B, n0] per model (all equal when shared)
  const int64_t* y[64];     // [B] per model
};
constexpr int kMaxChunk = 64;

// Per-thread workspace: per layer l the arrays [B, c·n_l].
template <class T>
struct Work {
  int c = 0, Bmax = 0, L = 0;
  std::vector<T> buf;
  std::vector<T*> A, F1, F2, D, E, RZ, RA, RE;
  std::vector<T> g;          // c × P: ∇L of the chunk's models (V of grad_G)
  std::vector<T> xb;         // B × n0 gathered batch (independent batches)
  std::vector<T> gram;       // B × B
  std::vector<int64_t> yb;   // B
  std::vector<T> colsum;     // max width: bias sums

  // Carves the arrays for exactly (c_, B_): the buffer only grows, the pointers are laid out
  // afresh, so each array is [B_, c_·n_l] with no gaps.
  void ensure(const Net& net, int c_, int B_, bool need_g, bool need_x) {
    L = net.L();
    c = c_;
    Bmax = B_;
    size_t per = 0;
    for (int l = 1; l <= L; ++l) per += size_t(B_) * c_ * net.n[l];
    if (buf.size() < per * 8) buf.assign(per * 8, T(0));
    A.assign(L + 1, nullptr); F1 = A; F2 = A; D = A; E = A; RZ = A; RA = A; RE = A;
    T* p = buf.data();
    // RE_l directly above E_l and A_l directly above RA_l, each [B, c·n_l] with the same
    // leading dimension: then [R{E}; E] and [A; R{A}] are single [2B, c·n_l] matrices and
    // (Hv)_W = R{E}ᵀA + EᵀR{A} = [R{E}; E]ᵀ[A; R{A}] is ONE GEMM with k = 2B.
    for (int l = 1; l <= L; ++l) {
      const size_t s = size_t(B_) * c_ * net.n[l];
      RE[l] = p; p += s; E[l] = p; p += s; A[l] = p; p += s; RA[l] = p; p += s;
      F1[l] = p; p += s; F2[l] = p; p += s; D[l] = p; p += s; RZ[l] = p; p += s;
    }
    int wmax = 0;
    for (int x : net.n) wmax = std::max(wmax, x);
    if (colsum.size() < size_t(wmax)) colsum.assign(wmax, T(0));
    if (need_g && g.size() < size_t(c_) * net.P) g.assign(size_t(c_) * net.P, T(0));
    if (need_x) {
      if (xb.size() < size_t(B_) * net.n[0]) xb.assign(size_t(B_) * net.n[0], T(0));
      if (gram.size() < size_t(B_) * B_) gram.assign(size_t(B_) * B_, T(0));
      if (yb.size() < size_t(B_)) yb.assign(B_, 0);
    }
  }
};

using ft::use_gram;

// X Xᵀ into G [B, B]: one GEMM (only its column block [c0, c1) when split across threads).
template <class T>
void gram_cols(const T* X, int B, int n0, T* G, int c0, int c1) {
  if (c1 <= c0) return;
  pgemm(NT, TT, B, c1 - c0, n0, T(1), X, n0, X + int64_t(c0) * n0, n0, T(0), G + c0, B);
}

// ---------------------------------------------------------------- forward -------------------
// Fills A_l (activations; for l = L the softmax P or the mse output o), F1 = φ', F2 = φ'',
// E_L, and for mse F1[L] = the diagonal Hessian factor h. loss[j] += this chunk's loss term,
// correct[j] += number of rows whose argmax equals the label (if correct != nullptr).
template <class T>
void forward(const Net& net, const Params<T>& P, const Chunk<T>& ch, Work<T>& w, double* loss,
             int64_t* correct) {
  const int L = net.L(), c = ch.c, B = ch.B;
  for (int l = 1; l <= L; ++l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = c * nout, ldi = c * nin;
    T* Z = w.A[l];
    if (l == 1 && ch.shared && c > 1 && P.W1_contig(net)) {
      pgemm(NT, TT, B, c * nout, nin, T(1), ch.X[0], nin, P.Wk(1, ch.k0), nin, T(0), Z, ldo);
    } else {
      for (int j = 0; j < c; ++j) {
        const T* Ain = (l == 1) ? ch.X[j] : w.A[l - 1] + j * nin;
        pgemm(NT, TT, B, nout, nin, T(1), Ain, (l == 1) ? nin : ldi, P.Wk(l, ch.k0 + j), nin, T(0),
             Z + j * nout, ldo);
      }
    }
    if (l < L) {
      T* F1 = w.F1[l];
      T* F2 = w.F2[l];
      dispatch_act(net.act, [&](auto A) {
        constexpr int ACT = decltype(A)::value;
        for (int r = 0; r < B; ++r) {
          for (int j = 0; j < c; ++j) {
            const T* bj = P.bk(l, ch.k0 + j);
            const int64_t o = int64_t(r) * ldo + j * nout;
            T* __restrict z = Z + o;
            T* __restrict f1 = F1 + o;
            T* __restrict f2 = F2 + o;
            if constexpr (ACT == ACT_TANH || ACT == ACT_SIGMOID) {
              for (int i = 0; i < nout; ++i) act_eval_t<ACT>(z[i] + bj[i], z[i], f1[i], f2[i]);
            } else {
              T dummy;
#pragma omp simd
              for (int i = 0; i < nout; ++i) act_eval_t<ACT>(z[i] + bj[i], z[i], f1[i], dummy);
            }
          }
        }
        return 0;
      });
    } else {
      const int C = nout;
      T* E = w.E[L];
      T* H = w.F1[L];
      const T invB = T(1.0 / ch.norm);
      const T scale = T(1.0 / (ch.norm * C));
      for (int j = 0; j < c; ++j) {
        const T* bj = P.bk(L, ch.k0 + j);
        const int64_t* yj = ch.y[j];
        double lsum = 0;
        int64_t hits = 0;
        for (int r = 0; r < B; ++r) {
          const int64_t o = int64_t(r) * ldo + j * nout;
          T* z = Z + o;
          for (int i = 0; i < C; ++i) z[i] += bj[i];
          int am = 0;
          if (net.loss == LOSS_NLL) {
            lsum += double(nll_row(z, C, yj[r], invB, z, E + o, am)) * double(invB);
          } else {
            for (int i = 1; i < C; ++i)
              if (z[i] > z[am]) am = i;
            for (int i = 0; i < C; ++i) {
              T oo, e, h;
              lsum += double(mse_elem(net.out_act, z[i], T(i == yj[r] ? 1 : 0), scale, oo, e, h));
              z[i] = oo;
              E[o + i] = e;
              H[o + i] = h;
            }
          }
          hits += (am == yj[r]);
        }
        if (loss) loss[j] += lsum;
        if (correct) correct[j] += hits;
      }
    }
  }
}

// ---------------------------------------------------------------- backward ------------------
// Propagates E_l down to layer 1 (keeping D_l = E_{l+1} W_{l+1} when φ'' ≠ 0) and, if G is
// given, writes ∇L of model j at G-index gk0+j, scaled: g = beta·g + (∂ℓ/∂θ).
// skip_gW1: do not form g_{W_1} (the Gram trick stands in for it).
template <class T>
void backward(const Net& net, const Params<T>& P, const Chunk<T>& ch, Work<T>& w,
              const Params<T>* G, int64_t gk0, T beta, bool skip_gW1) {
  const int L = net.L(), c = ch.c, B = ch.B;
  const bool d2 = act_has_d2(net.act);
  for (int l = L; l >= 1; --l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = c * nout, ldi = c * nin;
    const T* E = w.E[l];
    if (G) {
      for (int j = 0; j < c; ++j) {
        T* __restrict gb = G->bk(l, gk0 + j);
        if (beta == T(0)) std::fill(gb, gb + nout, T(0));
        for (int r = 0; r < B; ++r) {
          const T* __restrict er = E + int64_t(r) * ldo + j * nout;
#pragma omp simd
          for (int i = 0; i < nout; ++i) gb[i] += er[i];
        }
      }
      if (!(l == 1 && skip_gW1)) {
        if (l == 1 && ch.shared && c > 1 && G->W1_contig(net)) {
          pgemm(TT, NT, c * nout, nin, B, T(1), E, ldo, ch.X[0], nin, beta, G->Wk(1, gk0), nin);
        } else {
          for (int j = 0; j < c; ++j) {
            const T* Ain = (l == 1) ? ch.X[j] : w.A[l - 1] + j * nin;
            pgemm(TT, NT, nout, nin, B, T(1), E + j * nout, ldo, Ain, (l == 1) ? nin : ldi, beta,
                 G->Wk(l, gk0 + j), nin);
          }
        }
      }
    }
    if (l > 1) {
      T* Dst = d2 ? w.D[l - 1] : w.E[l - 1];
      for (int j = 0; j < c; ++j)
        pgemm(NT, NT, B, nin, nout, T(1), E + j * nout, ldo, P.Wk(l, ch.k0 + j), nin, T(0),
             Dst + j * nin, ldi);
      const int64_t n = int64_t(B) * ldi;
      T* En = w.E[l - 1];
      const T* F1 = w.F1[l - 1];
#pragma omp simd
      for (int64_t q = 0; q < n; ++q) En[q] = Dst[q] * F1[q];
    }
  }
}

// Per-sample squared gradient norms of a ONE-model chunk, after forward() and backward():
// out[r] = ‖∂ℓ_r/∂θ‖², where the loss is L = (1/norm) Σ_r ℓ_r.
// Why no per-sample gradient is ever formed: the per-sample gradient of a dense layer is the
// outer product e_r a_rᵀ (plus e_r for the bias), whose squared Frobenius norm factorises,
//   ‖∂ℓ_r/∂W_l‖² + ‖∂ℓ_r/∂b_l‖² = (‖a_{l-1,r}‖² + 1) · ‖e_{l,r}‖²,
// so the cost is O(B Σ n_l) on top of the pass, instead of O(B P). E_l holds ∂L/∂Z_l, which is
// e/norm, hence the factor norm². Row sums run in T with SIMD lanes (a row is at most a layer
// wide, so float32 keeps ~1e-6 relative); the products and the sum over layers in double.
template <class T>
void sample_grad_sq(const Net& net, const Chunk<T>& ch, const Work<T>& w, T* out) {
  const int L = net.L(), B = ch.B;
  const double s2 = ch.norm * ch.norm;
  for (int r = 0; r < B; ++r) {
    double acc = 0;
    for (int l = 1; l <= L; ++l) {
      const int nin = net.n[l - 1], nout = net.n[l];
      const T* a = (l == 1) ? ch.X[0] + int64_t(r) * nin : w.A[l - 1] + int64_t(r) * nin;
      const T* e = w.E[l] + int64_t(r) * nout;
      T a2 = T(0), e2 = T(0);
#pragma omp simd reduction(+ : a2)
      for (int i = 0; i < nin; ++i) a2 += a[i] * a[i];
#pragma omp simd reduction(+ : e2)
      for (int i = 0; i < nout; ++i) e2 += e[i] * e[i];
      acc += (double(a2) + 1.0) * double(e2);
    }
    out[r] = T(acc * s2);
  }
}

// Σ over the chunk-model's ∇L of ‖·‖², skipping g_{W_1} when skip_gW1 (see backward()).
template <class T>
double grad_norm2(const Net& net, const Params<T>& G, int64_t k, bool skip_gW1) {
  double s = 0;
  for (int l = 1; l <= net.L(); ++l) {
    if (!(l == 1 && skip_gW1)) {
      const T* g = G.Wk(l, k);
      const int64_t n = int64_t(net.n[l]) * net.n[l - 1];
#pragma omp simd reduction(+ : s)
      for (int64_t q = 0; q < n; ++q) s += double(g[q]) * double(g[q]);
    }
    const T* gb = G.bk(l, k);
    for (int i = 0; i < net.n[l]; ++i) s += double(gb[i]) * double(gb[i]);
  }
  return s;
}

// S = (X Xᵀ) E_1 for the whole chunk, written into RZ_1 (R-forward then adds c_1), and
// returns per model ⟨E_1, S⟩ = ‖g_{W_1}‖² in gw1sq[j].
template <class T>
void gram_S(const Net& net, const Chunk<T>& ch, Work<T>& w, const T* Gram, double* gw1sq) {
  const int c = ch.c, B = ch.B, n1 = net.n[1], ld = c * n1;
  pgemm(NT, NT, B, ld, B, T(1), Gram, B, w.E[1], ld, T(0), w.RZ[1], ld);
  for (int j = 0; j < c; ++j) {
    double s = 0;
    for (int r = 0; r < B; ++r) {
      const T* e = w.E[1] + int64_t(r) * ld + j * n1;
      const T* q = w.RZ[1] + int64_t(r) * ld + j * n1;
#pragma omp simd reduction(+ : s)
      for (int i = 0; i < n1; ++i) s += double(e[i]) * double(q[i]);
    }
    gw1sq[j] = s;
  }
}

// ---------------------------------------------------------------- R-forward -----------------
// Direction V (model j at V-index vk0+j). gram_done: RZ_1 already holds X V_1ᵀ (= (XXᵀ)E_1).
template <class T>
void rforward(const Net& net, const Params<T>& P, const Params<T>& V, int64_t vk0,
              const Chunk<T>& ch, Work<T>& w, bool gram_done) {
  const int L = net.L(), c = ch.c, B = ch.B;
  for (int l = 1; l <= L; ++l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = c * nout, ldi = c * nin;
    T* RZ = w.RZ[l];
    if (l == 1) {
      if (!gram_done) {
        if (ch.shared && c > 1 && V.W1_contig(net)) {
          pgemm(NT, TT, B, ldo, nin, T(1), ch.X[0], nin, V.Wk(1, vk0), nin, T(0), RZ, ldo);
        } else {
          for (int j = 0; j < c; ++j)
            pgemm(NT, TT, B, nout, nin, T(1), ch.X[j], nin, V.Wk(1, vk0 + j), nin, T(0),
                 RZ + j * nout, ldo);
        }
      }
    } else {
      for (int j = 0; j < c; ++j) {
        pgemm(NT, TT, B, nout, nin, T(1), w.RA[l - 1] + j * nin, ldi, P.Wk(l, ch.k0 + j), nin,
             T(0), RZ + j * nout, ldo);
        pgemm(NT, TT, B, nout, nin, T(1), w.A[l - 1] + j * nin, ldi, V.Wk(l, vk0 + j), nin, T(1),
             RZ + j * nout, ldo);
      }
    }
    for (int r = 0; r < B; ++r)
      for (int j = 0; j < c; ++j) {
        const T* cj = V.bk(l, vk0 + j);
        T* __restrict z = RZ + int64_t(r) * ldo + j * nout;
#pragma omp simd
        for (int i = 0; i < nout; ++i) z[i] += cj[i];
      }
    if (l < L) {
      const int64_t n = int64_t(B) * ldo;
      T* RA = w.RA[l];
      const T* F1 = w.F1[l];
#pragma omp simd
      for (int64_t q = 0; q < n; ++q) RA[q] = F1[q] * RZ[q];
    }
  }
  // Output layer: R{E_L} = (∂²ℓ/∂Z²) R{Z_L}.
  const int C = net.n[L], ldo = c * C;
  const T invB = T(1.0 / ch.norm);
  if (net.loss == LOSS_NLL) {
    for (int r = 0; r < B; ++r)
      for (int j = 0; j < c; ++j) {
        const int64_t o = int64_t(r) * ldo + j * C;
        nll_row_R(w.A[L] + o, w.RZ[L] + o, C, invB, w.RE[L] + o);
      }
  } else {
    const int64_t n = int64_t(B) * ldo;
    for (int64_t q = 0; q < n; ++q) w.RE[L][q] = w.F1[L][q] * w.RZ[L][q];
  }
}

// ---------------------------------------------------------------- R-backward ----------------
// Writes Out[ok0+j] = beta·Out + alpha[j]·Hv for every model with active[j] (nullptr: all).
// With Out = P, alpha = -lr and beta = 1 this IS the descent update, folded into the GEMMs.
// R{E_{l-1}} is formed before W_l is overwritten, so the in-place update is exact.
template <class T>
void rbackward(const Net& net, const Params<T>& P, const Params<T>& V, int64_t vk0,
               const Chunk<T>& ch, Work<T>& w, const Params<T>& Out, int64_t ok0,
               const T* alpha, T beta, const uint8_t* active) {
  const int L = net.L(), c = ch.c, B = ch.B;
  const bool d2 = act_has_d2(net.act);
  for (int l = L; l >= 1; --l) {
    const int nin = net.n[l - 1], nout = net.n[l], ldo = c * nout, ldi = c * nin;
    T* RE = w.RE[l];
    if (l > 1) {
      T* tmp = w.RE[l - 1];
      for (int j = 0; j < c; ++j) {
        pgemm(NT, NT, B, nin, nout, T(1), RE + j * nout, ldo, P.Wk(l, ch.k0 + j), nin, T(0),
             tmp + j * nin, ldi);
        pgemm(NT, NT, B, nin, nout, T(1), w.E[l] + j * nout, ldo, V.Wk(l, vk0 + j), nin, T(1),
             tmp + j * nin, ldi);
      }
      const int64_t n = int64_t(B) * ldi;
      const T* F1 = w.F1[l - 1];
      if (d2) {
        const T* D = w.D[l - 1];
        const T* F2 = w.F2[l - 1];
        const T* RZ = w.RZ[l - 1];
#pragma omp simd
        for (int64_t q = 0; q < n; ++q) tmp[q] = hidden_RE(tmp[q], F1[q], D[q], F2[q], RZ[q]);
      } else {
#pragma omp simd
        for (int64_t q = 0; q < n; ++q) tmp[q] *= F1[q];
      }
    }
    // Bias part.
    for (int j = 0; j < c; ++j) {
      if (active && !active[j]) continue;
      T* __restrict acc = w.colsum.data();
      std::fill(acc, acc + nout, T(0));
      for (int r = 0; r < B; ++r) {
        const T* __restrict q = RE + int64_t(r) * ldo + j * nout;
#pragma omp simd
        for (int i = 0; i < nout; ++i) acc[i] += q[i];
      }
      T* ob = Out.bk(l, ok0 + j);
      for (int i = 0; i < nout; ++i) ob[i] = (beta == T(0) ? T(0) : beta * ob[i]) + alpha[j] * acc[i];
    }
    // Weight part.
    if (l == 1) {
      if (ch.shared && c > 1 && Out.W1_contig(net)) {
        // One GEMM for the chunk: scale each model's R{E_1} block by its alpha (0 if inactive).
        for (int r = 0; r < B; ++r)
          for (int j = 0; j < c; ++j) {
            const T a = (active && !active[j]) ? T(0) : alpha[j];
            T* q = RE + int64_t(r) * ldo + j * nout;
            for (int i = 0; i < nout; ++i) q[i] *= a;
          }
        pgemm(TT, NT, ldo, nin, B, T(1), RE, ldo, ch.X[0], nin, beta, Out.Wk(1, ok0), nin);
      } else {
        for (int j = 0; j < c; ++j) {
          if (active && !active[j]) continue;
          pgemm(TT, NT, nout, nin, B, alpha[j], RE + j * nout, ldo, ch.X[j], nin, beta,
               Out.Wk(1, ok0 + j), nin);
        }
      }
    } else {
      const bool stacked = (w.E[l] == RE + int64_t(B) * ldo) && (w.RA[l - 1] == w.A[l - 1] + int64_t(B) * ldi);
      for (int j = 0; j < c; ++j) {
        if (active && !active[j]) continue;
        T* ow = Out.Wk(l, ok0 + j);
        if (stacked) {
          pgemm(TT, NT, nout, nin, 2 * B, alpha[j], RE + j * nout, ldo, w.A[l - 1] + j * nin, ldi,
                beta, ow, nin);
        } else {
          pgemm(TT, NT, nout, nin, B, alpha[j], RE + j * nout, ldo, w.A[l - 1] + j * nin, ldi,
                beta, ow, nin);
          pgemm(TT, NT, nout, nin, B, alpha[j], w.E[l] + j * nout, ldo, w.RA[l - 1] + j * nin, ldi,
                T(1), ow, nin);
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace ft
