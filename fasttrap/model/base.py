"""What every model of fasttrap is: the protocol the ops, drivers and analyses ask, instead of asking its type.

A model is a loss on a flat parameter vector θ [P], evaluated for K rows θ [K, P] at once. The code
outside this package never tests a model's class: it asks the model.

* ``compiled`` — whether the compiled core (the fused C++/CUDA kernels, ``backend="cpu"`` or
  ``"cuda"``) runs this model. :class:`fasttrap.MLP` is compiled; every other model runs on the torch
  path (``torch.func`` over :meth:`TorchPathModel.forward`), where ``backend="cpu"`` is refused.
* ``n_params`` (P), ``n_in`` (features of one flat input row, or None when the model takes any),
  ``n_out`` (the number of classes it scores; None until it has seen an input), ``loss`` and
  ``output`` (checked once, by :func:`check_loss`), ``widths`` (what records call its widths),
  ``label`` (its name in progress bars) and ``noun`` (what messages call it: "MLP", "module").
* ``init(K, seed, dtype)`` — K parameter rows [K, P]; row k depends on ``(seed, k)`` only.
* ``check_inputs(X, lead)`` — refuse inputs whose trailing shape the model cannot take (ValueError);
  ``probe(X, theta_row=None)`` — ``n_out``, learnt from the first rows of X by a model that does not
  know it yet.

A model on the torch path also has :meth:`TorchPathModel.forward` (outputs [B, C] of one row θ [P]
on inputs [B, …]), :meth:`~TorchPathModel.shape_inputs`, :meth:`~TorchPathModel.check` (run before
every op) and ``compile``. Subclass :class:`TorchPathModel` and write ``forward``, ``n_params``,
``n_out``, ``init``: that is a new model type, in one file (the test suite adds one that way).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

#: the losses and output maps every model offers, with the codes the compiled core takes
LOSSES: dict[str, int] = {"nll": 0, "mse": 1}
OUTPUTS: dict[str, int] = {"identity": 0, "sigmoid": 3}


def check_loss(loss: Any, output: Any, n_out: int | None = None) -> None:
    """Refuse an unknown loss or output map, or a combination that does not make sense.

    Args:
        loss: ``"nll"`` (softmax cross-entropy, mean over the batch) or ``"mse"`` (against one-hot
            targets, mean over batch and classes).
        output: the map before ``mse``: ``"identity"`` or ``"sigmoid"``; ``nll`` needs ``identity``.
        n_out: the number of outputs where known (``nll`` needs at least 2).

    Raises:
        ValueError: naming ``loss``, ``output`` or ``widths``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted(LOSSES)}, got {loss!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {sorted(OUTPUTS)}, got {output!r}")
    if loss == "nll" and output != "identity":
        raise ValueError("output: loss 'nll' needs output 'identity' (it applies its own softmax)")
    if loss == "nll" and n_out is not None and n_out < 2:
        raise ValueError("widths: loss 'nll' needs at least 2 output classes")


@runtime_checkable
class Model(Protocol):
    """What the ops, drivers and analyses ask of a model (see the module docstring)."""

    compiled: bool
    n_params: int
    loss: str
    output: str
    noun: str

    @property
    def n_in(self) -> int | None: ...

    @property
    def n_out(self) -> int | None: ...

    @property
    def widths(self) -> tuple[int, ...]: ...

    @property
    def label(self) -> str: ...

    def init(self, K: int, seed: int, dtype: Any = np.float32) -> np.ndarray: ...

    def check_inputs(self, X: Any, lead: int) -> None: ...

    def probe(self, X: Any, theta_row: Any = None) -> int | None: ...


def is_model(x: Any) -> bool:
    """Whether ``x`` implements :class:`Model` (a ``compiled`` flag, ``n_params``, ``loss``, ``init`` …)."""
    return isinstance(x, Model) and isinstance(getattr(x, "compiled", None), bool)


class TorchPathModel:
    """The torch path's half of a model: what :mod:`fasttrap.reference.module` runs with ``torch.func``.

    A subclass sets ``n_params``, ``loss``, ``output`` and ``n_out`` (or leaves ``n_out`` None to have it
    learnt from the first input), and writes :meth:`forward` and :meth:`init`; the rest has defaults.
    """

    compiled = False
    #: ``torch.compile`` the per-sample gradient function (aging's gradient noise)
    compile = False
    n_params: int
    loss: str = "nll"
    output: str = "identity"
    n_out: int | None = None
    #: the shape of one input; None: inputs are used as given
    input_shape: tuple[int, ...] | None = None
    #: what messages call the model
    noun = "model"

    def forward(self, theta_row: Any, X: Any) -> Any:
        """Outputs [B, C] (a torch tensor) for one parameter row θ [P] on inputs X [B, *input_shape]."""
        raise NotImplementedError

    def init(self, K: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
        """K parameter rows θ [K, P]; row k depends only on (seed, k)."""
        raise NotImplementedError

    def check(self) -> None:
        """Run before every op: refuse a state in which the loss would not be a function of θ alone."""

    @property
    def n_in(self) -> int | None:
        """Features of one flattened input (None without input_shape)."""
        return None if self.input_shape is None else int(np.prod(self.input_shape))

    @property
    def widths(self) -> tuple[int, ...]:
        """(inputs, outputs), what the analyses record as a network's widths (0 where not known yet)."""
        return (self.n_in or 0, self.n_out or 0)

    @property
    def label(self) -> str:
        return type(self).__name__

    def shape_inputs(self, X: Any, lead: int) -> Any:
        """X with ``lead`` batch dimensions and then [n_in] (flat rows) or input_shape, as [*batch, *input_shape].

        Raises:
            ValueError: the trailing dimensions are neither.
        """
        if self.input_shape is None:
            return X
        tail = tuple(X.shape[lead:])
        if tail == self.input_shape:
            return X
        if tail == (self.n_in,):
            return X.reshape(*X.shape[:lead], *self.input_shape)
        raise ValueError(f"X: each input must have shape {list(self.input_shape)} or be a flat row of {self.n_in}, "
                         f"got {list(tail)}")

    def check_inputs(self, X: Any, lead: int) -> None:
        """Refuse inputs [*lead dims, …] whose trailing shape :meth:`shape_inputs` cannot take."""
        self.shape_inputs(X, lead)

    def probe(self, X: Any, theta_row: Any = None) -> int:
        """``n_out``, learnt if not known yet from :meth:`forward` on the first rows of X [N, …].

        Args:
            X: inputs (NumPy or torch), flat rows or shaped.
            theta_row: the parameter row [P] to evaluate with (a torch tensor); None: ``init(1, 0)``.

        Raises:
            ValueError: the model cannot take inputs of this shape, or its output is not [batch, classes].
        """
        if self.n_out is None:
            import torch

            x = X[:2] if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(X[:2])))
            if theta_row is None:
                theta_row = torch.from_numpy(self.init(1, 0, np.float64)[0])
            x = self.shape_inputs(x.to(theta_row.device, theta_row.dtype), 1)
            self.n_out = self.output_width(lambda z: self.forward(theta_row, z), x)
        return self.n_out

    def output_width(self, fn: Any, x: Any) -> int:
        """C, the outputs per row of ``fn(x)`` for inputs x [B, ...], checked to be [B, C].

        Raises:
            ValueError: the model cannot take inputs of this shape (naming ``input_shape``), or its
                output is not [batch, classes].
        """
        import torch

        try:
            with torch.no_grad():
                out = fn(x)
        except RuntimeError as e:
            shape = list(x.shape[1:])
            raise ValueError(
                f"input_shape: the {self.noun} cannot take inputs of shape {shape} "
                f"({'given as input_shape' if self.input_shape is not None else 'the data as given; pass input_shape'}"
                f"): torch says: {str(e).splitlines()[0]}") from None
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"{self.noun}: its output for inputs {list(x.shape)} has shape {list(out.shape)}; expected "
                             f"[{x.shape[0]}, classes] (one row of class scores per input)")
        return int(out.shape[1])
