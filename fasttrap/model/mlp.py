"""The MLP spec: widths, activation, loss, and the flat parameter layout θ [K, P].

Layout of one row θ[k] (the same order as ``torch.nn.Sequential(...).parameters()``)::

    θ = [W_1, b_1, W_2, b_2, ..., W_L, b_L]

with W_l of shape [n_l, n_{l-1}] (row-major, ``torch.nn.Linear.weight``) and b_l of shape [n_l],
so P = Σ_l n_l (n_{l-1} + 1). For 784-100-100-10 that is P = 89 610.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import LOSSES, OUTPUTS, check_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch

ACTIVATIONS: dict[str, int] = {"linear": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


@dataclass(frozen=True, init=False)
class MLP:
    """A fully connected network ``n_0 → n_1 → … → n_L``.

    Args:
        widths: layer widths ``(n_0, …, n_L)``; at least two entries, each ≥ 1.
        activation: hidden activation, one of ``relu``, ``tanh``, ``sigmoid``, ``linear``.
        loss: ``nll`` (softmax cross-entropy, mean over the batch) or ``mse`` (torch's
            ``mse_loss`` against one-hot targets: mean over batch and classes).
        output: map applied to the last layer before ``mse``: ``identity`` or ``sigmoid``
            (the aging paper's toy model uses sigmoid + mse). ``nll`` needs ``identity``.

    Example:
        >>> mlp = MLP((784, 100, 100, 10))
        >>> mlp.n_params
        89610
    """

    widths: tuple[int, ...]
    activation: str
    loss: str
    output: str
    #: the compiled core runs an MLP (the :class:`fasttrap.model.base.Model` protocol)
    compiled = True
    noun = "MLP"

    def __init__(
        self,
        widths: Any,
        activation: str = "relu",
        loss: str = "nll",
        output: str = "identity",
    ) -> None:
        try:
            w = tuple(int(x) for x in widths)
        except TypeError:
            raise TypeError(f"widths: expected a sequence of ints, got {type(widths).__name__}") from None
        if any(not isinstance(x, (int, np.integer)) or isinstance(x, bool) for x in widths):
            raise TypeError("widths: every width must be an int")
        if len(w) < 2:
            raise ValueError(f"widths: need at least 2 entries (n_0 and n_L), got {len(w)}")
        if any(x < 1 for x in w):
            raise ValueError(f"widths: every width must be >= 1, got {w}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        check_loss(loss, output, w[-1])
        object.__setattr__(self, "widths", w)
        object.__setattr__(self, "activation", activation)
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "output", output)

    # ---- layout -------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Number of linear layers L."""
        return len(self.widths) - 1

    @property
    def n_in(self) -> int:
        return self.widths[0]

    @property
    def n_out(self) -> int:
        return self.widths[-1]

    @property
    def label(self) -> str:
        """The widths joined by dashes, e.g. ``784-100-10`` (progress bars, messages)."""
        return "-".join(str(x) for x in self.widths)

    def check_inputs(self, X: Any, lead: int) -> None:
        """Refuse inputs [*lead dims, …] that are not flat rows of n_0 features.

        Raises:
            ValueError: the trailing shape is not [n_0].
        """
        if tuple(X.shape[lead:]) != (self.n_in,):
            dims = "N" if lead == 1 else "K, B"
            raise ValueError(f"X: expected shape [{dims}, {self.n_in}] (flat rows of {self.n_in} features for "
                             f"{self!r}), got {list(X.shape)}")

    def probe(self, X: Any, theta_row: Any = None) -> int:
        """n_L, the number of outputs (an MLP knows it; the torch-path models may learn it from X)."""
        return self.n_out

    @property
    def n_params(self) -> int:
        """P, the length of one flat parameter row."""
        return sum(self.widths[l] * (self.widths[l - 1] + 1) for l in range(1, len(self.widths)))

    def layer_offsets(self) -> list[tuple[int, int, int]]:
        """Per layer l = 1..L: ``(offset of W_l, offset of b_l, end of b_l)`` in θ."""
        out, off = [], 0
        for l in range(1, len(self.widths)):
            nw = self.widths[l] * self.widths[l - 1]
            out.append((off, off + nw, off + nw + self.widths[l]))
            off += nw + self.widths[l]
        return out

    @property
    def codes(self) -> tuple[list[int], int, int, int]:
        """``(widths, act, loss, out_act)`` as the compiled core takes them."""
        return list(self.widths), ACTIVATIONS[self.activation], LOSSES[self.loss], OUTPUTS[self.output]

    def matmul_flops(self, B: int) -> int:
        """Multiply-adds ×2 of one forward pass over B rows (the unit the benchmarks count in)."""
        return 2 * B * sum(self.widths[l] * self.widths[l - 1] for l in range(1, len(self.widths)))

    # ---- parameters ---------------------------------------------------------------------------
    def init(self, K: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
        """K parameter rows, drawn as ``torch.nn.Linear`` draws its defaults.

        W_l and b_l are uniform on ``[-1/√n_{l-1}, 1/√n_{l-1}]`` (kaiming-uniform with a = √5
        gives exactly this bound). Row k depends only on ``(seed, k)``, not on K.

        Args:
            K: number of models, ≥ 1.
            seed: a non-negative int.
            dtype: ``np.float32`` (default) or ``np.float64``.

        Returns:
            θ [K, P]
        """
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ValueError(f"K: expected an int >= 1, got {K!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {dt}")
        theta = np.empty((K, self.n_params), dtype=dt)  # [K, P]
        for k in range(K):
            rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(k,)))
            for l, (ow, ob, oe) in enumerate(self.layer_offsets(), start=1):
                bound = 1.0 / np.sqrt(self.widths[l - 1])
                theta[k, ow:oe] = rng.uniform(-bound, bound, size=oe - ow)
        return theta

    def to_torch(self, theta_row: Any) -> "torch.nn.Sequential":
        """A ``torch.nn.Sequential`` of Linear and activation layers holding θ [P].

        The dtype follows θ's (float32 or float64). mse with sigmoid output ends in ``Sigmoid``.
        """
        import torch

        row = torch.as_tensor(np.asarray(theta_row) if not isinstance(theta_row, torch.Tensor) else theta_row)
        if row.ndim != 1 or row.shape[0] != self.n_params:
            raise ValueError(f"theta_row: expected shape [{self.n_params}], got {list(row.shape)}")
        if row.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"theta_row: expected float32 or float64, got {row.dtype}")
        acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
                "linear": torch.nn.Identity}
        layers: list[torch.nn.Module] = []
        for l, (ow, ob, oe) in enumerate(self.layer_offsets(), start=1):
            lin = torch.nn.Linear(self.widths[l - 1], self.widths[l], dtype=row.dtype)
            with torch.no_grad():
                lin.weight.copy_(row[ow:ob].view(self.widths[l], self.widths[l - 1]))
                lin.bias.copy_(row[ob:oe])
            layers.append(lin)
            if l < self.depth:
                layers.append(acts[self.activation]())
        if self.loss == "mse" and self.output == "sigmoid":
            layers.append(torch.nn.Sigmoid())
        return torch.nn.Sequential(*layers)

    def from_torch(self, module: "torch.nn.Module") -> np.ndarray:
        """θ [P] from a module whose parameters are this MLP's Linear layers, in order."""
        import torch

        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        params = list(module.parameters())
        shapes = []
        for l in range(1, len(self.widths)):
            shapes += [(self.widths[l], self.widths[l - 1]), (self.widths[l],)]
        got = [tuple(p.shape) for p in params]
        if got != shapes:
            raise ValueError(f"module: parameter shapes {got} do not match this MLP's {shapes}")
        vec = torch.nn.utils.parameters_to_vector(params).detach().cpu()
        return vec.numpy().copy()

    def __repr__(self) -> str:
        w = "-".join(str(x) for x in self.widths)
        extra = f", output={self.output!r}" if self.output != "identity" else ""
        return f"MLP({w}, activation={self.activation!r}, loss={self.loss!r}{extra})"
