"""Type stub of the compiled extension fasttrap._core (csrc/module.cpp).

Arrays are NumPy, C-contiguous; float arrays are float32 or float64 (θ's dtype decides), labels
int64. ``widths, act, loss, out_act`` come from :attr:`fasttrap.MLP.codes`. Call the validated
wrappers in :mod:`fasttrap` rather than these.
"""

from typing import Any

import numpy as np
import numpy.typing as npt

_F = npt.NDArray[np.floating[Any]]
_I = npt.NDArray[np.int64]

__version__: str

def built_with_cuda() -> bool: ...
def cuda_device_count() -> int: ...
def blas_config() -> str: ...
def max_threads() -> int: ...
def value_and_grad(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [B, n0] or [K, B, n0]
    y: _I,  # [B] or [K, B]
    threads: int = 1, chunk: int = 4,
) -> tuple[_F, _F]: ...  # L [K], g [K, P]
def hvp(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [B, n0] or [K, B, n0]
    y: _I,  # [B] or [K, B]
    v: _F,  # [K, P]
    threads: int = 1, chunk: int = 4,
) -> _F: ...  # Hv [K, P]
def grad_G(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [B, n0] or [K, B, n0]
    y: _I,  # [B] or [K, B]
    threads: int = 1, chunk: int = 4,
) -> tuple[_F, _F, _F]: ...  # L [K], G [K], dG [K, P]
def evaluate(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [N, n0]
    y: _I,  # [N]
    block: int = 1024, want_grad: bool = False, threads: int = 1,
) -> tuple[_F, _F, _F | None]: ...  # loss [K], acc [K], grad [K, P] | None
def per_sample_grad_sq(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [N, n0]
    y: _I,  # [N]
    block: int = 1024, want_grad: bool = False, threads: int = 1,
) -> tuple[_F, _F | None]: ...  # sq [K, N] (‖∇ℓ_α‖²), grad [K, P] | None
def descent_loop(
    widths: list[int], act: int, loss: int, out_act: int,
    theta0: _F,  # [K, P]
    X: _F,  # [N, n0]
    y: _I,  # [N]
    lr: _F,  # [K]
    batch_size: int, steps: int, shared: bool,
    streams: npt.NDArray[np.uint64],  # [K]
    drop_last: bool, full_batch: bool, eval_block: int,
    G_tol: float, growth: float, record_every: int,
    progress: _I,  # [4]: steps, model-steps, stop request, active models
    snap_steps: _I,  # [J] checkpoints: strictly increasing steps in [1, steps]
    threads: int = 1, chunk: int = 4,
) -> dict[str, np.ndarray]: ...  # theta [K,P], status [K] int8, steps_done [K], G_first [K], G_last [K], G_trace [K,T'], snaps [J,K,P]
def epoch_perm(stream: int, epoch: int, N: int) -> npt.NDArray[np.int32]: ...  # [N]
def use_gram(widths: list[int], B: int, sharing: int) -> bool: ...
def gemm_rate(n: int = 2048, f64: bool = False, reps: int = 5, threads: int = 1) -> float: ...  # GFLOP/s

def input_jacobian(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [N, n0]
    threads: int = 1,
) -> _F: ...  # J [K, N, C, n0]
def jacobian_gram(
    widths: list[int], act: int, loss: int, out_act: int,
    theta: _F,  # [K, P]
    X: _F,  # [N, n0]
    block: int = 256, threads: int = 1,
) -> _F: ...  # 𝒥ᵀ𝒥 [K, C·n0, C·n0]

# ---- present when built_with_cuda() (csrc/cuda/cuda_bindings.cpp; used by fasttrap/ops/cuda.py) ----
# Device arrays are passed as integer addresses (torch's data_ptr()) on the caller's CUDA stream;
# fasttrap/ops/cuda.py has checked dtypes, shapes, contiguity and devices. dtype: 0 float32, 1 float64.
# Every call releases the GIL. Outputs are written in place and nothing is returned.
def cuda_cublas_path() -> str: ...
def cuda_cublas_hint(path: str) -> None: ...
def cuda_load_cublas() -> str: ...
def cuda_set_graph_calls(on: bool) -> None: ...
def cuda_synchronize(stream: int) -> None: ...
def cuda_value_and_grad(
    widths: list[int], act: int, loss: int, out_act: int, dtype: int, K: int, B: int, per_model: bool,
    theta: int,  # device [K, P]
    X: int,  # device [B, n0], or [K, B, n0] when per_model
    y: int,  # device int64 [B], or [K, B]
    L: int,  # device [K] out
    g: int,  # device [K, P] out
    stream: int, tf32: bool,
) -> None: ...
def cuda_hvp(
    widths: list[int], act: int, loss: int, out_act: int, dtype: int, K: int, B: int, per_model: bool,
    theta: int,  # device [K, P]
    X: int,  # device [B, n0] or [K, B, n0]
    y: int,  # device int64 [B] or [K, B]
    v: int,  # device [K, P]
    Hv: int,  # device [K, P] out
    stream: int, tf32: bool,
) -> None: ...
def cuda_grad_G(
    widths: list[int], act: int, loss: int, out_act: int, dtype: int, K: int, B: int, per_model: bool,
    theta: int,  # device [K, P]
    X: int,  # device [B, n0] or [K, B, n0]
    y: int,  # device int64 [B] or [K, B]
    L: int,  # device [K] out
    G: int,  # device [K] out
    dG: int,  # device [K, P] out
    stream: int, tf32: bool,
) -> None: ...
def cuda_evaluate(
    widths: list[int], act: int, loss: int, out_act: int, dtype: int, K: int, N: int, block: int,
    theta: int,  # device [K, P]
    X: int,  # device [N, n0]
    y: int,  # device int64 [N]
    L: int,  # device [K] out: mean loss
    acc: int,  # device [K] out
    grad: int,  # device [K, P] out, or 0 for none
    stream: int, tf32: bool,
) -> None: ...
def cuda_descent_loop(
    widths: list[int], act: int, loss: int, out_act: int, dtype: int, K: int,
    theta0: int,  # device [K, P]
    theta: int,  # device [K, P] out
    X: int,  # device [N, n0]
    y: int,  # device int64 [N]
    N: int,
    lr: int,  # device [K]
    B: int, steps: int, shared: bool,
    streams: npt.NDArray[np.uint64],  # [K] host
    drop_last: bool, full_batch: bool, eval_block: int, G_tol: float, growth: float, record_every: int,
    n_rec: int,  # ceil(steps / record_every)
    status: int,  # device int8 [K] out
    steps_done: int,  # device int64 [K] out
    G_first: int,  # device float64 [K] out
    G_last: int,  # device float64 [K] out
    G_trace: int,  # device [K, n_rec] out (NaN-filled by the caller)
    progress: _I,  # [4] host: steps, model-steps, stop request, active models
    snap_steps: _I,  # [J] host checkpoints
    snaps: int,  # device [J, K, P] out, or 0 when J = 0
    stream: int, tf32: bool, use_graph: bool,
) -> None: ...
