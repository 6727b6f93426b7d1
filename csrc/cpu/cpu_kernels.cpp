// cpu_kernels.cpp: value_and_grad, hvp, grad_G and full-data evaluation on the CPU.
//
// Each is the chunk engine of cpu_engine.h run over chunks of models:
//   value_and_grad  forward, backward                         L, ∇L
//   hvp             forward, backward, R-forward(v), R-back   H v
//   grad_G          forward, backward (V = ∇L), Gram term, R-forward, R-back
//                   L, G = ½‖∇L‖², ∇G = H∇L — the layer-1 Gram trick replaces g_{W_1}
//                   when the cost model says it pays, so g_{W_1} is never materialised.
//   evaluate        forward (and backward) over a data set in blocks: mean loss, accuracy, ∇L,
//                   and ‖∇ℓ_α‖² of every sample from the factorisation in sample_grad_sq
#include "cpu_kernels.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "cpu_engine.h"
#include "cpu_parallel.h"

namespace ft {
namespace cpu {

namespace {

template <class T>
Work<T>& thread_work() {
  thread_local Work<T> w;
  return w;
}

template <class T>
Chunk<T> make_chunk(const Net& net, const Batch<T>& b, int64_t k0, int c) {
  Chunk<T> ch;
  ch.c = c;
  ch.k0 = k0;
  ch.B = b.B;
  ch.norm = b.B;
  ch.shared = !b.per_model;
  const int64_t xs = int64_t(b.B) * net.n[0];
  for (int j = 0; j < c; ++j) {
    ch.X[j] = b.per_model ? b.X + (k0 + j) * xs : b.X;
    ch.y[j] = b.per_model ? b.y + (k0 + j) * b.B : b.y;
  }
  return ch;
}

template <class T>
int pick_chunk(int64_t K, const Batch<T>& b, const Opts& o) {
  return b.per_model ? 1 : chunk_size(K, o.threads, o.chunk);
}

// Runs body(chunk, workspace) for every chunk of the K models of a batch, in parallel.
template <class T, class F>
void over_chunks(const Net& net, int64_t K, const Batch<T>& b, const Opts& o, bool need_g, bool need_x, F&& body) {
  const int c = pick_chunk(K, b, o);
  const int64_t nch = (K + c - 1) / c;
  for_chunks(nch, o.threads, [&](int64_t ci) {
    const int64_t k0 = ci * c;
    const int cc = int(std::min<int64_t>(c, K - k0));
    Chunk<T> ch = make_chunk(net, b, k0, cc);
    Work<T>& w = thread_work<T>();
    w.ensure(net, cc, b.B, need_g, need_x);
    body(ch, w);
  });
}

}  // namespace

template <class T>
void value_and_grad(const Net& net, int64_t K, const T* theta, const Batch<T>& b, T* L, T* g,
                    const Opts& o) {
  const Params<T> P = Params<T>::flat(net, const_cast<T*>(theta));
  const Params<T> Gp = Params<T>::flat(net, g);
  over_chunks(net, K, b, o, false, false, [&](Chunk<T>& ch, Work<T>& w) {
    double loss[kMaxChunk] = {0};
    forward(net, P, ch, w, loss, nullptr);
    backward(net, P, ch, w, &Gp, ch.k0, T(0), false);
    for (int j = 0; j < ch.c; ++j) L[ch.k0 + j] = T(loss[j]);
  });
}

template <class T>
void hvp(const Net& net, int64_t K, const T* theta, const Batch<T>& b, const T* v, T* Hv,
         const Opts& o) {
  const Params<T> P = Params<T>::flat(net, const_cast<T*>(theta));
  const Params<T> V = Params<T>::flat(net, const_cast<T*>(v));
  const Params<T> Out = Params<T>::flat(net, Hv);
  over_chunks(net, K, b, o, false, false, [&](Chunk<T>& ch, Work<T>& w) {
    forward(net, P, ch, w, nullptr, nullptr);
    backward<T>(net, P, ch, w, nullptr, 0, T(0), false);
    rforward(net, P, V, ch.k0, ch, w, false);
    T one[kMaxChunk];
    std::fill(one, one + kMaxChunk, T(1));
    rbackward(net, P, V, ch.k0, ch, w, Out, ch.k0, one, T(0), nullptr);
  });
}

template <class T>
void grad_G(const Net& net, int64_t K, const T* theta, const Batch<T>& b, T* L, T* G, T* dG,
            const Opts& o) {
  const Params<T> P = Params<T>::flat(net, const_cast<T*>(theta));
  const Params<T> Out = Params<T>::flat(net, dG);
  const int n0 = net.n[0];
  const bool gram = use_gram(net, b.B, b.per_model ? 1 : K);
  // The shared Gram X Xᵀ, once for all models.
  std::vector<T> Gram;
  if (gram && !b.per_model) {
    Gram.assign(size_t(b.B) * b.B, T(0));
    SplitGemm sg(o.threads);
    gram_cols(b.X, b.B, n0, Gram.data(), 0, b.B);
  }
  over_chunks(net, K, b, o, true, gram && b.per_model, [&](Chunk<T>& ch, Work<T>& w) {
    const int64_t k0 = ch.k0;
    const int cc = ch.c;
    const Params<T> Gp = Params<T>::flat(net, w.g.data());
    double loss[kMaxChunk] = {0};
    forward(net, P, ch, w, loss, nullptr);
    backward(net, P, ch, w, &Gp, 0, T(0), gram);
    double gw1[kMaxChunk] = {0};
    if (gram) {
      const T* Gm = Gram.data();
      if (b.per_model) {
        gram_cols(ch.X[0], b.B, n0, w.gram.data(), 0, b.B);
        Gm = w.gram.data();
      }
      gram_S(net, ch, w, Gm, gw1);
    }
    for (int j = 0; j < cc; ++j) {
      L[k0 + j] = T(loss[j]);
      G[k0 + j] = T(0.5 * (grad_norm2(net, Gp, j, gram) + gw1[j]));
    }
    rforward(net, P, Gp, 0, ch, w, gram);
    T one[kMaxChunk];
    std::fill(one, one + kMaxChunk, T(1));
    rbackward(net, P, Gp, 0, ch, w, Out, k0, one, T(0), nullptr);
  });
}

template <class T>
void evaluate(const Net& net, int64_t K, const T* theta, const T* X, const int64_t* y, int64_t N,
              int block, T* loss, T* acc, T* grad, const Opts& o, T* sample_sq) {
  const Params<T> P = Params<T>::flat(net, const_cast<T*>(theta));
  const int n0 = net.n[0];
  const int64_t nblk = (N + block - 1) / block;
  // Models in parallel; each walks the data blocks in order and accumulates into its own rows.
  // Always this way, even for fewer models than threads: splitting the blocks of one model across
  // threads made the sums depend on the thread count and the schedule, so a Dask worker with one
  // thread wrote other bytes than a local run with two (bench_dask, a block of one model).
  const Params<T> Gp = grad ? Params<T>::flat(net, grad) : Params<T>();
  for_chunks(K, o.threads, [&](int64_t k) {
    Work<T>& w = thread_work<T>();
    double ls = 0;
    int64_t hits = 0;
    for (int64_t bi = 0; bi < nblk; ++bi) {
      const int64_t r0 = bi * block;
      Chunk<T> ch;
      ch.c = 1;
      ch.k0 = k;
      ch.B = int(std::min<int64_t>(block, N - r0));
      ch.norm = double(N);
      ch.shared = true;
      ch.X[0] = X + r0 * n0;
      ch.y[0] = y + r0;
      w.ensure(net, 1, ch.B, false, false);
      forward(net, P, ch, w, &ls, &hits);
      if (grad || sample_sq) backward(net, P, ch, w, grad ? &Gp : nullptr, k, bi == 0 ? T(0) : T(1), false);
      if (sample_sq) sample_grad_sq(net, ch, w, sample_sq + k * N + r0);
    }
    loss[k] = T(ls);
    acc[k] = T(double(hits) / double(N));
  });
}

#define FT_INSTANTIATE(T)                                                                      \
  template void value_and_grad<T>(const Net&, int64_t, const T*, const Batch<T>&, T*, T*,      \
                                  const Opts&);                                                \
  template void hvp<T>(const Net&, int64_t, const T*, const Batch<T>&, const T*, T*,           \
                       const Opts&);                                                           \
  template void grad_G<T>(const Net&, int64_t, const T*, const Batch<T>&, T*, T*, T*,          \
                          const Opts&);                                                        \
  template void evaluate<T>(const Net&, int64_t, const T*, const T*, const int64_t*, int64_t,  \
                            int, T*, T*, T*, const Opts&, T*);
FT_INSTANTIATE(float)
FT_INSTANTIATE(double)
#undef FT_INSTANTIATE

}  // namespace cpu
}  // namespace ft
