"""Any ``torch.nn.Module`` as a model of fasttrap: a flat parameter vector, K models at once.

:class:`fasttrap.MLP` is the spec the compiled core runs. :class:`TorchModel` wraps any module (a conv
net, a ResNet) so that the ops (:func:`fasttrap.value_and_grad`, :func:`fasttrap.hvp`,
:func:`fasttrap.grad_G`, :func:`fasttrap.evaluate`, :func:`fasttrap.per_sample_grad_sq`) take it where
they take an MLP. It runs on the torch path (``torch.func``: ``functional_call`` on a flat parameter
vector, ``vmap`` over the K parameter rows, HVPs forward-over-reverse), on the CPU or the GPU, in
float32 or float64. ``backend="cpu"`` (the compiled MLP core) is refused with a clear error.

* **The flat layout** is the order of ``module.parameters()``, each tensor flattened row-major, as
  for an MLP (:meth:`from_torch`, :meth:`to_torch`).
* **Buffers that change in training mode** (BatchNorm's running statistics) and dropout would make
  the loss depend on the batch it is evaluated with, or on chance: the landscape that G = ½‖∇L‖²
  descends would not be a function of θ. Such a module is refused in training mode; call
  ``module.eval()`` first (BatchNorm then uses its stored statistics, fixed; dropout is off).
* **The loss** is the MLP's: ``"nll"`` (softmax cross-entropy of the outputs) or ``"mse"`` against
  one-hot targets, with ``output`` ``"identity"`` or ``"sigmoid"`` before it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .base import TorchPathModel, check_loss


class TorchModel(TorchPathModel):
    """A ``torch.nn.Module`` with a loss, as fasttrap's ops take a model.

    Args:
        module: the network; its ``forward`` maps inputs [B, *input_shape] to outputs [B, C].
        loss: ``"nll"`` or ``"mse"``.
        output: ``"identity"`` or ``"sigmoid"`` (the map before ``mse``; ``nll`` needs identity).
        input_shape: the shape of one input, e.g. (1, 28, 28) for a conv net on MNIST; rows of a flat
            data set [N, prod(input_shape)] are reshaped to it. None: inputs are used as given.
        compile: ``torch.compile`` the per-sample gradient function of :func:`fasttrap.per_sample_grad_sq`
            (the gradient noise D(t) of aging). It pays off on long runs: 1.45× (2 CPU cores) to 3.4×
            (H100) on the small conv net, after a compile of 18–22 s (``benchmarks/bench_module.py``).

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module``.
        ValueError: an unknown loss or output, a BatchNorm or dropout layer in training mode, a
            module without parameters, or a module whose output is not [B, C].
    """

    noun = "module"

    def __init__(self, module: Any, loss: str = "nll", output: str = "identity", input_shape: Any = None,
                 compile: bool = False):
        import torch

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        check_loss(loss, output)
        self.module = module
        self.check()
        if not isinstance(compile, bool):
            raise TypeError(f"compile: expected a bool, got {type(compile).__name__}")
        self.compile = compile
        self.loss = loss
        self.output = output
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        params = list(module.named_parameters())
        if not params:
            raise ValueError("module: has no parameters")
        self.names = [n for n, _ in params]
        self.shapes = [tuple(p.shape) for _, p in params]
        self.numels = [int(p.numel()) for _, p in params]
        self.n_params = int(sum(self.numels))
        self.buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
        self.n_out: int | None = None
        if self.input_shape is not None:
            if any(v < 1 for v in self.input_shape):
                raise ValueError(f"input_shape: expected positive sizes, got {list(self.input_shape)}")
            p0 = next(iter(module.parameters()))
            self.n_out = self.output_width(lambda x: module(x), torch.zeros((2, *self.input_shape), dtype=p0.dtype,
                                                                            device=p0.device))

    def check(self) -> None:
        """Refuse a layer whose output depends on the batch or on chance, in the mode it is in now.

        Checked when wrapping and again before every op: ``module.train()`` after wrapping an
        eval-mode net would otherwise reach torch.func with BatchNorm updating its running
        statistics in place.

        Raises:
            ValueError: a BatchNorm without running statistics (any mode), or a BatchNorm or dropout
                layer in training mode.
        """
        import torch

        for name, m in self.module.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
                raise ValueError(
                    f"module: {name or 'the module'} is a BatchNorm layer with track_running_stats=False: it "
                    "normalises with the statistics of whatever batch it is given, in training and in eval mode, so "
                    "the loss would depend on how the rows are batched and not on the weights alone. Use a BatchNorm "
                    "with running statistics in eval mode, a GroupNorm or LayerNorm, or remove the layer")
            stateful = isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            if m.training and (stateful or isinstance(m, torch.nn.modules.dropout._DropoutNd)):
                kind = "BatchNorm" if stateful else "dropout"
                raise ValueError(
                    f"module: {name or 'the module'} is a {kind} layer in training mode. Its output then depends on "
                    "the batch's statistics (BatchNorm) or on chance (dropout), so the loss would not be a function "
                    "of the weights alone, and neither would G = ½|∇L|². Call module.eval() first, or again if it was "
                    "put back in training mode after wrapping (BatchNorm then uses its stored running statistics, "
                    "fixed), or remove the layer")

    @property
    def label(self) -> str:
        """The wrapped module's class name (progress bars, messages)."""
        return type(self.module).__name__

    def __repr__(self) -> str:
        return (f"TorchModel({type(self.module).__name__}, P={self.n_params:,}, loss={self.loss!r}, "
                f"output={self.output!r}, input_shape={self.input_shape})")

    def from_torch(self, module: Any = None) -> np.ndarray:
        """The flat parameter row [P] (float64 copy) of ``module`` (default: the wrapped one)."""
        import torch

        m = self.module if module is None else module
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1).to("cpu", torch.float64) for p in m.parameters()]).numpy()

    def to_torch(self, row: Any) -> Any:
        """A copy of the module with its parameters set from the flat row [P]."""
        import torch

        r = np.asarray(row)
        if r.shape != (self.n_params,):
            raise ValueError(f"row: expected shape [{self.n_params}], got {list(r.shape)}")
        m = copy.deepcopy(self.module)
        with torch.no_grad():
            off = 0
            for p in m.parameters():
                n = p.numel()
                p.copy_(torch.from_numpy(np.ascontiguousarray(r[off:off + n])).reshape(p.shape).to(p.dtype))
                off += n
        return m

    def init(self, K: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
        """K parameter rows [K, P], each the module's own initialisation (``reset_parameters`` of every
        submodule that has one) under ``torch.manual_seed`` of (seed, k).

        The draws are made on a float32 copy on the CPU, whatever the module's dtype and device, so a
        seed gives the same θ for a float32 and a float64 module, on the CPU and on the GPU (and
        the GPU's generator is left alone)."""
        import torch

        from .rng import stream_id

        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ValueError(f"K: expected an int >= 1, got {K!r}")
        rows = []
        for k in range(int(K)):
            m = copy.deepcopy(self.module).to("cpu", torch.float32)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stream_id(int(seed), "init", k) % (2**63 - 1))
                for sub in m.modules():
                    if hasattr(sub, "reset_parameters"):
                        sub.reset_parameters()
            rows.append(self.from_torch(m))
        return np.stack(rows).astype(dtype)

    # --- the torch side ----------------------------------------------------------------------------
    def params(self, theta_row: Any) -> dict[str, Any]:
        """The named parameter tensors (views) of one flat row θ [P] (a torch tensor)."""
        out, off = {}, 0
        for n, shp, k in zip(self.names, self.shapes, self.numels):
            out[n] = theta_row[off:off + k].reshape(shp)
            off += k
        return out

    def forward(self, theta_row: Any, X: Any) -> Any:
        """Outputs [B, C] of the module with parameters θ [P] on inputs X [B, *input_shape]."""
        import torch

        bufs = {n: b.to(device=theta_row.device, dtype=theta_row.dtype if b.is_floating_point() else b.dtype)
                for n, b in self.buffers.items()}
        return torch.func.functional_call(self.module, {**self.params(theta_row), **bufs}, (X,))

    def probe(self, X: Any, theta_row: Any = None) -> int:
        """The number of outputs, learnt if not known from the output on the first rows of X [N, ...]: of
        :meth:`forward` at ``theta_row``, or (None) of the module with its own parameters.

        Raises:
            ValueError: the output is not [batch, classes].
        """
        import torch

        if self.n_out is None and theta_row is None:
            p0 = next(iter(self.module.parameters()))
            x = X[:1] if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(X[:1])))
            self.n_out = self.output_width(self.module, self.shape_inputs(x.to(p0.device, p0.dtype), 1))
        return super().probe(X, theta_row)
