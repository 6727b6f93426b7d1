// module.cpp: fasttrap._core, the pybind11 face of the compiled core.
//
// The CPU functions take NumPy arrays (buffer protocol); the CUDA functions (cuda_bindings.h)
// take raw device pointers and a stream. Nothing links libtorch. Python validates every
// argument first (fasttrap/ops/validate.py, through fasttrap/ops/_dispatch.py); the checks here are a second line, so that even a
// direct call of _core with bad arrays raises instead of crashing. The GIL is released for
// every compute call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_engine.h"
#include "cpu_parallel.h"
#include "ft_blas.h"
#include "ft_net.h"

#ifdef FT_WITH_CUDA
#include "cuda/cuda_api.h"
#endif

namespace py = pybind11;
using ft::Net;

namespace {

Net make_net(const std::vector<int>& widths, int act, int loss, int out_act) {
  return Net::make(widths, act, loss, out_act);
}

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

template <class T>
const T* cptr(const py::array& a, const char* name, std::vector<int64_t> shape) {
  if (!py::isinstance<py::array_t<T>>(a) || !a.dtype().is(py::dtype::of<T>()))
    bad(std::string(name) + ": wrong dtype");
  if (!(a.flags() & py::array::c_style)) bad(std::string(name) + ": must be C-contiguous");
  if (a.ndim() != py::ssize_t(shape.size())) bad(std::string(name) + ": wrong number of dimensions");
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] >= 0 && a.shape(i) != shape[i]) bad(std::string(name) + ": wrong shape");
  return static_cast<const T*>(a.data());
}

template <class T>
T* mptr(py::array& a, const char* name, std::vector<int64_t> shape) {
  cptr<T>(a, name, shape);
  if (!a.writeable()) bad(std::string(name) + ": must be writeable");
  return static_cast<T*>(a.mutable_data());
}

bool is_f64(const py::array& a) { return a.dtype().is(py::dtype::of<double>()); }
bool is_f32(const py::array& a) { return a.dtype().is(py::dtype::of<float>()); }

// The one dtype branch of every op: the dtype of θ picks the instantiation, f(T{}) with T float or
// double (the impls check every other array against it and release the GIL around the compute).
template <class F>
decltype(auto) by_dtype(const py::array& theta, const char* name, F&& f) {
  if (is_f64(theta)) return f(double(0));
  if (is_f32(theta)) return f(float(0));
  bad(std::string(name) + ": dtype must be float32 or float64");
}

template <class T>
ft::cpu::Batch<T> make_batch(const Net& net, int64_t K, const py::array& X, const py::array& y) {
  ft::cpu::Batch<T> b;
  if (X.ndim() == 2) {
    b.B = int(X.shape(0));
    b.X = cptr<T>(X, "X", {-1, net.n[0]});
    b.y = cptr<int64_t>(y, "y", {b.B});
    b.per_model = false;
  } else if (X.ndim() == 3) {
    b.B = int(X.shape(1));
    b.X = cptr<T>(X, "X", {K, -1, net.n[0]});
    b.y = cptr<int64_t>(y, "y", {K, b.B});
    b.per_model = true;
  } else {
    bad("X: must be [B, n0] or [K, B, n0]");
  }
  if (b.B < 1) bad("X: batch must have at least one row");
  const int64_t ny = int64_t(y.size());
  const int64_t* yp = b.y;
  const int C = net.n.back();
  for (int64_t i = 0; i < ny; ++i)
    if (yp[i] < 0 || yp[i] >= C) bad("y: labels must lie in [0, n_out)");
  return b;
}

ft::cpu::Opts make_opts(int threads, int chunk) {
  ft::cpu::Opts o;
  o.threads = std::max(1, threads);
  o.chunk = std::max(1, std::min(chunk, ft::cpu::kMaxChunk));
  return o;
}

int64_t theta_K(const Net& net, const py::array& theta) {
  if (theta.ndim() != 2 || theta.shape(1) != net.P) bad("theta: must be [K, P] with P = mlp.n_params");
  if (theta.shape(0) < 1) bad("theta: K must be >= 1");
  return theta.shape(0);
}

template <class T>
py::tuple vag_impl(const Net& net, const py::array& theta, const py::array& X, const py::array& y,
                   int threads, int chunk) {
  const int64_t K = theta_K(net, theta);
  const T* th = cptr<T>(theta, "theta", {K, net.P});
  auto b = make_batch<T>(net, K, X, y);
  py::array_t<T> L({K}), g({K, int64_t(net.P)});
  T* Lp = L.mutable_data();
  T* gp = g.mutable_data();
  {
    py::gil_scoped_release nogil;
    ft::cpu::value_and_grad<T>(net, K, th, b, Lp, gp, make_opts(threads, chunk));
  }
  return py::make_tuple(L, g);
}

