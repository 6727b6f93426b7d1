"""fasttrap: fast, careful trapping-time analysis of neural-network training.

The compiled core computes, for batches of K MLPs at once, the loss gradient, Hessian-vector
products and the fused step ∇G = H∇L of G = ½‖∇L‖²; every compiled function has a pure-torch twin
in :mod:`fasttrap.reference`. Importing never fails for lack of CUDA or of the core: see
:func:`fasttrap.backend_info`.

One folder per stage of the data flow::

    model/      the MLP spec and flat layout, any torch module (TorchModel), the aging paper's networks
                (zoo), data sets, counter-based random streams
    ops/        the compiled ops and their one dispatch point (validate, route, convert)
    reference/  the torch twins of ops/, file for file
    dynamics/   outer SGD, the batched inner descents and their solvers (SGD, GD, Newton-MR)
    linalg/     Lanczos, SLQ and MINRES batched over K models, on the full-batch Hessian
    analysis/   traps, power laws, aging, gradient noise, training-curve regimes, certificates
    common/     atomic storage, progress bars and the endpoint-kind rule, shared by every stage
    run/        python -m fasttrap.run: settings, run directories, stages, reports, figures

``__all__`` below is the public surface; everything else is imported from its subpackage
(``fasttrap.analysis.traps``, ``fasttrap.model.data``, ``fasttrap.common.store`` …).
"""

from __future__ import annotations

from .version import __version__  # noqa: F401  (first: the core loader checks the core against it)

from .analysis.certify import Certificate, certify
from .analysis.ledges import LedgeTraps, traps_from_endpoints
from .dynamics.inner import InnerResult, inner_descent
from .dynamics.outer import OuterResult, outer_sgd
from .dynamics.solvers import GD, SGD, NewtonMR, SGDThenNewtonMR
from .dynamics.swap import Swap
from .model.mlp import MLP
from .model.torchmodel import TorchModel
from .ops import evaluate, grad_G, hvp, input_jacobian, per_sample_grad_sq, value_and_grad
from .ops.backend import (BackendUnavailable, built_with_cuda, cuda_available, cuda_device_count, get_num_threads,
                          set_num_threads)
from .ops.backend import info as backend_info
from .linalg.spectra import hessian_density, hessian_eigs, jacobian_density, jacobian_esd
from .run.rundir import RunData, open_run

__all__ = [
    "MLP",
    "LedgeTraps",
    "traps_from_endpoints",
    "Certificate",
    "certify",
    "hessian_density",
    "hessian_eigs",
    "input_jacobian",
    "jacobian_density",
    "jacobian_esd",
    "InnerResult",
    "OuterResult",
    "RunData",
    "Swap",
    "TorchModel",
    "inner_descent",
    "SGD",
    "GD",
    "NewtonMR",
    "SGDThenNewtonMR",
    "open_run",
    "outer_sgd",
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

