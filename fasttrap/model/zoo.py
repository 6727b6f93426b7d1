"""The networks of the aging paper (Baity-Jesi et al. 2018), built in and selected by name.

``model.arch`` in the settings picks one:

* ``"mlp"`` — the fully connected net: :class:`fasttrap.MLP` with the widths and activation of the
  settings (the compiled core).
* ``"toy"`` — the toy model: one hidden ReLU layer, a sigmoid output and the MSE loss against
  one-hot targets. It is an MLP ``[n0, h, C]`` with ``activation="relu"``, ``loss="mse"``,
  ``output="sigmoid"``, so it too runs on the compiled core. ``h`` large is the over-parametrised
  case, ``h`` small the under-parametrised one.
* ``"smallnet"`` — the small net of two convolutional and two dense layers
  (:class:`SmallNet`: conv 5×5 → 10, max-pool 2, ReLU; conv 5×5 → 20, max-pool 2, ReLU; dense → 50,
  ReLU; dense → C), the layout of PyTorch's MNIST example that the paper's code builds on, without
  its dropout (dropout would make the loss a random function of θ). A :class:`fasttrap.TorchModel`.
* ``"resnet18"`` — a ResNet-18 adapted to small images (3×3 stem of stride 1, no max-pool, as for
  CIFAR): torchvision's ``resnet18`` where torchvision is installed, else :class:`ResNet18` written
  out here with the same layers (the tests check the parameter counts agree). BatchNorm would make
  the loss depend on the batch it is evaluated on, so normalisation is GroupNorm by default
  (``norm="group"``, a function of one sample alone); ``norm="batch"`` keeps BatchNorm in eval mode
  (fixed statistics: at initialisation the identity), documented as such. A
  :class:`fasttrap.TorchModel`.

The conv nets take images [B, C, H, W]; the data keep their rows flat [N, C·H·W] and
:class:`fasttrap.TorchModel` reshapes them with ``input_shape = Dataset.image_shape``.
"""

from __future__ import annotations

from typing import Any

ARCHS = ("mlp", "toy", "smallnet", "resnet18")
NORMS = ("group", "batch")


def _check_image(image_shape: Any) -> tuple[int, int, int]:
    shp = tuple(int(v) for v in image_shape)
    if len(shp) != 3 or min(shp) < 1:
        raise ValueError(f"image_shape: expected (C, H, W) with every size >= 1, got {image_shape!r}")
    return shp  # type: ignore[return-value]


def _smallnet_class() -> type:
    import torch

    class SmallNet(torch.nn.Module):
        """Two conv layers and two dense ones (the paper's small net; PyTorch's MNIST example without dropout)."""

        def __init__(self, image_shape: tuple[int, int, int], n_classes: int, width: int = 50):
            super().__init__()
            C, H, W = image_shape
            self.conv1 = torch.nn.Conv2d(C, 10, kernel_size=5)
            self.conv2 = torch.nn.Conv2d(10, 20, kernel_size=5)
            h = ((H - 4) // 2 - 4) // 2
            w = ((W - 4) // 2 - 4) // 2
            if h < 1 or w < 1:
                raise ValueError(f"image_shape: {image_shape} is too small for two 5x5 convolutions with pooling "
                                 "(need H, W >= 16)")
            self.fc1 = torch.nn.Linear(20 * h * w, width)
            self.fc2 = torch.nn.Linear(width, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] -> [B, n_classes]
            F = torch.nn.functional
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2(x), 2))
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc2(x)

    return SmallNet


def smallnet(image_shape: Any, n_classes: int, width: int = 50) -> Any:
    """The small conv net for images of ``image_shape`` (C, H, W) and ``n_classes`` outputs (a torch module)."""
    return _smallnet_class()(_check_image(image_shape), _check_classes(n_classes), width)


def _check_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes: expected an int >= 2, got {n_classes!r}")
    return n_classes


def _norm(kind: str) -> Any:
    import torch

    if kind == "group":
        return lambda c: torch.nn.GroupNorm(min(32, c), c)
    return torch.nn.BatchNorm2d


