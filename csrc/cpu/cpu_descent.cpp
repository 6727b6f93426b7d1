// cpu_descent.cpp: batched inner descent on G = ½‖∇L‖² for K models, entirely in the core.
//
// Each step, for every model still running (θ ← θ - η_k ∇G_batch(θ), ∇G = H∇L):
//   draw the step's minibatch (ft_rng.h: the same order for every model when shared),
//   forward, backward (V = ∇L, G = ½‖∇L‖²), decide the model's status from G,
//   R-forward, R-backward with the update folded into the GEMMs (W ← W - η R{E}ᵀA ...).
// G is the value at θ before the update, so status and trace describe the point visited.
// A model stops on its own: converged (G < G_tol), diverged (G > growth·G_start),
// nonfinite (G is NaN or ±inf); the others carry on. Stopped models are swapped out of the
// active block, so the active models always form one contiguous, packed block (one wide
// layer-1 GEMM per chunk).
//
// method="gd" (full_batch) uses all N samples every step: one pass for ∇L, one for H∇L.
//
// Checkpoints (snap_steps): after the step that completes snap_steps[j] updates, every model's θ
// is copied to snaps[j] — the running ones from the packed store, the stopped ones from their
// saved endpoint — so the endpoints at fractions of the budget cost no extra descent.
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "cpu_engine.h"
#include "cpu_kernels.h"
#include "cpu_parallel.h"
#include "ft_rng.h"

namespace ft {
namespace cpu {

void epoch_perm(uint64_t stream, uint64_t epoch, int64_t N, int32_t* perm) {
  const uint64_t key = epoch_key(stream, epoch);
  std::vector<std::pair<uint64_t, int32_t>> kv(N);
  for (int64_t i = 0; i < N; ++i) kv[i] = {sort_key(key, uint64_t(i)), int32_t(i)};
  std::sort(kv.begin(), kv.end());
  for (int64_t i = 0; i < N; ++i) perm[i] = kv[i].second;
}

void epoch_perms(const uint64_t* streams, int64_t count, uint64_t epoch, int64_t N, int32_t* out) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < count; ++k) epoch_perm(streams[k], epoch, N, out + k * N);
}

