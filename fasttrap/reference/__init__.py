"""The pure-torch twins of the compiled ops: the specification, and the fallback.

The package mirrors :mod:`fasttrap.ops` file for file: :mod:`.grad` (value_and_grad, hvp,
grad_G), :mod:`.dataset` (evaluate, per_sample_grad_sq), :mod:`.descent` (descent_loop, the
inner-descent loop), :mod:`.certify` (dense certificates of endpoints, for tiny nets) and :mod:`.spectra`
(input_jacobian, jacobian_gram), each function under its op's name and with its signature (without
``backend``). :mod:`.common` holds the forward pass and the losses they share. :mod:`.module` is
the torch.func path of the same ops for any ``torch.nn.Module`` (:class:`fasttrap.TorchModel`).
"""

from __future__ import annotations

from .certify import certify, dense_hessian
from .common import ACT, as_tensor, losses, outputs, unflatten
from .dataset import evaluate, per_sample_grad_sq
from .descent import (STATUS_CONVERGED, STATUS_DIVERGED, STATUS_INTERRUPTED, STATUS_MAX_STEPS, STATUS_NONFINITE,
                      STATUS_RUNNING, descent_loop)
from .grad import grad_G, hvp, value_and_grad
from .spectra import input_jacobian, jacobian_gram


__all__ = ["ACT", "certify", "dense_hessian", "STATUS_CONVERGED", "STATUS_DIVERGED", "STATUS_INTERRUPTED", "STATUS_MAX_STEPS", "STATUS_NONFINITE", "STATUS_RUNNING",
           "as_tensor", "descent_loop", "evaluate", "grad_G", "hvp", "input_jacobian", "jacobian_gram", "losses", "outputs",
           "per_sample_grad_sq", "unflatten", "value_and_grad"]
