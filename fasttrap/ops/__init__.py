"""The compiled ops, batched over K models, with their one dispatch point.

* :mod:`~fasttrap.ops.grad` — value_and_grad, hvp, grad_G (one minibatch);
* :mod:`~fasttrap.ops.dataset` — evaluate, per_sample_grad_sq (a whole data set in blocks);
* :mod:`~fasttrap.ops.spectra` — input_jacobian, jacobian_gram (functions of the inputs alone);
* :mod:`~fasttrap.ops._dispatch` — the one place that validates, routes to cpu/cuda/torch and
  converts results back (also the inner-descent loop, :func:`descent_loop`, and the backend a
  model's drivers run on, :func:`resolve_for`);
* :mod:`~fasttrap.ops.validate` — the argument checks; :mod:`~fasttrap.ops.backend` — which
  backend runs; :mod:`~fasttrap.ops.cuda` — GPU interop; :mod:`~fasttrap.ops.flops` — arithmetic
  counts for honest GFLOP/s.

Every op has a pure-torch twin of the same name in :mod:`fasttrap.reference`.
"""

from __future__ import annotations

from ._dispatch import descent_loop, resolve_for, resolve_module_backend
from .backend import BackendUnavailable
from .dataset import evaluate, per_sample_grad_sq
from .grad import grad_G, hvp, value_and_grad
from .spectra import input_jacobian, jacobian_gram

__all__ = ["BackendUnavailable", "descent_loop", "evaluate", "resolve_for", "resolve_module_backend", "grad_G", "hvp", "input_jacobian", "jacobian_gram", "per_sample_grad_sq", "value_and_grad"]
