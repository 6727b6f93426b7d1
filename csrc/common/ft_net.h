// ft_net.h: the shape of a network and of the flat parameter layout, shared by CPU and CUDA.
//
// Layers l = 1..L with widths n[0..L]. Per model the flat vector θ [P] holds, layer after layer,
// W_l [n_l, n_{l-1}] (row-major, torch.nn.Linear's weight) and then b_l [n_l]:
//   θ = [W_1, b_1, W_2, b_2, ..., W_L, b_L],   P = Σ_l n_l (n_{l-1} + 1).
// Z_l = A_{l-1} W_lᵀ + 1 b_lᵀ, A_l = φ(Z_l) for l < L, Z_L are the outputs.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ft_math.h"

namespace ft {

struct Net {
  std::vector<int> n;            // [L+1] widths n_0..n_L
  int act = ACT_RELU;            // hidden activation
  int loss = LOSS_NLL;           // LOSS_NLL | LOSS_MSE
  int out_act = ACT_LINEAR;      // mse output map: ACT_LINEAR | ACT_SIGMOID
  std::vector<int64_t> offW;     // [L+1] offset of W_l in θ (index 0 unused)
  std::vector<int64_t> offb;     // [L+1] offset of b_l in θ
  int64_t P = 0;

  int L() const { return int(n.size()) - 1; }

  static Net make(const std::vector<int>& widths, int act, int loss, int out_act) {
    if (widths.size() < 2) throw std::invalid_argument("widths needs at least 2 entries");
    for (int w : widths)
      if (w < 1) throw std::invalid_argument("every width must be >= 1");
    if (act < 0 || act > 3) throw std::invalid_argument("unknown activation code");
    if (loss != LOSS_NLL && loss != LOSS_MSE) throw std::invalid_argument("unknown loss code");
    if (out_act != ACT_LINEAR && out_act != ACT_SIGMOID)
      throw std::invalid_argument("output map must be identity or sigmoid");
    Net net;
    net.n = widths;
    net.act = act;
    net.loss = loss;
    net.out_act = out_act;
    const int L = net.L();
    net.offW.assign(L + 1, 0);
    net.offb.assign(L + 1, 0);
    int64_t off = 0;
    for (int l = 1; l <= L; ++l) {
      net.offW[l] = off;
      off += int64_t(widths[l]) * widths[l - 1];
      net.offb[l] = off;
      off += widths[l];
    }
    net.P = off;
    return net;
  }
};

// Where W_l and b_l of model k live: W[l] + k*sW[l], b[l] + k*sb[l] (host or device pointers).
// flat() is the public [K, P] layout; a packed store (each layer's weights of all models
// contiguous, [K, n_l, n_{l-1}]) sets sW[l] = n_l n_{l-1}, which makes a run of models' W_1 one
// matrix for the wide layer-1 GEMMs. Used by both engines (cpu::Params, cuda::LP).
template <class T>
struct ParamView {
  std::vector<T*> W, b;
  std::vector<int64_t> sW, sb;

  T* Wk(int l, int64_t k) const { return W[l] + k * sW[l]; }
  T* bk(int l, int64_t k) const { return b[l] + k * sb[l]; }
  bool W1_contig(const Net& net) const { return sW[1] == int64_t(net.n[1]) * net.n[0]; }

  static ParamView flat(const Net& net, T* theta) {
    ParamView p;
    const int L = net.L();
    p.W.assign(L + 1, nullptr);
    p.b.assign(L + 1, nullptr);
    p.sW.assign(L + 1, net.P);
    p.sb.assign(L + 1, net.P);
    for (int l = 1; l <= L; ++l) {
      p.W[l] = theta + net.offW[l];
      p.b[l] = theta + net.offb[l];
    }
    return p;
  }
};

// Does the layer-1 Gram trick pay? Direct: form g_W1 (B n0 n1 multiply-adds) and X g_W1ᵀ
// (B n0 n1). Gram: X Xᵀ (B² n0, shared by the `sharing` models of a common batch) and
// (X Xᵀ) E_1 (B² n1). Used by both backends (and mirrored in fasttrap/flops.py).
inline bool use_gram(const Net& net, int B, int64_t sharing) {
  const double n0 = net.n[0], n1 = net.n[1];
  const double direct = 2.0 * B * n0 * n1;
  const double gram = double(B) * B * n0 / double(sharing > 1 ? sharing : 1) + double(B) * B * n1;
  return gram < direct;
}

}  // namespace ft
