// ft_math.h: per-element math of an MLP step, written once for host and device.
//
// Hidden layers:  a = φ(z),  d1 = φ'(z),  d2 = φ''(z)
//   relu    a = max(z,0)   d1 = [z>0]        d2 = 0          (torch's convention: φ'(0) = 0)
//   tanh    a = tanh z     d1 = 1 - a²       d2 = -2 a d1
//   sigmoid a = σ(z)       d1 = a(1-a)       d2 = d1(1-2a)
//   linear  a = z          d1 = 1            d2 = 0
//
// Losses, per model, on outputs Z [B, C] (mean over the batch):
//   nll: ℓ = (1/B) Σ_b (logsumexp(z_b) - z_b,y_b);  P = softmax(Z)
//        E  = ∂ℓ/∂Z = (P - Y)/B
//        R{E} = (∂²ℓ/∂Z²) R{Z} = (P⊙R - P⊙rowsum(P⊙R))/B
//   mse: o = ψ(z) (ψ = identity or sigmoid),  ℓ = (1/(B C)) Σ (o - y)²   (torch's mse_loss, mean)
//        E    = 2 (o-y) ψ'(z) / (B C)
//        R{E} = h ⊙ R{Z},  h = 2 (ψ'(z)² + (o-y) ψ''(z)) / (B C)     (the Hessian is diagonal)
//
// Pearlmutter's R-operator for the hidden backward term (DESIGN §2.2):
//   R{E_{l-1}} = (R{E_l} W_l + E_l V_l) ⊙ φ'(Z) + (E_l W_l) ⊙ φ''(Z) ⊙ R{Z}
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define FT_HD __host__ __device__ __forceinline__
#else
#define FT_HD inline
#endif

namespace ft {

enum Act : int { ACT_LINEAR = 0, ACT_RELU = 1, ACT_TANH = 2, ACT_SIGMOID = 3 };
enum Loss : int { LOSS_NLL = 0, LOSS_MSE = 1 };

// Float and double overloads that exist both in host libm and in CUDA's device math library.
FT_HD float ft_exp(float x) { return expf(x); }
FT_HD double ft_exp(double x) { return exp(x); }
FT_HD float ft_log(float x) { return logf(x); }
FT_HD double ft_log(double x) { return log(x); }
FT_HD float ft_tanh(float x) { return tanhf(x); }
FT_HD double ft_tanh(double x) { return tanh(x); }

// σ(z) without overflow for large |z|.
template <class T>
FT_HD T ft_sigmoid(T z) {
  if (z >= T(0)) return T(1) / (T(1) + ft_exp(-z));
  const T e = ft_exp(z);
  return e / (T(1) + e);
}

FT_HD bool act_has_d2(int act) { return act == ACT_TANH || act == ACT_SIGMOID; }

// a, d1 and d2 of one pre-activation value, the activation fixed at compile time so that the
// loops around it vectorise (CPU) and carry no branch on it (CUDA).
template <int ACT, class T>
FT_HD void act_eval_t(T z, T& a, T& d1, T& d2) {
  if constexpr (ACT == ACT_RELU) {
    a = z > T(0) ? z : T(0);
    d1 = z > T(0) ? T(1) : T(0);
    d2 = T(0);
  } else if constexpr (ACT == ACT_TANH) {
    a = ft_tanh(z);
    d1 = T(1) - a * a;
    d2 = T(-2) * a * d1;
  } else if constexpr (ACT == ACT_SIGMOID) {
    a = ft_sigmoid(z);
    d1 = a * (T(1) - a);
    d2 = d1 * (T(1) - T(2) * a);
  } else {
    a = z;
    d1 = T(1);
    d2 = T(0);
  }
}

// The same with the activation chosen at run time (for code off the hot path).
template <class T>
FT_HD void act_eval(int act, T z, T& a, T& d1, T& d2) {
  switch (act) {
    case ACT_RELU: act_eval_t<ACT_RELU>(z, a, d1, d2); break;
    case ACT_TANH: act_eval_t<ACT_TANH>(z, a, d1, d2); break;
    case ACT_SIGMOID: act_eval_t<ACT_SIGMOID>(z, a, d1, d2); break;
    default: act_eval_t<ACT_LINEAR>(z, a, d1, d2); break;
  }
}

// Calls f(std::integral_constant<int, ACT>{}) for the run-time activation code `act`.
template <class F>
auto dispatch_act(int act, F&& f) {
  switch (act) {
    case ACT_RELU: return f(std::integral_constant<int, ACT_RELU>{});
    case ACT_TANH: return f(std::integral_constant<int, ACT_TANH>{});
    case ACT_SIGMOID: return f(std::integral_constant<int, ACT_SIGMOID>{});
    default: return f(std::integral_constant<int, ACT_LINEAR>{});
  }
}

// One output element of the mse loss. scale = 1/(B C).
// Returns the loss term; writes o, E and the diagonal Hessian factor h.
template <class T>
FT_HD T mse_elem(int out_act, T z, T target, T scale, T& o, T& e, T& h) {
  T d1, d2;
  act_eval(out_act, z, o, d1, d2);
  const T diff = o - target;
  e = T(2) * diff * d1 * scale;
  h = T(2) * (d1 * d1 + diff * d2) * scale;
  return diff * diff * scale;
}

// Softmax cross-entropy of one row z[0..C) with label y.
// Writes P = softmax(z) into p and E = (P - onehot)/B into e; returns the row's loss term
// (not yet divided by B) and sets argmax_out to the row's argmax (for accuracy).
// p may alias z (the forward pass overwrites logits with probabilities).
template <class T>
FT_HD T nll_row(const T* z, int C, int64_t y, T invB, T* p, T* e, int& argmax_out) {
  const T zy = z[y];
  T m = z[0];
  int am = 0;
  for (int i = 1; i < C; ++i)
    if (z[i] > m) { m = z[i]; am = i; }
  T s = T(0);
  for (int i = 0; i < C; ++i) {
    const T ex = ft_exp(z[i] - m);
    p[i] = ex;
    s += ex;
  }
  const T inv = T(1) / s;
  for (int i = 0; i < C; ++i) {
    p[i] *= inv;
    e[i] = (p[i] - (i == y ? T(1) : T(0))) * invB;
  }
  argmax_out = am;
  return ft_log(s) + m - zy;
}

// R{E} of one softmax row: (p ⊙ r - p · (p·r)) / B.
template <class T>
FT_HD void nll_row_R(const T* p, const T* r, int C, T invB, T* re) {
  T s = T(0);
  for (int i = 0; i < C; ++i) s += p[i] * r[i];
  for (int i = 0; i < C; ++i) re[i] = p[i] * (r[i] - s) * invB;
}

// The hidden-layer R{E} combination (see the header comment).
template <class T>
FT_HD T hidden_RE(T tmp, T d1, T dpre, T d2, T rz) {
  return tmp * d1 + dpre * d2 * rz;
}

}  // namespace ft
