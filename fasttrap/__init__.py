"""fasttrap: fast, careful trapping-time analysis of neural-network training.

The compiled core computes, for batches of K MLPs at once, the loss gradient, Hessian-vector
products and the fused step ∇G = H∇L of G = ½‖∇L‖²; every compiled function has a pure-torch twin
in :mod:`fasttrap.reference`. Importing never fails for lack of CUDA or of the core: see
:func:`fasttrap.backend.info`.
"""

from __future__ import annotations

__version__ = "0.1.0"   # before the imports: the loader checks the compiled core against it

from .backend import (BackendUnavailable, built_with_cuda, cuda_available, cuda_device_count, get_num_threads,
                      set_num_threads)
from .backend import info as backend_info
from . import data, rng
from .inner import InnerResult, inner_descent
from .kernels import evaluate, grad_G, hvp, per_sample_grad_sq, value_and_grad
from .mlp import MLP
from .outer import OuterResult, outer_sgd

__all__ = [
    "MLP",
    "InnerResult",
    "OuterResult",
    "data",
    "inner_descent",
    "outer_sgd",
    "rng",
    "BackendUnavailable",
    "backend_info",
    "built_with_cuda",
    "cuda_available",
    "cuda_device_count",
    "evaluate",
    "get_num_threads",
    "grad_G",
    "hvp",
    "per_sample_grad_sq",
    "set_num_threads",
    "value_and_grad",
]
