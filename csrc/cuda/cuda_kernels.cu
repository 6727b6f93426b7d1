// cuda_kernels.cu: the CUDA entry points of fasttrap._core — value_and_grad, hvp, grad_G,
// evaluate and the batched inner descent — built from the passes of cuda_engine.cuh.
//
// Inner descent, per step, for all K models (θ ← θ - η_k H∇L on the step's minibatch):
//   gather the minibatch on the device (from the epoch's permutation, at a device-side step
//   counter), X Xᵀ, forward, backward (V = ∇L), G = ½‖∇L‖², judge each model (converged,
//   diverged, nonfinite: a stopped model's θ is copied out at once and its step size set to 0),
//   R-forward, R-backward with the update folded into the GEMMs. The step is captured once as a
//   CUDA graph (one for a full batch, one for the short last batch of an epoch) and replayed, so
//   the per-step launch cost of ~40 kernels and GEMMs disappears; the host only copies each
//   epoch's permutation and launches graphs.
// Memory comes from the stream-ordered allocator (cudaMallocAsync) and is returned at the end.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_api.h"
#include "cuda_engine.cuh"

namespace ft {
namespace cpu {
// cpu_descent.cpp: the permutations of several streams for one epoch, in parallel.
void epoch_perms(const uint64_t* streams, int64_t count, uint64_t epoch, int64_t N, int32_t* out);
void epoch_perm(uint64_t stream, uint64_t epoch, int64_t N, int32_t* perm);
}  // namespace cpu

namespace cuda {

int device_count() {
  int n = 0;
  // With the static runtime this returns an error, never aborts, when no driver is installed.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

namespace {

std::mutex handle_mu;
std::map<int, cublasHandle_t> handles;

// One cuBLAS handle per device, with a persistent workspace (so cuBLAS never allocates, which
// also makes its calls capturable in graphs). The device's stream-ordered memory pool keeps what
// it has instead of returning it to the driver at every synchronisation (release threshold 0 is
// the default), so per-call workspaces cost no new mappings.
cublasHandle_t handle_for_current_device() {
  int dev = 0;
  FT_CK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> g(handle_mu);
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  cublasHandle_t h = nullptr;
  FT_CB(cublas().create(&h));
  if (cublas().set_workspace) {
    void* ws = nullptr;
    const size_t bytes = size_t(32) << 20;
    FT_CK(cudaMalloc(&ws, bytes));
    FT_CB(cublas().set_workspace(h, ws, bytes));
  }
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
    uint64_t keep = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  }
  cudaGetLastError();
  handles[dev] = h;
  return h;
}

// ---- cached graphs for the small, frequent calls -----------------------------------------
// A call like grad_G launches ~40 kernels and ~17 cuBLAS GEMMs; for modest K their launch and
// heuristics cost more than the arithmetic. The first call with a given problem shape records
// the computation as a CUDA graph over persistent buffers; later calls copy their inputs in,
// replay the graph on the caller's stream and copy the outputs out.
struct Slot {
  size_t bytes;
  const void* in;  // copied into the buffer before the launch (or nullptr)
  void* out;       // copied out of the buffer after the launch (or nullptr)
};
struct GraphEntry {
  cudaGraphExec_t exec = nullptr;
  void* buf = nullptr;
  std::vector<size_t> off;
  cudaEvent_t done = nullptr;
};
std::mutex graph_mu;
std::list<std::pair<std::string, GraphEntry>> graph_cache;  // most recent first
constexpr size_t kGraphCacheEntries = 4;
constexpr size_t kGraphMaxBytes = size_t(256) << 20;         // larger problems run eagerly

void drop_entry(GraphEntry& e) {
  if (e.done) cudaEventSynchronize(e.done);
  if (e.exec) cudaGraphExecDestroy(e.exec);
  if (e.buf) cudaFree(e.buf);
  if (e.done) cudaEventDestroy(e.done);
}

template <class F>
void cached_graph_call(const std::string& key, Ctx& c, const std::vector<Slot>& slots, F&& record) {
  std::lock_guard<std::mutex> g(graph_mu);
  auto it = graph_cache.begin();
  for (; it != graph_cache.end(); ++it)
    if (it->first == key) break;
  if (it == graph_cache.end()) {
    GraphEntry e;
    size_t total = 0;
    for (const auto& s : slots) {
      e.off.push_back(total);
      total = (total + s.bytes + 255) & ~size_t(255);
    }
    FT_CK(cudaMalloc(&e.buf, std::max<size_t>(total, 256)));
    std::vector<void*> ptr;
    for (size_t i = 0; i < slots.size(); ++i) ptr.push_back(static_cast<char*>(e.buf) + e.off[i]);
    cudaStream_t cs;
    FT_CK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
    Ctx cc = c;
    cc.stream = cs;
    FT_CB(cublas().set_stream(cc.h, cs));
    cudaGraph_t graph = nullptr;
    FT_CK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal));
    try {
      record(cc, ptr);
    } catch (...) {
      cudaStreamEndCapture(cs, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaStreamDestroy(cs);
      cublas().set_stream(c.h, c.stream);
      cudaFree(e.buf);
      throw;
    }
    FT_CK(cudaStreamEndCapture(cs, &graph));
    FT_CB(cublas().set_stream(c.h, c.stream));
    cudaStreamDestroy(cs);
    const cudaError_t ie = cudaGraphInstantiate(&e.exec, graph, 0);
    cudaGraphDestroy(graph);
    if (ie != cudaSuccess) {
      cudaFree(e.buf);
      FT_CK(ie);
    }
    FT_CK(cudaEventCreateWithFlags(&e.done, cudaEventDisableTiming));
    graph_cache.emplace_front(key, e);
    while (graph_cache.size() > kGraphCacheEntries) {
      drop_entry(graph_cache.back().second);
      graph_cache.pop_back();
    }
    it = graph_cache.begin();
  } else if (it != graph_cache.begin()) {
    graph_cache.splice(graph_cache.begin(), graph_cache, it);
    it = graph_cache.begin();
  }
  GraphEntry& e = it->second;
  FT_CK(cudaStreamWaitEvent(c.stream, e.done, 0));  // the buffers' previous use is over
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].in)
      FT_CK(cudaMemcpyAsync(static_cast<char*>(e.buf) + e.off[i], slots[i].in, slots[i].bytes,
                            cudaMemcpyDeviceToDevice, c.stream));
  FT_CK(cudaGraphLaunch(e.exec, c.stream));
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].out)
      FT_CK(cudaMemcpyAsync(slots[i].out, static_cast<char*>(e.buf) + e.off[i], slots[i].bytes,
                            cudaMemcpyDeviceToDevice, c.stream));
  FT_CK(cudaEventRecord(e.done, c.stream));
}