template <class T>
py::array hvp_impl(const Net& net, const py::array& theta, const py::array& X, const py::array& y,
                   const py::array& v, int threads, int chunk) {
  const int64_t K = theta_K(net, theta);
  const T* th = cptr<T>(theta, "theta", {K, net.P});
  const T* vp = cptr<T>(v, "v", {K, net.P});
  auto b = make_batch<T>(net, K, X, y);
  py::array_t<T> Hv({K, int64_t(net.P)});
  T* hp = Hv.mutable_data();
  {
    py::gil_scoped_release nogil;
    ft::cpu::hvp<T>(net, K, th, b, vp, hp, make_opts(threads, chunk));
  }
  return Hv;
}

template <class T>
py::tuple gradG_impl(const Net& net, const py::array& theta, const py::array& X, const py::array& y,
                     int threads, int chunk) {
  const int64_t K = theta_K(net, theta);
  const T* th = cptr<T>(theta, "theta", {K, net.P});
  auto b = make_batch<T>(net, K, X, y);
  py::array_t<T> L({K}), G({K}), dG({K, int64_t(net.P)});
  T* Lp = L.mutable_data();
  T* Gp = G.mutable_data();
  T* dp = dG.mutable_data();
  {
    py::gil_scoped_release nogil;
    ft::cpu::grad_G<T>(net, K, th, b, Lp, Gp, dp, make_opts(threads, chunk));
  }
  return py::make_tuple(L, G, dG);
}

// loss [K], acc [K], grad [K, P] | None, and sample_sq [K, N] | None (‖∇ℓ_α‖² per sample).
template <class T>
py::tuple eval_impl(const Net& net, const py::array& theta, const py::array& X, const py::array& y,
                    int block, bool want_grad, int threads, bool want_sq) {
  const int64_t K = theta_K(net, theta);
  const T* th = cptr<T>(theta, "theta", {K, net.P});
  const T* xp = cptr<T>(X, "X", {-1, net.n[0]});
  const int64_t N = X.shape(0);
  const int64_t* yp = cptr<int64_t>(y, "y", {N});
  if (N < 1) bad("X: needs at least one row");
  for (int64_t i = 0; i < N; ++i)
    if (yp[i] < 0 || yp[i] >= net.n.back()) bad("y: labels must lie in [0, n_out)");
  if (block < 1) bad("block: must be >= 1");
  py::array_t<T> loss({K}), acc({K});
  py::object grad = py::none(), sq = py::none();
  T* gp = nullptr;
  T* sp = nullptr;
  if (want_grad) {
    py::array_t<T> g({K, int64_t(net.P)});
    gp = g.mutable_data();
    grad = g;
  }
  if (want_sq) {
    py::array_t<T> s({K, N});
    sp = s.mutable_data();
    sq = s;
  }
  T* lp = loss.mutable_data();
  T* ap = acc.mutable_data();
  {
    py::gil_scoped_release nogil;
    ft::cpu::evaluate<T>(net, K, th, xp, yp, N, block, lp, ap, gp, make_opts(threads, 1), sp);
  }
  return py::make_tuple(loss, acc, grad, sq);
}

// J [K, N, C, n0] (per-sample input→output Jacobians) or, with gram, [K, C·n0, C·n0] (𝒥ᵀ𝒥).
template <class T>
py::array jac_impl(const Net& net, const py::array& theta, const py::array& X, int block, bool gram, int threads) {
  const int64_t K = theta_K(net, theta);
  const T* th = cptr<T>(theta, "theta", {K, net.P});
  const T* xp = cptr<T>(X, "X", {-1, net.n[0]});
  const int64_t N = X.shape(0);
  if (N < 1) bad("X: needs at least one row");
  if (block < 1) bad("block: must be >= 1");
  const int64_t C = net.n.back(), n0 = net.n[0];
  if (gram) {
    py::array_t<T> G({K, C * n0, C * n0});
    T* gp = G.mutable_data();
    py::gil_scoped_release nogil;
    ft::cpu::jacobian_gram<T>(net, K, th, xp, N, block, gp, make_opts(threads, 1));
    return G;
  }
  py::array_t<T> J({K, N, C, n0});
  T* jp = J.mutable_data();
  py::gil_scoped_release nogil;
  ft::cpu::input_jacobian<T>(net, K, th, xp, N, jp, make_opts(threads, 1));
  return J;
}

