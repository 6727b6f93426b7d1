// cuda_bindings.cpp: registers the CUDA entry points of fasttrap._core.
//
// Device arrays arrive as integer addresses (torch's data_ptr(), CuPy's .data.ptr) with the
// caller's stream; Python (fasttrap/ops/cuda.py) has already checked dtypes, shapes, contiguity and
// devices. Every call releases the GIL (def_net_op, once for all net ops).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "cublas_loader.h"
#include "cuda_api.h"

namespace py = pybind11;

namespace ft {
namespace cuda {

namespace {
Net net_of(const std::vector<int>& w, int act, int loss, int out_act) { return Net::make(w, act, loss, out_act); }

// One binding for every net op of cuda_api.h: the layout codes become a Net, the GIL is released
// around the launch, and every argument has its name (``names`` after widths, act, loss, out_act).
template <class... A, class... Names>
void def_net_op(py::module_& m, const char* name, void (*api)(const Net&, A...), Names... names) {
  static_assert(sizeof...(A) == sizeof...(Names), "one name per argument");
  m.def(
      name,
      [api](std::vector<int> w, int act, int loss, int out_act, A... a) {
        Net net = net_of(w, act, loss, out_act);
        py::gil_scoped_release nogil;
        api(net, a...);
      },
      py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg(names)...);
}
}  // namespace

void bind(py::module_& m) {
  m.def("cuda_cublas_path", []() { return cublas_path(); });
  m.def("cuda_cublas_hint", [](const std::string& p) { cublas_hint(p); }, py::arg("path"));
  m.def("cuda_load_cublas", []() { return cublas().path; });
  m.def("cuda_set_graph_calls", [](bool on) { set_graph_calls(on); }, py::arg("on"));
  m.def(
      "cuda_synchronize",
      [](uintptr_t stream) {
        py::gil_scoped_release nogil;
        synchronize(stream);
      },
      py::arg("stream"));
  def_net_op(m, "cuda_value_and_grad", &api_value_and_grad, "dtype", "K", "B", "per_model", "theta", "X", "y", "L",
             "g", "stream", "tf32");
  def_net_op(m, "cuda_hvp", &api_hvp, "dtype", "K", "B", "per_model", "theta", "X", "y", "v", "Hv", "stream", "tf32");
  def_net_op(m, "cuda_grad_G", &api_grad_G, "dtype", "K", "B", "per_model", "theta", "X", "y", "L", "G", "dG",
             "stream", "tf32");
  def_net_op(m, "cuda_evaluate", &api_evaluate, "dtype", "K", "N", "block", "theta", "X", "y", "L", "acc", "grad",
             "stream", "tf32");
  m.def("cuda_descent_loop",
        [](std::vector<int> w, int act, int loss, int out_act, int dtype, int K, uintptr_t theta0, uintptr_t theta,
           uintptr_t X, uintptr_t y, int64_t N, uintptr_t lr, int B, int64_t steps, bool shared,
           py::array_t<uint64_t, py::array::c_style | py::array::forcecast> streams, bool drop_last,
           bool full_batch, int eval_block, double G_tol, double growth, int64_t record_every, int64_t n_rec,
           uintptr_t status, uintptr_t steps_done, uintptr_t G_first, uintptr_t G_last, uintptr_t G_trace,
           py::array_t<int64_t, py::array::c_style> progress,
           py::array_t<int64_t, py::array::c_style | py::array::forcecast> snap_steps, uintptr_t snaps,
           uintptr_t stream, bool tf32, bool use_graph) {
          Net net = net_of(w, act, loss, out_act);
          if (streams.size() != K) throw std::invalid_argument("streams: must have K entries");
          if (progress.size() < 4) throw std::invalid_argument("progress: must have 4 entries");
          DescentArgs a;
          fill_descent_settings(a, K, N, B, steps, shared, streams.data(), drop_last, full_batch, eval_block, G_tol,
                                growth, record_every, progress.mutable_data());
          if (a.n_rec != n_rec) throw std::invalid_argument("n_rec: must be ceil(steps / record_every)");
          if (snap_steps.ndim() != 1) throw std::invalid_argument("snap_steps: expected a 1-d int64 array");
          fill_snapshots(a, snap_steps.data(), snap_steps.size());
          if (a.n_snap > 0 && snaps == 0) throw std::invalid_argument("snaps: needed with snap_steps");
          a.snaps = reinterpret_cast<void*>(snaps);
          a.theta0 = reinterpret_cast<const void*>(theta0);
          a.theta = reinterpret_cast<void*>(theta);
          a.X = reinterpret_cast<const void*>(X);
          a.y = reinterpret_cast<const int64_t*>(y);
          a.lr = reinterpret_cast<const void*>(lr);
          a.status = reinterpret_cast<void*>(status);
          a.steps_done = reinterpret_cast<void*>(steps_done);
          a.G_first = reinterpret_cast<void*>(G_first);
          a.G_last = reinterpret_cast<void*>(G_last);
          a.G_trace = reinterpret_cast<void*>(G_trace);
          a.use_graph = use_graph;
          py::gil_scoped_release nogil;
          api_inner_descent(net, dtype, a, stream, tf32);
        },
        py::arg("widths"), py::arg("act"), py::arg("loss"), py::arg("out_act"), py::arg("dtype"), py::arg("K"),
        py::arg("theta0"), py::arg("theta"), py::arg("X"), py::arg("y"), py::arg("N"), py::arg("lr"), py::arg("B"),
        py::arg("steps"), py::arg("shared"), py::arg("streams"), py::arg("drop_last"), py::arg("full_batch"),
        py::arg("eval_block"), py::arg("G_tol"), py::arg("growth"), py::arg("record_every"), py::arg("n_rec"),
        py::arg("status"), py::arg("steps_done"), py::arg("G_first"), py::arg("G_last"), py::arg("G_trace"),
        py::arg("progress"), py::arg("snap_steps"), py::arg("snaps"), py::arg("stream"), py::arg("tf32"),
        py::arg("use_graph"));
}

}  // namespace cuda
}  // namespace ft