namespace {

inline int64_t aload(const int64_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void astore(int64_t* p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

template <class T>
Work<T>& descent_work() {
  thread_local Work<T> w;
  return w;
}

inline int8_t judge(double G, double G0, bool first, double tol, double growth) {
  if (!std::isfinite(G)) return ST_NONFINITE;
  if (!first && growth > 0 && G > growth * G0) return ST_DIVERGED;
  if (G < tol) return ST_CONVERGED;
  return ST_RUNNING;
}

// Checkpoints not reached by the loop: a model that stopped gives its endpoint (θ no longer
// moves), one cut off by an interruption gives NaN (its θ at that step was never computed).
template <class T>
void fill_late_snaps(const Net& net, const DescentArgs<T>& a, int64_t j0) {
  for (int64_t j = j0; j < a.n_snap; ++j)
    for (int64_t m = 0; m < a.K; ++m) {
      T* dst = a.snaps + (j * a.K + m) * net.P;
      if (a.status[m] == ST_INTERRUPTED) std::fill(dst, dst + net.P, T(NAN));
      else std::memcpy(dst, a.theta + m * net.P, sizeof(T) * net.P);
    }
}

// The packed parameter store of the active models (slots), and what follows each slot.
template <class T>
struct Store {
  const Net& net;
  std::vector<std::vector<T>> W, b;
  Params<T> P;
  std::vector<int64_t> model;  // slot -> model index
  std::vector<T> lr;           // slot -> learning rate
  int64_t Kact;

  Store(const Net& n, int64_t K, const T* theta0, const T* lr0) : net(n), model(K), lr(lr0, lr0 + K), Kact(K) {
    const int L = net.L();
    W.resize(L + 1);
    b.resize(L + 1);
    P.W.assign(L + 1, nullptr);
    P.b.assign(L + 1, nullptr);
    P.sW.assign(L + 1, 0);
    P.sb.assign(L + 1, 0);
    for (int l = 1; l <= L; ++l) {
      const int64_t nw = int64_t(net.n[l]) * net.n[l - 1];
      W[l].resize(size_t(K * nw));
      b[l].resize(size_t(K * net.n[l]));
      P.W[l] = W[l].data();
      P.b[l] = b[l].data();
      P.sW[l] = nw;
      P.sb[l] = net.n[l];
    }
    std::iota(model.begin(), model.end(), 0);
    for (int64_t k = 0; k < K; ++k) load(k, theta0 + k * net.P);
  }
  void load(int64_t s, const T* row) {
    for (int l = 1; l <= net.L(); ++l) {
      std::memcpy(P.Wk(l, s), row + net.offW[l], sizeof(T) * P.sW[l]);
      std::memcpy(P.bk(l, s), row + net.offb[l], sizeof(T) * P.sb[l]);
    }
  }
  // Copies slot s out to row; returns false if any value is not finite.
  bool save(int64_t s, T* row) const {
    bool finite = true;
    for (int l = 1; l <= net.L(); ++l) {
      std::memcpy(row + net.offW[l], P.Wk(l, s), sizeof(T) * P.sW[l]);
      std::memcpy(row + net.offb[l], P.bk(l, s), sizeof(T) * P.sb[l]);
    }
    for (int64_t q = 0; q < net.P; ++q) finite &= std::isfinite(row[q]);
    return finite;
  }
  void move(int64_t from, int64_t to) {
    for (int l = 1; l <= net.L(); ++l) {
      std::memcpy(P.Wk(l, to), P.Wk(l, from), sizeof(T) * P.sW[l]);
      std::memcpy(P.bk(l, to), P.bk(l, from), sizeof(T) * P.sb[l]);
    }
    model[to] = model[from];
    lr[to] = lr[from];
  }
};

template <class T>
void descent_sgd(const Net& net, const DescentArgs<T>& a, const Opts& o) {
  const int n0 = net.n[0];
  const int64_t K = a.K, N = a.N;
  const int B = a.B;
  Store<T> st(net, K, a.theta0, a.lr);
  const int64_t spe = a.drop_last ? N / B : (N + B - 1) / B;  // steps per epoch
  const bool gram = use_gram(net, B, a.shared ? K : 1);
  const int c = a.shared ? chunk_size(K, o.threads, o.chunk) : 1;
  const int nt = std::max(o.threads, 1);

  std::vector<int32_t> perm(a.shared ? N : K * N);
  std::vector<T> Xb(a.shared ? size_t(B) * n0 : 0);
  std::vector<int64_t> yb(a.shared ? B : 0);
  std::vector<T> Gram(a.shared && gram ? size_t(B) * B : 0);
  std::vector<double> Gcur(K, 0.0);
  std::vector<int8_t> verdict(K, ST_RUNNING);
  for (int64_t k = 0; k < K; ++k) {
    a.status[k] = ST_RUNNING;
    a.steps_done[k] = 0;
    a.G_first[k] = NAN;
    a.G_last[k] = NAN;
  }

  int64_t s_done = 0;
  int64_t jsnap = 0;  // next checkpoint
  bool interrupted = false;
  bool done = (a.steps <= 0);
  ErrorBox box;

#pragma omp parallel num_threads(nt)
  {
    Work<T>& w = descent_work<T>();
    for (int64_t s = 0; s < a.steps && !done; ++s) {
      const int64_t epoch = s / spe, pos = s % spe, b0 = pos * B;
      const int Bs = int(std::min<int64_t>(B, N - b0));
      // New epoch: the permutation(s) of the data.
      if (pos == 0) {
        if (a.shared) {
#pragma omp single
          {
            try {
              epoch_perm(a.streams[0], uint64_t(epoch), N, perm.data());
            } catch (...) {
              box.capture();
            }
          }
        } else {
#pragma omp for schedule(dynamic, 1)
          for (int64_t sl = 0; sl < st.Kact; ++sl) {
            const int64_t m = st.model[sl];
            try {
              epoch_perm(a.streams[m], uint64_t(epoch), N, perm.data() + m * N);
            } catch (...) {
              box.capture();
            }
          }
        }
      }
      // Shared batch: gather it and its Gram matrix once for all models.
      if (a.shared) {
#pragma omp for schedule(static)
        for (int r = 0; r < Bs; ++r) {
          const int64_t idx = perm[b0 + r];
          std::memcpy(Xb.data() + int64_t(r) * n0, a.X + idx * n0, sizeof(T) * n0);
          yb[r] = a.y[idx];
        }
        if (gram) {
          const int cb = (Bs + nt - 1) / nt;
#pragma omp for schedule(static)
          for (int t = 0; t < nt; ++t) gram_cols(Xb.data(), Bs, n0, Gram.data(), t * cb, std::min(Bs, (t + 1) * cb));
        }
      }
      // The step for every chunk of active slots.
      const int64_t Kact = st.Kact;
      const int64_t nch = (Kact + c - 1) / c;
#pragma omp for schedule(dynamic, 1)
      for (int64_t ci = 0; ci < nch; ++ci) {
        try {
          const int64_t k0 = ci * c;
          const int cc = int(std::min<int64_t>(c, Kact - k0));
          Chunk<T> ch;
          ch.c = cc;
          ch.k0 = k0;
          ch.B = Bs;
          ch.norm = Bs;
          ch.shared = a.shared;
          w.ensure(net, cc, B, true, !a.shared);
          const T* Gm = Gram.data();
          if (a.shared) {
            for (int j = 0; j < cc; ++j) {
              ch.X[j] = Xb.data();
              ch.y[j] = yb.data();
            }
          } else {
            const int64_t m = st.model[k0];
            const int32_t* pm = perm.data() + m * N;
            for (int r = 0; r < Bs; ++r) {
              const int64_t idx = pm[b0 + r];
              std::memcpy(w.xb.data() + int64_t(r) * n0, a.X + idx * n0, sizeof(T) * n0);
              w.yb[r] = a.y[idx];
            }
            ch.X[0] = w.xb.data();
            ch.y[0] = w.yb.data();
            if (gram) {
              gram_cols(w.xb.data(), Bs, n0, w.gram.data(), 0, Bs);
              Gm = w.gram.data();
            }
          }
          const Params<T> Gp = Params<T>::flat(net, w.g.data());
          double loss[kMaxChunk] = {0};
          forward(net, st.P, ch, w, loss, nullptr);
          backward(net, st.P, ch, w, &Gp, 0, T(0), gram);
          double gw1[kMaxChunk] = {0};
          if (gram) gram_S(net, ch, w, Gm, gw1);
          uint8_t active[kMaxChunk];
          T alpha[kMaxChunk];
          bool any = false;
          for (int j = 0; j < cc; ++j) {
            const int64_t sl = k0 + j, m = st.model[sl];
            const double G = 0.5 * (grad_norm2(net, Gp, j, gram) + gw1[j]);
            if (s == 0) a.G_first[m] = G;
            const int8_t v = judge(G, a.G_first[m], s == 0, a.G_tol, a.growth);
            Gcur[sl] = G;
            verdict[sl] = v;
            active[j] = (v == ST_RUNNING);
            alpha[j] = -st.lr[sl];
            any |= bool(active[j]);
          }
          if (any) {
            rforward(net, st.P, Gp, 0, ch, w, gram);
            rbackward(net, st.P, Gp, 0, ch, w, st.P, k0, alpha, T(1), active);
          }
        } catch (...) {
          box.capture();
        }
      }
      // Bookkeeping, one thread: trace, stopped models out of the active block, progress.
#pragma omp single
      {
        if (box.err) done = true;
        const bool rec = (s % a.record_every) == 0;
        for (int64_t sl = Kact - 1; sl >= 0; --sl) {
          const int64_t m = st.model[sl];
          if (rec) a.G_trace[m * a.n_rec + s / a.record_every] = T(Gcur[sl]);
          a.G_last[m] = Gcur[sl];
          if (verdict[sl] != ST_RUNNING) {
            a.status[m] = verdict[sl];
            a.steps_done[m] = s;
            st.save(sl, a.theta + m * net.P);
            const int64_t last = st.Kact - 1;
            if (sl != last) {
              st.move(last, sl);
              Gcur[sl] = Gcur[last];
              verdict[sl] = verdict[last];
            }
            st.Kact -= 1;
          }
        }
        s_done = s + 1;
        for (; jsnap < a.n_snap && a.snap_steps[jsnap] == s_done; ++jsnap) {
          T* dst = a.snaps + jsnap * K * net.P;
          for (int64_t m = 0; m < K; ++m)
            if (a.status[m] != ST_RUNNING) std::memcpy(dst + m * net.P, a.theta + m * net.P, sizeof(T) * net.P);
          for (int64_t sl = 0; sl < st.Kact; ++sl) st.save(sl, dst + st.model[sl] * net.P);
        }
        if (report_step(a.progress, s + 1, Kact, st.Kact)) {
          interrupted = true;
          done = true;
        }
        if (st.Kact == 0) done = true;
      }
    }
  }
  box.rethrow();
  for (int64_t sl = 0; sl < st.Kact; ++sl) {
    const int64_t m = st.model[sl];
    a.steps_done[m] = s_done;
    const bool finite = st.save(sl, a.theta + m * net.P);
    a.status[m] = !finite ? ST_NONFINITE : (interrupted ? ST_INTERRUPTED : ST_MAX_STEPS);
  }
  fill_late_snaps(net, a, jsnap);
}

// Full-batch descent: each step ∇L over all N (pass 1), then H∇L (pass 2), then the update.
// Models run in parallel, one per thread; the data blocks of a model run in order.
template <class T>
void descent_gd(const Net& net, const DescentArgs<T>& a, const Opts& o) {
  const int64_t K = a.K, N = a.N;
  const int n0 = net.n[0];
  const int block = std::max(1, a.eval_block);
  const int64_t nblk = (N + block - 1) / block;
  for (int64_t k = 0; k < K; ++k) {
    std::memcpy(a.theta + k * net.P, a.theta0 + k * net.P, sizeof(T) * net.P);
    a.status[k] = ST_RUNNING;
    a.steps_done[k] = 0;
    a.G_first[k] = NAN;
    a.G_last[k] = NAN;
  }
  std::atomic<bool> stop{false};
  for_chunks(K, o.threads, [&](int64_t k) {
    T* th = a.theta + k * net.P;
    const Params<T> P = Params<T>::flat(net, th);
    std::vector<T> g(net.P), hv(net.P);
    const Params<T> Gp = Params<T>::flat(net, g.data());
    const Params<T> Hp = Params<T>::flat(net, hv.data());
    Work<T>& w = descent_work<T>();
    const T one[1] = {T(1)};
    int64_t s = 0, jsnap = 0;
    int8_t v = ST_RUNNING;
    for (; s < a.steps; ++s) {
      if (stop.load(std::memory_order_relaxed)) break;
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t bi = 0; bi < nblk; ++bi) {
          const int64_t r0 = bi * block;
          Chunk<T> ch;
          ch.c = 1;
          ch.k0 = 0;
          ch.B = int(std::min<int64_t>(block, N - r0));
          ch.norm = double(N);
          ch.shared = true;
          ch.X[0] = a.X + r0 * n0;
          ch.y[0] = a.y + r0;
          w.ensure(net, 1, ch.B, false, false);
          Params<T> Pk = P;  // k-th model's row is P itself (index 0)
          forward(net, Pk, ch, w, nullptr, nullptr);
          if (pass == 0) {
            backward(net, Pk, ch, w, &Gp, 0, bi == 0 ? T(0) : T(1), false);
          } else {
            backward<T>(net, Pk, ch, w, nullptr, 0, T(0), false);
            rforward(net, Pk, Gp, 0, ch, w, false);
            rbackward(net, Pk, Gp, 0, ch, w, Hp, 0, one, bi == 0 ? T(0) : T(1), nullptr);
          }
        }
        if (pass == 0) {
          const double G = 0.5 * grad_norm2(net, Gp, 0, false);
          if (s == 0) a.G_first[k] = G;
          a.G_last[k] = G;
          if (s % a.record_every == 0) a.G_trace[k * a.n_rec + s / a.record_every] = T(G);
          v = judge(G, a.G_first[k], s == 0, a.G_tol, a.growth);
          if (v != ST_RUNNING) break;
        }
      }
      if (v != ST_RUNNING) break;
      const T lr = a.lr[k];
      for (int64_t q = 0; q < net.P; ++q) th[q] -= lr * hv[q];
      for (; jsnap < a.n_snap && a.snap_steps[jsnap] == s + 1; ++jsnap)
        std::memcpy(a.snaps + (jsnap * K + k) * net.P, th, sizeof(T) * net.P);
      if (a.progress) {
        __atomic_fetch_add(&a.progress[1], int64_t(1), __ATOMIC_RELAXED);
        if (k == 0) astore(&a.progress[0], s + 1);
        if (aload(&a.progress[2]) != 0) stop.store(true);
      }
    }
    a.steps_done[k] = s;
    bool finite = true;
    for (int64_t q = 0; q < net.P; ++q) finite &= std::isfinite(th[q]);
    if (v != ST_RUNNING) a.status[k] = v;
    else if (!finite) a.status[k] = ST_NONFINITE;
    else a.status[k] = stop.load() ? ST_INTERRUPTED : ST_MAX_STEPS;
  });
  // Checkpoints past a model's last step: its endpoint, or NaN after an interruption.
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < a.n_snap; ++j) {
      if (a.snap_steps[j] <= a.steps_done[k]) continue;  // taken live
      T* dst = a.snaps + (j * K + k) * net.P;
      if (a.status[k] == ST_INTERRUPTED) std::fill(dst, dst + net.P, T(NAN));
      else std::memcpy(dst, a.theta + k * net.P, sizeof(T) * net.P);
    }
}

}  // namespace

template <class T>
void inner_descent(const Net& net, const DescentArgs<T>& a, const Opts& o) {
  if (a.full_batch) descent_gd(net, a, o);
  else descent_sgd(net, a, o);
}

template void inner_descent<float>(const Net&, const DescentArgs<float>&, const Opts&);
template void inner_descent<double>(const Net&, const DescentArgs<double>&, const Opts&);

}  // namespace cpu
}  // namespace ft