bool graph_calls_enabled = true;

std::string shape_key(const char* op, const Net& net, int dtype, int K, int B, bool per_model, bool tf32) {
  int dev = 0;
  cudaGetDevice(&dev);
  std::string k = std::string(op) + "|" + std::to_string(dev) + "|" + std::to_string(dtype) + "|";
  for (int w : net.n) k += std::to_string(w) + ",";
  k += "|" + std::to_string(net.act) + std::to_string(net.loss) + std::to_string(net.out_act) + "|" +
       std::to_string(K) + "|" + std::to_string(B) + "|" + (per_model ? "p" : "s") + (tf32 ? "t" : "f");
  return k;
}

// Stream-ordered device memory, freed (in stream order) when the object goes.
struct Mem {
  void* p = nullptr;
  cudaStream_t s = nullptr;
  Mem(size_t bytes, cudaStream_t st) : s(st) { FT_CK(cudaMallocAsync(&p, std::max<size_t>(bytes, 256), s)); }
  ~Mem() {
    if (p) cudaFreeAsync(p, s);
  }
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  template <class T>
  T* as(size_t byte_offset = 0) const { return reinterpret_cast<T*>(static_cast<char*>(p) + byte_offset); }
};

Ctx make_ctx(uintptr_t stream, bool tf32, bool f32) {
  Ctx c;
  c.stream = reinterpret_cast<cudaStream_t>(stream);
  c.h = handle_for_current_device();
  FT_CB(cublas().set_stream(c.h, c.stream));
  FT_CB(cublas().set_math_mode(c.h, (tf32 && f32) ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return c;
}

template <class T>
Bat<T> make_bat(const Net& net, const T* X, const int64_t* y, int B, bool per_model) {
  Bat<T> b;
  b.X = X;
  b.sX = per_model ? (long long)B * net.n[0] : 0;
  b.y = y;
  b.sy = per_model ? B : 0;
  b.B = B;
  b.norm = B;
  return b;
}

size_t align(size_t x) { return (x + 255) & ~size_t(255); }

}  // namespace

// ------------------------------------------------------------------- the four functions -----
template <class T>
void value_and_grad(const Net& net, int K, int B, bool per_model, const T* theta, const T* X,
                    const int64_t* y, T* L, T* g, Ctx& c) {
  DWork<T> w;
  Mem m(w.carve(net, K, B, nullptr), c.stream);
  w.carve(net, K, B, m.as<char>());
  const Bat<T> bt = make_bat(net, X, y, B, per_model);
  const LP<T> P = LP<T>::flat(net, const_cast<T*>(theta)), G = LP<T>::flat(net, g);
  FT_CK(cudaMemsetAsync(w.loss, 0, sizeof(double) * K, c.stream));
  forward(c, net, P, bt, w, K, true, false);
  backward(c, net, P, bt, w, K, &G, T(0), false);
  k_finish<T><<<grid_for(K), TPB, 0, c.stream>>>(w.loss, w.gn, w.gw1, L, static_cast<T*>(nullptr), K);
  FT_LAUNCHED();
}

template <class T>
void hvp(const Net& net, int K, int B, bool per_model, const T* theta, const T* X, const int64_t* y,
         const T* v, T* Hv, Ctx& c) {
  DWork<T> w;
  Mem m(w.carve(net, K, B, nullptr), c.stream);
  w.carve(net, K, B, m.as<char>());
  const Bat<T> bt = make_bat(net, X, y, B, per_model);
  const LP<T> P = LP<T>::flat(net, const_cast<T*>(theta)), V = LP<T>::flat(net, const_cast<T*>(v));
  const LP<T> Out = LP<T>::flat(net, Hv);
  forward(c, net, P, bt, w, K, false, false);
  backward<T>(c, net, P, bt, w, K, nullptr, T(0), false);
  rforward(c, net, P, V, bt, w, K, false);
  rbackward(c, net, P, V, bt, w, K, Out, T(0), static_cast<const T*>(nullptr));
}

template <class T>
void grad_G(const Net& net, int K, int B, bool per_model, const T* theta, const T* X, const int64_t* y,
            T* L, T* G, T* dG, Ctx& c) {
  DWork<T> w;
  const size_t wb = align(w.carve(net, K, B, nullptr));
  Mem m(wb + sizeof(T) * size_t(K) * net.P, c.stream);
  w.carve(net, K, B, m.as<char>());
  T* g = m.as<T>(wb);
  const Bat<T> bt = make_bat(net, X, y, B, per_model);
  const LP<T> P = LP<T>::flat(net, const_cast<T*>(theta)), Gp = LP<T>::flat(net, g), Out = LP<T>::flat(net, dG);
  const bool gram = !per_model && use_gram(net, B, K);
  const int n0 = net.n[0];
  FT_CK(cudaMemsetAsync(w.loss, 0, sizeof(double) * K, c.stream));
  FT_CK(cudaMemsetAsync(w.gw1, 0, sizeof(double) * K, c.stream));
  if (gram) gemm(c, false, true, B, B, n0, T(1), X, n0, X, n0, T(0), w.gram, B);
  forward(c, net, P, bt, w, K, true, false);
  backward(c, net, P, bt, w, K, &Gp, T(0), gram);
  if (gram) gram_S(c, net, bt, w, K);
  const long long lo = gram ? (long long)net.n[1] * n0 : 0;
  k_sqnorm<T><<<K, TPB, 0, c.stream>>>(g, net.P, lo, net.P, w.gn);
  FT_LAUNCHED();
  k_finish<T><<<grid_for(K), TPB, 0, c.stream>>>(w.loss, w.gn, w.gw1, L, G, K);
  FT_LAUNCHED();
  rforward(c, net, P, Gp, bt, w, K, gram);
  rbackward(c, net, P, Gp, bt, w, K, Out, T(0), static_cast<const T*>(nullptr));
}

template <class T>
void evaluate(const Net& net, int K, int64_t N, int block, const T* theta, const T* X, const int64_t* y,
              T* loss, T* acc, T* grad, Ctx& c) {
  // Rows per block so that the workspace stays near 2 GiB for any K.
  int64_t per_row = 0;
  for (int l = 1; l <= net.L(); ++l) per_row += 8LL * K * net.n[l] * sizeof(T);
  const int64_t fit = std::max<int64_t>(1, (int64_t(2) << 30) / std::max<int64_t>(per_row, 1));
  const int Bb = int(std::min<int64_t>({int64_t(block), N, fit}));
  DWork<T> w;
  Mem m(w.carve(net, K, Bb, nullptr), c.stream);
  w.carve(net, K, Bb, m.as<char>());
  const LP<T> P = LP<T>::flat(net, const_cast<T*>(theta));
  const LP<T> G = grad ? LP<T>::flat(net, grad) : LP<T>();
  FT_CK(cudaMemsetAsync(w.loss, 0, sizeof(double) * K, c.stream));
  FT_CK(cudaMemsetAsync(w.correct, 0, sizeof(int64_t) * K, c.stream));
  for (int64_t r0 = 0; r0 < N; r0 += Bb) {
    Bat<T> bt;
    bt.X = X + r0 * net.n[0];
    bt.y = y + r0;
    bt.B = int(std::min<int64_t>(Bb, N - r0));
    bt.norm = double(N);
    forward(c, net, P, bt, w, K, true, true);
    if (grad) backward(c, net, P, bt, w, K, &G, r0 == 0 ? T(0) : T(1), false);
  }
  k_finish<T><<<grid_for(K), TPB, 0, c.stream>>>(w.loss, w.gn, w.gw1, loss, static_cast<T*>(nullptr), K);
  k_acc<T><<<grid_for(K), TPB, 0, c.stream>>>(w.correct, acc, double(N), K);
  FT_LAUNCHED();
}

// ------------------------------------------------------------------- the inner descent ------
constexpr int kMaxLayers = 16;
struct LayerTab {
  int L;
  long long offW[kMaxLayers + 2], offb[kMaxLayers + 2], nW[kMaxLayers + 2], nb[kMaxLayers + 2];
  long long packW[kMaxLayers + 2], packb[kMaxLayers + 2];
};

LayerTab make_tab(const Net& net, long long K) {
  if (net.L() > kMaxLayers) throw std::invalid_argument("the CUDA backend supports at most 16 layers");
  LayerTab t{};
  t.L = net.L();
  long long off = 0;
  for (int l = 1; l <= t.L; ++l) {
    t.offW[l] = net.offW[l];
    t.offb[l] = net.offb[l];
    t.nW[l] = (long long)net.n[l] * net.n[l - 1];
    t.nb[l] = net.n[l];
    t.packW[l] = off;
    off += K * t.nW[l];
    t.packb[l] = off;
    off += K * t.nb[l];
  }
  t.offW[t.L + 1] = net.P;
  return t;
}

// Flat [K, P] → packed (each layer's W of all models contiguous, then its b); with
// to_packed = false the reverse, for models with mask[k] (or all).
template <class T>
__global__ void k_repack(T* __restrict__ flat, T* __restrict__ packed, LayerTab t, int K, long long P,
                         bool to_packed, const int8_t* __restrict__ mask) {
  FT_GRID_STRIDE(q, int64_t(K) * P) {
    const int k = int(q / P);
    if (!to_packed && mask && !mask[k]) continue;
    const long long j = q % P;
    int l = 1;
    while (l < t.L && j >= t.offW[l + 1]) ++l;
    const long long pi = (j < t.offb[l]) ? t.packW[l] + k * t.nW[l] + (j - t.offW[l])
                                         : t.packb[l] + k * t.nb[l] + (j - t.offb[l]);
    if (to_packed) packed[pi] = flat[q];
    else flat[q] = packed[pi];
  }
}

// Packed → flat for the models with mask[k]: one block per model, so the many models that are
// not being saved this step cost one flag read each.
template <class T>
__global__ void k_save_models(T* __restrict__ flat, const T* __restrict__ packed, LayerTab t, long long P,
                              const int8_t* __restrict__ mask) {
  const int k = blockIdx.x;
  if (!mask[k]) return;
  for (int l = 1; l <= t.L; ++l) {
    for (long long j = threadIdx.x; j < t.nW[l]; j += blockDim.x)
      flat[k * P + t.offW[l] + j] = packed[t.packW[l] + k * t.nW[l] + j];
    for (long long j = threadIdx.x; j < t.nb[l]; j += blockDim.x)
      flat[k * P + t.offb[l] + j] = packed[t.packb[l] + k * t.nb[l] + j];
  }
}

template <class T>
__global__ void k_init_descent(const T* lr, T* alpha, int8_t* status, double* G_first, double* G_last,
                               int64_t* steps_done, int K) {
  FT_GRID_STRIDE(k, K) {
    alpha[k] = -lr[k];
    status[k] = 0;
    G_first[k] = NAN;
    G_last[k] = NAN;
    steps_done[k] = 0;
  }
}

// Gathers the step's rows: Xb [nb, B, n0] from X [N, n0] through the permutation(s), at the
// device step counter. perm is [N] (shared) or [nb, N] (independent).
template <class T>
__global__ void k_gather(const T* __restrict__ X, const int64_t* __restrict__ y, const int32_t* __restrict__ perm,
                         const int64_t* __restrict__ step, long long spe, int Bfull, int Bs, int n0, int nb,
                         long long N, T* __restrict__ Xb, int64_t* __restrict__ yb) {
  const long long pos = (*step) % spe;
  FT_GRID_STRIDE(q, int64_t(nb) * Bs * n0) {
    const int j = int(q % n0);
    const int64_t rk = q / n0;
    const int r = int(rk % Bs), k = int(rk / Bs);
    const int64_t idx = perm[k * N + pos * Bfull + r];
    Xb[q] = X[idx * n0 + j];
    if (j == 0) yb[rk] = y[idx];
  }
}

// Per model: G, the verdict, the trace; a model that stops gets alpha = 0 and just[k] = 1.
template <class T>
__global__ void k_judge(const double* gn, const double* gw1, double* G_first, double* G_last, int8_t* status,
                        int64_t* steps_done, const T* lr, T* alpha, int8_t* just, T* trace, long long n_rec,
                        long long record_every, const int64_t* step, double tol, double growth,
                        unsigned long long* active, int K) {
  FT_GRID_STRIDE(k, K) {
    just[k] = 0;
    if (status[k] != 0) {
      alpha[k] = T(0);
      continue;
    }
    const long long s = *step;
    const double G = 0.5 * (gn[k] + gw1[k]);
    const bool first = (s == 0);
    if (first) G_first[k] = G;
    int8_t v = 0;
    if (!isfinite(G)) v = 4;                                     // nonfinite
    else if (!first && growth > 0 && G > growth * G_first[k]) v = 3;  // diverged
    else if (G < tol) v = 1;                                     // converged
    if (s % record_every == 0) trace[k * n_rec + s / record_every] = T(G);
    G_last[k] = G;
    if (v != 0) {
      status[k] = v;
      steps_done[k] = s;
      just[k] = 1;
      alpha[k] = T(0);
      atomicAdd(active, (unsigned long long)-1LL);
    } else {
      alpha[k] = -lr[k];
    }
  }
}

__global__ void k_step_inc(int64_t* step) { *step += 1; }

__global__ void k_mark_running(const int8_t* status, int8_t* mask, int K) {
  FT_GRID_STRIDE(k, K) mask[k] = (status[k] == 0);
}

// The models still running at the end: status max_steps (or interrupted), or nonfinite if their
// parameters are not all finite (one block per model).
template <class T>
__global__ void k_finish_descent(const T* __restrict__ flat, long long P, int8_t* status, int64_t* steps_done,
                                 long long s_done, int8_t end_code) {
  const int k = blockIdx.x;
  if (status[k] != 0) return;
  double bad = 0;
  for (long long q = threadIdx.x; q < P; q += blockDim.x) bad += isfinite(double(flat[k * P + q])) ? 0.0 : 1.0;
  bad = block_sum(bad);
  if (threadIdx.x == 0) {
    status[k] = bad > 0 ? int8_t(4) : end_code;
    steps_done[k] = s_done;
  }
}

// Checkpoints the loop did not reach: a stopped model's endpoint, NaN for one cut off by an
// interruption (status 5), one block per model.
template <class T>
__global__ void k_fill_snap(T* __restrict__ snap, const T* __restrict__ flat, const int8_t* status, long long P) {
  const int k = blockIdx.x;
  const bool cut = status[k] == 5;
  for (long long q = threadIdx.x; q < P; q += blockDim.x) snap[k * P + q] = cut ? T(NAN) : flat[k * P + q];
}

template <class T>
__global__ void k_gd_update(T* __restrict__ theta, const T* __restrict__ hv, const T* __restrict__ alpha, long long P, int K) {
  FT_GRID_STRIDE(q, int64_t(K) * P) {
    const T a = alpha[q / P];
    if (a != T(0)) theta[q] += a * hv[q];
  }
}

template <class T>
void inner_descent(const Net& net, const DescentArgs& a, Ctx& c0) {
  const int K = a.K, B = a.B, n0 = net.n[0];
  const long long P = net.P, N = a.N;
  const LayerTab tab = make_tab(net, K);
  // A stream of our own (graph capture cannot use the legacy default stream), ordered after the
  // caller's stream on entry and before it on exit.
  cudaStream_t st;
  FT_CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t ev;
  FT_CK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  struct Cleanup {
    cudaStream_t st; cudaEvent_t ev; cudaStream_t caller; cublasHandle_t h;
    ~Cleanup() {
      cudaEventRecord(ev, st);
      cudaStreamWaitEvent(caller, ev, 0);
      if (h) cublas().set_stream(h, caller);
      cudaEventDestroy(ev);
      cudaStreamDestroy(st);
    }
  } cleanup{st, ev, c0.stream, c0.h};
  FT_CK(cudaEventRecord(ev, c0.stream));
  FT_CK(cudaStreamWaitEvent(st, ev, 0));
  Ctx c = c0;
  c.stream = st;
  FT_CB(cublas().set_stream(c.h, st));

  T* theta_out = reinterpret_cast<T*>(a.theta);
  const T* theta0 = reinterpret_cast<const T*>(a.theta0);
  const T* X = reinterpret_cast<const T*>(a.X);
  const T* lr = reinterpret_cast<const T*>(a.lr);
  T* trace = reinterpret_cast<T*>(a.G_trace);
  const int nb = a.shared ? 1 : K;   // batches drawn per step

  // ---- memory ----
  DWork<T> w;
  const int Bw = a.full_batch ? int(std::min<int64_t>(a.eval_block, N)) : B;
  const size_t wbytes = align(w.carve(net, K, Bw, nullptr));
  size_t off = wbytes;
  auto slot = [&](size_t bytes) { size_t o = off; off = align(off + bytes); return o; };
  const size_t o_pack = slot(sizeof(T) * size_t(K) * P);
  const size_t o_g = slot(sizeof(T) * size_t(K) * P);
  const size_t o_hv = a.full_batch ? slot(sizeof(T) * size_t(K) * P) : 0;
  const size_t o_xb = a.full_batch ? 0 : slot(sizeof(T) * size_t(nb) * B * n0);
  const size_t o_yb = a.full_batch ? 0 : slot(sizeof(int64_t) * size_t(nb) * B);
  const size_t o_perm = a.full_batch ? 0 : slot(sizeof(int32_t) * size_t(nb) * N);
  const size_t o_alpha = slot(sizeof(T) * K);
  const size_t o_just = slot(K);
  const size_t o_step = slot(sizeof(int64_t));
  const size_t o_active = slot(sizeof(unsigned long long));
  Mem m(off, st);
  w.carve(net, K, Bw, m.as<char>());
  T* packed = m.as<T>(o_pack);
  T* g = m.as<T>(o_g);
  T* alpha = m.as<T>(o_alpha);
  int8_t* just = m.as<int8_t>(o_just);
  int64_t* step = m.as<int64_t>(o_step);
  auto* active = m.as<unsigned long long>(o_active);

  int8_t* status = reinterpret_cast<int8_t*>(a.status);
  int64_t* steps_done = reinterpret_cast<int64_t*>(a.steps_done);
  double* G_first = reinterpret_cast<double*>(a.G_first);
  double* G_last = reinterpret_cast<double*>(a.G_last);
  k_init_descent<T><<<grid_for(K), TPB, 0, st>>>(lr, alpha, status, G_first, G_last, steps_done, K);
  FT_LAUNCHED();
  FT_CK(cudaMemsetAsync(step, 0, sizeof(int64_t), st));
  const unsigned long long K_ull = (unsigned long long)K;
  FT_CK(cudaMemcpyAsync(active, &K_ull, sizeof(K_ull), cudaMemcpyHostToDevice, st));
  FT_CK(cudaMemsetAsync(just, 0, K, st));

  const LP<T> Gp = LP<T>::flat(net, g);
  const long long lo_W1 = (long long)net.n[1] * n0;
  int64_t s_done = 0;
  int64_t jsnap = 0;  // next checkpoint
  T* snaps = reinterpret_cast<T*>(a.snaps);
  bool interrupted = false;
  unsigned long long act_host = K;

  if (a.full_batch) {
    // ---- gd: two passes over the data per step, on the flat parameters in theta_out ----
    FT_CK(cudaMemcpyAsync(theta_out, theta0, sizeof(T) * size_t(K) * P, cudaMemcpyDeviceToDevice, st));
    T* hv = m.as<T>(o_hv);
    const LP<T> Pf = LP<T>::flat(net, theta_out), Hp = LP<T>::flat(net, hv);
    FT_CK(cudaMemsetAsync(w.gw1, 0, sizeof(double) * K, st));
    for (int64_t s = 0; s < a.steps; ++s) {
      for (int pass = 0; pass < 2; ++pass) {
        for (long long r0 = 0; r0 < N; r0 += Bw) {
          Bat<T> bt;
          bt.X = X + r0 * n0;
          bt.y = a.y + r0;
          bt.B = int(std::min<long long>(Bw, N - r0));
          bt.norm = double(N);
          forward(c, net, Pf, bt, w, K, false, false);
          if (pass == 0) {
            backward(c, net, Pf, bt, w, K, &Gp, r0 == 0 ? T(0) : T(1), false);
          } else {
            backward<T>(c, net, Pf, bt, w, K, nullptr, T(0), false);
            rforward(c, net, Pf, Gp, bt, w, K, false);
            rbackward(c, net, Pf, Gp, bt, w, K, Hp, r0 == 0 ? T(0) : T(1), static_cast<const T*>(nullptr));
          }
        }
        if (pass == 0) {
          k_sqnorm<T><<<K, TPB, 0, st>>>(g, P, 0, P, w.gn);
          k_judge<T><<<grid_for(K), TPB, 0, st>>>(w.gn, w.gw1, G_first, G_last, status, steps_done, lr, alpha,
                                                 just, trace, a.n_rec, a.record_every, step, a.G_tol, a.growth,
                                                 active, K);
          FT_LAUNCHED();
        }
      }
      k_gd_update<T><<<grid_for(int64_t(K) * P), TPB, 0, st>>>(theta_out, hv, alpha, P, K);
      k_step_inc<<<1, 1, 0, st>>>(step);
      FT_LAUNCHED();
      s_done = s + 1;
      for (; jsnap < a.n_snap && a.snap_steps[jsnap] == s_done; ++jsnap)
        FT_CK(cudaMemcpyAsync(snaps + size_t(jsnap) * K * P, theta_out, sizeof(T) * size_t(K) * P,
                              cudaMemcpyDeviceToDevice, st));
      FT_CK(cudaMemcpyAsync(&act_host, active, sizeof(act_host), cudaMemcpyDeviceToHost, st));
      FT_CK(cudaStreamSynchronize(st));
      if (report_step(a.progress, s + 1, (int64_t)act_host, (int64_t)act_host)) { interrupted = true; break; }
      if (act_host == 0) break;
    }
  } else {
    // ---- sgd: the captured step ----
    FT_CK(cudaMemsetAsync(theta_out, 0, sizeof(T) * size_t(K) * P, st));
    k_repack<T><<<grid_for(int64_t(K) * P), TPB, 0, st>>>(const_cast<T*>(theta0), packed, tab, K, P, true, nullptr);
    FT_LAUNCHED();
    LP<T> Pp;
    Pp.W.assign(net.L() + 1, nullptr);
    Pp.b = Pp.W;
    Pp.sW.assign(net.L() + 1, 0);
    Pp.sb = Pp.sW;
    for (int l = 1; l <= net.L(); ++l) {
      Pp.W[l] = packed + tab.packW[l];
      Pp.b[l] = packed + tab.packb[l];
      Pp.sW[l] = tab.nW[l];
      Pp.sb[l] = tab.nb[l];
    }
    T* Xb = m.as<T>(o_xb);
    int64_t* yb = m.as<int64_t>(o_yb);
    int32_t* perm = m.as<int32_t>(o_perm);
    const long long spe = a.drop_last ? N / B : (N + B - 1) / B;
    const bool gram = a.shared && use_gram(net, B, K);

    auto one_step = [&](int Bs) {
      Bat<T> bt = make_bat(net, static_cast<const T*>(Xb), static_cast<const int64_t*>(yb), Bs, !a.shared);
      k_gather<T><<<grid_for(int64_t(nb) * Bs * n0), TPB, 0, st>>>(X, a.y, perm, step, spe, B, Bs, n0, nb, N, Xb, yb);
      FT_LAUNCHED();
      FT_CK(cudaMemsetAsync(w.gw1, 0, sizeof(double) * K, st));
      if (gram) gemm(c, false, true, Bs, Bs, n0, T(1), Xb, n0, Xb, n0, T(0), w.gram, Bs);
      forward(c, net, Pp, bt, w, K, false, false);
      backward(c, net, Pp, bt, w, K, &Gp, T(0), gram);
      if (gram) {
        // gram_S with the step's own leading dimension for the Gram matrix
        const int n1 = net.n[1], ld = K * n1;
        gemm(c, false, false, Bs, ld, Bs, T(1), w.gram, Bs, w.E[1], ld, T(0), w.RZ[1], ld);
        k_dot_models<T><<<K, TPB, 0, st>>>(w.E[1], w.RZ[1], Bs, K, n1, w.gw1);
        FT_LAUNCHED();
      }
      k_sqnorm<T><<<K, TPB, 0, st>>>(g, P, gram ? lo_W1 : 0, P, w.gn);
      k_judge<T><<<grid_for(K), TPB, 0, st>>>(w.gn, w.gw1, G_first, G_last, status, steps_done, lr, alpha, just,
                                             trace, a.n_rec, a.record_every, step, a.G_tol, a.growth, active, K);
      k_save_models<T><<<K, TPB, 0, st>>>(theta_out, packed, tab, P, just);
      FT_LAUNCHED();
      rforward(c, net, Pp, Gp, bt, w, K, gram);
      rbackward(c, net, Pp, Gp, bt, w, K, Pp, T(1), static_cast<const T*>(alpha));
      k_step_inc<<<1, 1, 0, st>>>(step);
      FT_LAUNCHED();
    };

    std::map<int, cudaGraphExec_t> graphs;
    struct GraphCleanup {
      std::map<int, cudaGraphExec_t>& g;
      ~GraphCleanup() { for (auto& kv : g) cudaGraphExecDestroy(kv.second); }
    } gc{graphs};
    auto run_step = [&](int Bs) {
      if (!a.use_graph) { one_step(Bs); return; }
      auto it = graphs.find(Bs);
      if (it == graphs.end()) {
        cudaGraph_t graph;
        FT_CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        try {
          one_step(Bs);
        } catch (...) {
          cudaStreamEndCapture(st, &graph);
          throw;
        }
        FT_CK(cudaStreamEndCapture(st, &graph));
        cudaGraphExec_t exec;
        FT_CK(cudaGraphInstantiate(&exec, graph, 0));
        cudaGraphDestroy(graph);
        it = graphs.emplace(Bs, exec).first;
      }
      FT_CK(cudaGraphLaunch(it->second, st));
    };

    std::vector<int32_t> hperm(size_t(nb) * N);
    std::vector<uint64_t> streams(a.streams, a.streams + (a.shared ? 1 : K));
    const int64_t check_every = 32;
    for (int64_t s = 0; s < a.steps; ++s) {
      const long long epoch = s / spe, pos = s % spe;
      const int Bs = int(std::min<long long>(B, N - pos * B));
      if (pos == 0) {
        FT_CK(cudaStreamSynchronize(st));  // the previous epoch's permutation is no longer read
        if (a.shared) cpu::epoch_perm(streams[0], uint64_t(epoch), N, hperm.data());
        else cpu::epoch_perms(streams.data(), K, uint64_t(epoch), N, hperm.data());
        FT_CK(cudaMemcpyAsync(perm, hperm.data(), sizeof(int32_t) * hperm.size(), cudaMemcpyHostToDevice, st));
      }
      run_step(Bs);
      s_done = s + 1;
      for (; jsnap < a.n_snap && a.snap_steps[jsnap] == s_done; ++jsnap) {
        // stopped models' endpoints (theta_out rows), then the running ones from the packed store
        T* dst = snaps + size_t(jsnap) * K * P;
        FT_CK(cudaMemcpyAsync(dst, theta_out, sizeof(T) * size_t(K) * P, cudaMemcpyDeviceToDevice, st));
        k_mark_running<<<grid_for(K), TPB, 0, st>>>(status, just, K);
        k_save_models<T><<<K, TPB, 0, st>>>(dst, packed, tab, P, just);
        FT_LAUNCHED();
      }
      const bool check = (s % check_every == check_every - 1) || s + 1 == a.steps;
      if (check) {
        FT_CK(cudaMemcpyAsync(&act_host, active, sizeof(act_host), cudaMemcpyDeviceToHost, st));
        FT_CK(cudaStreamSynchronize(st));
      }
      if (report_step(a.progress, s + 1, (int64_t)act_host, (int64_t)act_host)) { interrupted = true; break; }
      if (check && act_host == 0) break;
    }
    // The models still running: their packed parameters out (a stopped model's row was written
    // when it stopped; its packed copy may since have gone non-finite and is not copied again).
    k_mark_running<<<grid_for(K), TPB, 0, st>>>(status, just, K);
    k_save_models<T><<<K, TPB, 0, st>>>(theta_out, packed, tab, P, just);
    FT_LAUNCHED();
  }
  k_finish_descent<T><<<K, TPB, 0, st>>>(theta_out, P, status, steps_done, s_done, int8_t(interrupted ? 5 : 2));
  FT_LAUNCHED();
  for (; jsnap < a.n_snap; ++jsnap) {
    k_fill_snap<T><<<K, TPB, 0, st>>>(snaps + size_t(jsnap) * K * P, theta_out, status, P);
    FT_LAUNCHED();
  }
  FT_CK(cudaStreamSynchronize(st));
}

// ------------------------------------------------------------------- typed entry points -----
namespace {
template <class F>
void with_dtype(int dtype, F&& f) {
  if (dtype == 0) f(float(0));
  else if (dtype == 1) f(double(0));
  else throw std::invalid_argument("dtype code must be 0 (float32) or 1 (float64)");
}
}  // namespace

namespace {
bool use_graph_cache(const Net& net, int K, int B, bool per_model, size_t tsize) {
  const size_t bytes = tsize * (size_t(K) * net.P + size_t(per_model ? K : 1) * B * net.n[0]);
  return graph_calls_enabled && bytes <= kGraphMaxBytes;
}
}  // namespace

void set_graph_calls(bool on) { graph_calls_enabled = on; }

namespace {
// The one wrapper of the batch ops: slots[0..2] are θ [K, P], X [nb, B, n0] and y [nb, B], then
// the op's other inputs and its outputs. Small problems replay a cached CUDA graph over
// persistent buffers (cached_graph_call); large ones, or all with graphs off, run eagerly on the
// caller's pointers. `body(ctx, p)` runs the op on the pointers p, one per slot.
template <class T, class F>
void batch_call(const char* tag, const Net& net, int dtype, int K, int B, bool per_model, bool tf32, int K_size,
                uintptr_t stream, uintptr_t theta, uintptr_t X, uintptr_t y, std::vector<Slot> more, F&& body) {
  Ctx c = make_ctx(stream, tf32, dtype == 0);
  const size_t nb = per_model ? size_t(K) : 1;
  std::vector<Slot> slots = {{sizeof(T) * size_t(K) * net.P, (const void*)theta, nullptr},
                             {sizeof(T) * nb * B * net.n[0], (const void*)X, nullptr},
                             {sizeof(int64_t) * nb * B, (const void*)y, nullptr}};
  slots.insert(slots.end(), more.begin(), more.end());
  if (!use_graph_cache(net, K_size, B, per_model, sizeof(T))) {
    std::vector<void*> p;
    for (const auto& sl : slots) p.push_back(sl.in ? const_cast<void*>(sl.in) : sl.out);
    body(c, p);
    return;
  }
  cached_graph_call(shape_key(tag, net, dtype, K, B, per_model, tf32), c, slots, body);
}
}  // namespace

void api_value_and_grad(const Net& net, int dtype, int K, int B, bool per_model, uintptr_t theta, uintptr_t X,
                        uintptr_t y, uintptr_t L, uintptr_t g, uintptr_t stream, bool tf32) {
  with_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    batch_call<T>("vag", net, dtype, K, B, per_model, tf32, K, stream, theta, X, y,
                  {{sizeof(T) * size_t(K), nullptr, (void*)L}, {sizeof(T) * size_t(K) * net.P, nullptr, (void*)g}},
                  [&](Ctx& cc, std::vector<void*>& p) {
                    value_and_grad<T>(net, K, B, per_model, (const T*)p[0], (const T*)p[1], (const int64_t*)p[2],
                                      (T*)p[3], (T*)p[4], cc);
                  });
  });
}

