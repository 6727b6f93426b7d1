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

# Present when built_with_cuda(): see fasttrap/ops/cuda.py for their use.
def __getattr__(name: str) -> Any: ...
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
