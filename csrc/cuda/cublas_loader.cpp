// cublas_loader.cpp: dlopen libcublas and resolve the entry points of cublas_loader.h.
#include "cublas_loader.h"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <vector>

namespace ft {
namespace cuda {

namespace {
std::mutex mu;
Cublas lib;
bool loaded = false;
std::vector<std::string> hints;

template <class F>
void sym(void* h, const char* name, F& out, bool required, std::string& missing) {
  out = reinterpret_cast<F>(dlsym(h, name));
  if (!out && required) missing += std::string(" ") + name;
}
}  // namespace

void cublas_hint(const std::string& path) {
  std::lock_guard<std::mutex> g(mu);
  hints.insert(hints.begin(), path);
}

std::string cublas_path() {
  std::lock_guard<std::mutex> g(mu);
  return loaded ? lib.path : std::string();
}

const Cublas& cublas() {
  std::lock_guard<std::mutex> g(mu);
  if (loaded) return lib;
  std::vector<std::string> names = hints;
  for (const char* n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"})
    names.emplace_back(n);
  std::string tried;
  for (const auto& n : names) {
    void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      tried += "\n  " + n + ": " + (e ? e : "not found");
      continue;
    }
    Cublas c;
    std::string missing;
    sym(h, "cublasCreate_v2", c.create, true, missing);
    sym(h, "cublasDestroy_v2", c.destroy, true, missing);
    sym(h, "cublasSetStream_v2", c.set_stream, true, missing);
    sym(h, "cublasSetMathMode", c.set_math_mode, true, missing);
    sym(h, "cublasSetWorkspace_v2", c.set_workspace, false, missing);
    sym(h, "cublasGetVersion_v2", c.get_version, true, missing);
    sym(h, "cublasSgemm_v2", c.sgemm, true, missing);
    sym(h, "cublasDgemm_v2", c.dgemm, true, missing);
    sym(h, "cublasSgemmStridedBatched", c.sgemm_sb, true, missing);
    sym(h, "cublasDgemmStridedBatched", c.dgemm_sb, true, missing);
    if (!missing.empty()) {
      tried += "\n  " + n + ": missing" + missing;
      dlclose(h);
      continue;
    }
    c.path = n;
    lib = c;
    loaded = true;
    return lib;
  }
  throw std::runtime_error("cuBLAS could not be loaded; tried:" + tried +
                           "\n(install a CUDA toolkit or the nvidia-cublas wheel, or set FASTTRAP_CUBLAS)");
}

}  // namespace cuda
}  // namespace ft