template <class T>
py::dict descent_impl(const Net& net, const py::array& theta0, const py::array& X, const py::array& y,
                      const py::array& lr, int batch_size, int64_t steps, bool shared,
                      const py::array& streams, bool drop_last, bool full_batch, int eval_block,
                      double G_tol, double growth, int64_t record_every, py::array progress,
                      const py::array& snap_steps, int threads, int chunk) {
  const int64_t K = theta_K(net, theta0);
  ft::cpu::DescentArgs<T> a;
  const int64_t N = X.ndim() == 2 ? X.shape(0) : 0;
  ft::fill_descent_settings(a, K, N, batch_size, steps, shared, cptr<uint64_t>(streams, "streams", {K}), drop_last,
                            full_batch, eval_block, G_tol, growth, record_every,
                            mptr<int64_t>(progress, "progress", {4}));
  const int64_t J = snap_steps.ndim() == 1 ? snap_steps.shape(0) : -1;
  if (J < 0) bad("snap_steps: expected a 1-d int64 array");
  ft::fill_snapshots(a, J ? cptr<int64_t>(snap_steps, "snap_steps", {J}) : nullptr, J);
  a.theta0 = cptr<T>(theta0, "theta0", {K, net.P});
  a.X = cptr<T>(X, "X", {N, net.n[0]});
  a.y = cptr<int64_t>(y, "y", {N});
  for (int64_t i = 0; i < N; ++i)
    if (a.y[i] < 0 || a.y[i] >= net.n.back()) bad("y: labels must lie in [0, n_out)");
  a.lr = cptr<T>(lr, "lr", {K});
  py::array_t<T> theta({K, int64_t(net.P)});
  py::array_t<int8_t> status({K});
  py::array_t<int64_t> steps_done({K});
  py::array_t<double> G_first({K}), G_last({K});
  py::array_t<T> G_trace({K, a.n_rec});
  T* tr = G_trace.mutable_data();
  std::fill(tr, tr + K * a.n_rec, T(NAN));
  a.theta = theta.mutable_data();
  a.status = status.mutable_data();
  a.steps_done = steps_done.mutable_data();
  a.G_first = G_first.mutable_data();
  a.G_last = G_last.mutable_data();
  a.G_trace = tr;
  py::array_t<T> snaps({J, K, int64_t(net.P)});
  a.snaps = snaps.mutable_data();
  {
    py::gil_scoped_release nogil;
    ft::cpu::inner_descent<T>(net, a, make_opts(threads, chunk));
  }
  py::dict out;
  out["theta"] = theta;
  out["status"] = status;
  out["steps_done"] = steps_done;
  out["G_first"] = G_first;
  out["G_last"] = G_last;
  out["G_trace"] = G_trace;
  out["snaps"] = snaps;
  return out;
}