void api_hvp(const Net& net, int dtype, int K, int B, bool per_model, uintptr_t theta, uintptr_t X, uintptr_t y,
             uintptr_t v, uintptr_t Hv, uintptr_t stream, bool tf32) {
  with_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    batch_call<T>("hvp", net, dtype, K, B, per_model, tf32, 2 * K, stream, theta, X, y,
                  {{sizeof(T) * size_t(K) * net.P, (const void*)v, nullptr},
                   {sizeof(T) * size_t(K) * net.P, nullptr, (void*)Hv}},
                  [&](Ctx& cc, std::vector<void*>& p) {
                    hvp<T>(net, K, B, per_model, (const T*)p[0], (const T*)p[1], (const int64_t*)p[2],
                           (const T*)p[3], (T*)p[4], cc);
                  });
  });
}

void api_grad_G(const Net& net, int dtype, int K, int B, bool per_model, uintptr_t theta, uintptr_t X,
                uintptr_t y, uintptr_t L, uintptr_t G, uintptr_t dG, uintptr_t stream, bool tf32) {
  with_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    batch_call<T>("gradG", net, dtype, K, B, per_model, tf32, K, stream, theta, X, y,
                  {{sizeof(T) * size_t(K), nullptr, (void*)L}, {sizeof(T) * size_t(K), nullptr, (void*)G},
                   {sizeof(T) * size_t(K) * net.P, nullptr, (void*)dG}},
                  [&](Ctx& cc, std::vector<void*>& p) {
                    grad_G<T>(net, K, B, per_model, (const T*)p[0], (const T*)p[1], (const int64_t*)p[2], (T*)p[3],
                              (T*)p[4], (T*)p[5], cc);
                  });
  });
}

void api_evaluate(const Net& net, int dtype, int K, int64_t N, int block, uintptr_t theta, uintptr_t X,
                  uintptr_t y, uintptr_t loss, uintptr_t acc, uintptr_t grad, uintptr_t stream, bool tf32) {
  with_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    Ctx c = make_ctx(stream, tf32, dtype == 0);
    evaluate<T>(net, K, N, block, (const T*)theta, (const T*)X, (const int64_t*)y, (T*)loss, (T*)acc,
                (T*)grad, c);
  });
}

void api_inner_descent(const Net& net, int dtype, const DescentArgs& a, uintptr_t stream, bool tf32) {
  with_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    Ctx c = make_ctx(stream, tf32, dtype == 0);
    inner_descent<T>(net, a, c);
  });
}

void synchronize(uintptr_t stream) { FT_CK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream))); }

}  // namespace cuda
}  // namespace ft