def _resnet18_written(image_shape: tuple[int, int, int], n_classes: int, norm: str) -> Any:
    import torch

    nn = torch.nn
    Norm = _norm(norm)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = Norm(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = Norm(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), Norm(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        """ResNet-18 for small images: 3×3 stem of stride 1, no max-pool, four stages of two basic blocks."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(image_shape[0], 64, 3, 1, 1, bias=False)
            self.bn1 = Norm(64)
            chans, cin, layers = (64, 128, 256, 512), 64, []
            for i, c in enumerate(chans):
                layers.append(nn.Sequential(Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)))
                cin = c
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.fc = nn.Linear(512, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W] -> [B, n_classes]
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return ResNet18()


def resnet18(image_shape: Any, n_classes: int, norm: str = "group", source: str = "auto") -> Any:
    """A ResNet-18 adapted to small images (a torch module, in eval mode when ``norm="batch"``).

    Args:
        image_shape: (C, H, W) of one input.
        n_classes: outputs.
        norm: ``"group"`` (GroupNorm, the default: the loss is a function of θ alone) or ``"batch"``
            (BatchNorm in eval mode: fixed statistics).
        source: ``"torchvision"``, ``"written"`` or ``"auto"`` (torchvision where it is installed).
    """
    import torch

    shp = _check_image(image_shape)
    C = _check_classes(n_classes)
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    if source not in ("auto", "torchvision", "written"):
        raise ValueError(f"source: expected 'auto', 'torchvision' or 'written', got {source!r}")
    tv = None
    if source != "written":
        try:
            import torchvision
            tv = torchvision
        except ImportError:
            if source == "torchvision":
                raise ValueError("source: 'torchvision' asked for, but torchvision is not installed") from None
    if tv is not None:
        m = tv.models.resnet18(num_classes=C, norm_layer=_norm(norm))
        m.conv1 = torch.nn.Conv2d(shp[0], 64, 3, 1, 1, bias=False)
        m.maxpool = torch.nn.Identity()
    else:
        m = _resnet18_written(shp, C, norm)
    if norm == "batch":
        m.eval()
    return m


def build(arch: str, image_shape: Any, n_classes: int, *, loss: str = "nll", output: str = "identity",
          hidden: Any = None, activation: str = "relu", norm: str = "group", compile: bool = False) -> Any:
    """The network ``arch`` for images of ``image_shape`` and ``n_classes`` classes.

    Args:
        arch: one of :data:`ARCHS`.
        image_shape: (C, H, W) of one input (its product is the MLP's input width).
        n_classes: outputs.
        loss, output: the loss and output map (``toy`` is always MSE with a sigmoid output).
        hidden: hidden widths of ``mlp`` (a list) or the one hidden width of ``toy`` (an int or a
            one-element list); default [100, 100] and 100.
        activation: hidden activation of ``mlp``.
        norm: normalisation of ``resnet18``.
        compile: ``torch.compile`` the conv nets' per-sample gradients (:class:`fasttrap.TorchModel`).

    Returns:
        A :class:`fasttrap.MLP` (``mlp``, ``toy``) or a :class:`fasttrap.TorchModel` (``smallnet``,
        ``resnet18``), with ``input_shape = image_shape``.
    """
    from .mlp import MLP
    from .torchmodel import TorchModel

    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {ARCHS}, got {arch!r}")
    shp = _check_image(image_shape)
    C = _check_classes(n_classes)
    n0 = shp[0] * shp[1] * shp[2]
    if arch == "mlp":
        h = [100, 100] if hidden is None else [int(v) for v in hidden]
        return MLP([n0, *h, C], activation, loss, output)
    if arch == "toy":
        h = 100 if hidden is None else hidden
        if not isinstance(h, int):
            h = list(h)
            if len(h) != 1:
                raise ValueError(f"hidden: the toy model has one hidden layer, got widths {h}")
            h = int(h[0])
        return MLP([n0, h, C], "relu", "mse", "sigmoid")
    module = smallnet(shp, C) if arch == "smallnet" else resnet18(shp, C, norm=norm)
    return TorchModel(module, loss=loss, output=output, input_shape=shp, compile=compile)