// Rate of this core's own BLAS on an n×n×n product, for the benchmarks' yardstick.
double gemm_rate(int n, bool f64, int reps, int threads) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> u(-1, 1);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> A(size_t(n) * n), B(size_t(n) * n), C(size_t(n) * n);
    for (auto& x : A) x = T(u(rng));
    for (auto& x : B) x = T(u(rng));
    // OpenBLAS's own threads, for this measurement only (the core never uses them).
    ft::blas::set_threads(std::max(1, threads));
    struct Restore { ~Restore() { ft::blas::set_threads(1); } } restore;
    ft::blas::gemm(ft::blas::N, ft::blas::N, n, n, n, T(1), A.data(), n, B.data(), n, T(0), C.data(), n);
    double best = 1e300;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      ft::blas::gemm(ft::blas::N, ft::blas::N, n, n, n, T(1), A.data(), n, B.data(), n, T(0), C.data(), n);
      auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
    }
    return 2.0 * double(n) * n * n / best / 1e9;
  };
  py::gil_scoped_release nogil;
  return f64 ? run(double(0)) : run(float(0));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fasttrap's compiled core: fused Hessian-vector kernels for batches of MLPs";
  // Every BLAS call of ours is either inside one of our worker threads (single-threaded) or
  // sets its thread count explicitly, so OpenBLAS's own default is one thread.
  ft::blas::set_threads(1);

  m.def("built_with_cuda", []() {
#ifdef FT_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("cuda_device_count", []() -> int {
#ifdef FT_WITH_CUDA
    return ft::cuda::device_count();
#else
    return 0;
#endif
  });
  m.def("blas_config", []() { return std::string(ft::blas::config()); });
  m.def("max_threads", []() { return omp_get_num_procs(); });
  m.attr("__version__") = FASTTRAP_VERSION;

  m.def(
      "value_and_grad",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         py::array y, int threads, int chunk) -> py::tuple {
        Net net = make_net(widths, act, loss, out_act);
        return by_dtype(theta, "theta", [&](auto t) {
          return vag_impl<decltype(t)>(net, theta, X, y, threads, chunk);
        });
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("y"), py::arg("threads") = 1, py::arg("chunk") = 4);

  m.def(
      "hvp",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         py::array y, py::array v, int threads, int chunk) -> py::array {
        Net net = make_net(widths, act, loss, out_act);
        return by_dtype(theta, "theta", [&](auto t) {
          return hvp_impl<decltype(t)>(net, theta, X, y, v, threads, chunk);
        });
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("y"), py::arg("v"), py::arg("threads") = 1, py::arg("chunk") = 4);

  m.def(
      "grad_G",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         py::array y, int threads, int chunk) -> py::tuple {
        Net net = make_net(widths, act, loss, out_act);
        return by_dtype(theta, "theta", [&](auto t) {
          return gradG_impl<decltype(t)>(net, theta, X, y, threads, chunk);
        });
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("y"), py::arg("threads") = 1, py::arg("chunk") = 4);

  m.def(
      "evaluate",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         py::array y, int block, bool want_grad, int threads) -> py::tuple {
        Net net = make_net(widths, act, loss, out_act);
        py::tuple r = by_dtype(theta, "theta", [&](auto t) {
          return py::tuple(eval_impl<decltype(t)>(net, theta, X, y, block, want_grad, threads, false));
        });
        return py::make_tuple(r[0], r[1], r[2]);
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("y"), py::arg("block") = 1024, py::arg("want_grad") = false,
      py::arg("threads") = 1);

  m.def(
      "per_sample_grad_sq",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         py::array y, int block, bool want_grad, int threads) -> py::tuple {
        Net net = make_net(widths, act, loss, out_act);
        py::tuple r = by_dtype(theta, "theta", [&](auto t) {
          return py::tuple(eval_impl<decltype(t)>(net, theta, X, y, block, want_grad, threads, true));
        });
        return py::make_tuple(r[3], r[2]);
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("y"), py::arg("block") = 1024, py::arg("want_grad") = false,
      py::arg("threads") = 1);

  m.def(
      "input_jacobian",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         int threads) -> py::array {
        Net net = make_net(widths, act, loss, out_act);
        return by_dtype(theta, "theta", [&](auto t) {
          return jac_impl<decltype(t)>(net, theta, X, 256, false, threads);
        });
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("threads") = 1);

  m.def(
      "jacobian_gram",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta, py::array X,
         int block, int threads) -> py::array {
        Net net = make_net(widths, act, loss, out_act);
        return by_dtype(theta, "theta", [&](auto t) {
          return jac_impl<decltype(t)>(net, theta, X, block, true, threads);
        });
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta"),
      py::arg("X"), py::arg("block") = 256, py::arg("threads") = 1);

  m.def(
      "descent_loop",
      [](std::vector<int> widths, int act, int loss, int out_act, py::array theta0, py::array X,
         py::array y, py::array lr, int batch_size, int64_t steps, bool shared, py::array streams,
         bool drop_last, bool full_batch, int eval_block, double G_tol, double growth,
         int64_t record_every, py::array progress, py::array snap_steps, int threads,
         int chunk) -> py::dict {
        Net net = make_net(widths, act, loss, out_act);
        return by_dtype(theta0, "theta0", [&](auto t) {
          return descent_impl<decltype(t)>(net, theta0, X, y, lr, batch_size, steps, shared, streams, drop_last,
                                           full_batch, eval_block, G_tol, growth, record_every, progress,
                                           snap_steps, threads, chunk);
        });
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("theta0"),
      py::arg("X"), py::arg("y"), py::arg("lr"), py::arg("batch_size"), py::arg("steps"),
      py::arg("shared"), py::arg("streams"), py::arg("drop_last"), py::arg("full_batch"),
      py::arg("eval_block"), py::arg("G_tol"), py::arg("growth"), py::arg("record_every"),
      py::arg("progress"), py::arg("snap_steps") = py::array_t<int64_t>(std::vector<py::ssize_t>{0}), py::arg("threads") = 1,
      py::arg("chunk") = 4);

  m.def(
      "epoch_perm",
      [](uint64_t stream, uint64_t epoch, int64_t N) {
        if (N < 0) bad("N: must be >= 0");
        py::array_t<int32_t> p({N});
        int32_t* pp = p.mutable_data();
        {
          py::gil_scoped_release nogil;
          ft::cpu::epoch_perm(stream, epoch, N, pp);
        }
        return p;
      },
      py::arg("stream"), py::arg("epoch"), py::arg("N"));

  m.def(
      "use_gram",
      [](std::vector<int> widths, int B, int64_t sharing) {
        Net net = make_net(widths, 1, 0, 0);
        return ft::cpu::use_gram(net, B, sharing);
      },
      py::arg("widths"), py::arg("B"), py::arg("sharing"));

  m.def("gemm_rate", &gemm_rate, py::arg("n") = 2048, py::arg("f64") = false, py::arg("reps") = 5,
        py::arg("threads") = 1);

#ifdef FT_WITH_CUDA
  ft::cuda::bind(m);
#endif
}
