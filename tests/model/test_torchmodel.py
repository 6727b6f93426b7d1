"""fasttrap.TorchModel: any torch.nn.Module through the ops, on the torch.func path.

An MLP given as a module must equal the compiled fasttrap.MLP path (float64); a small conv net's HVP
must equal a dense Hessian; bad modules and inputs get clear errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import fasttrap
from fasttrap import TorchModel

from _util import cosine, rel_l2


def _mlp_pair(act="tanh", widths=(12, 7, 5, 4), loss="nll", output="identity"):
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(acts[act]())
    net = torch.nn.Sequential(*layers).double()
    return TorchModel(net, loss=loss, output=output, input_shape=(widths[0],)), fasttrap.MLP(widths, act, loss, output)


@pytest.mark.parametrize("act, loss, output", [("tanh", "nll", "identity"), ("relu", "nll", "identity"),
                                               ("sigmoid", "mse", "sigmoid"), ("tanh", "mse", "identity")])
@pytest.mark.parametrize("per_model", [False, True])
def test_an_mlp_as_a_module_equals_the_compiled_path(rng, act, loss, output, per_model):
    tm, mlp = _mlp_pair(act, loss=loss, output=output)
    K, B = 3, 9
    theta = mlp.init(K, 4, np.float64) + 0.05 * rng.standard_normal((K, mlp.n_params))
    X = rng.standard_normal((K, B, 12) if per_model else (B, 12))
    y = rng.integers(0, 4, (K, B) if per_model else B)
    v = rng.standard_normal(theta.shape)
    for name, args in (("value_and_grad", ()), ("hvp", (v,)), ("grad_G", ())):
        a = getattr(fasttrap, name)(tm, theta, X, y, *args)
        b = getattr(fasttrap, name)(mlp, theta, X, y, *args, backend="cpu")
        for x, z in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert isinstance(x, np.ndarray)                                   # NumPy in, NumPy out
            np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)
    if not per_model:
        for name in ("evaluate", "per_sample_grad_sq"):
            a = getattr(fasttrap, name)(tm, theta, X, y, True, 4)
            b = getattr(fasttrap, name)(mlp, theta, X, y, True, 4, backend="cpu")
            for x, z in zip(a, b):
                np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)


def test_layout_and_conversions(rng):
    tm, mlp = _mlp_pair()
    row = tm.from_torch()
    np.testing.assert_array_equal(row, mlp.from_torch(tm.module))              # parameters() order, as an MLP
    m2 = tm.to_torch(row + 1.0)
    np.testing.assert_array_equal(tm.from_torch(m2), row + 1.0)
    a, b = tm.init(3, 7), tm.init(3, 7)
    assert a.shape == (3, tm.n_params) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a, tm.init(3, 8))
    # the same draws for a float32 and a float64 copy of the module (made in float32 on the CPU)
    tm32 = TorchModel(copy.deepcopy(tm.module).float(), input_shape=(12,))
    np.testing.assert_array_equal(tm32.init(3, 7, np.float64), tm.init(3, 7, np.float64))
    assert tm.n_out == 4 and "TorchModel(Sequential" in repr(tm)


def test_float32_follows_float64(rng):
    tm, mlp = _mlp_pair("relu")
    tm32 = TorchModel(tm.module.float(), input_shape=(12,))
    theta = mlp.init(2, 0, np.float64)
    X, y = rng.standard_normal((16, 12)), rng.integers(0, 4, 16)
    v = rng.standard_normal(theta.shape)
    ref = fasttrap.hvp(mlp, theta, X, y, v, backend="cpu")
    got = fasttrap.hvp(tm32, theta.astype(np.float32), X.astype(np.float32), y, v.astype(np.float32))
    assert got.dtype == np.float32 and rel_l2(got, ref) < 1e-5 and cosine(got, ref) > 1 - 1e-8


class SmallConv(torch.nn.Module):
    """Two convolutions and two dense layers: the aging paper's small net, in miniature."""

    def __init__(self, c=1, classes=3):
        super().__init__()
        self.c1 = torch.nn.Conv2d(c, 3, 3)
        self.c2 = torch.nn.Conv2d(3, 4, 3)
        self.f1 = torch.nn.Linear(4 * 2 * 2, 6)
        self.f2 = torch.nn.Linear(6, classes)

    def forward(self, x):
        x = torch.tanh(self.c1(x))
        x = torch.tanh(self.c2(x))
        return self.f2(torch.tanh(self.f1(x.flatten(1))))


def test_a_conv_nets_hvp_matches_its_dense_hessian(rng):
    net = SmallConv().double()
    tm = TorchModel(net, input_shape=(1, 6, 6))
    theta = tm.init(2, 3, np.float64)
    X = rng.standard_normal((5, 36))                                  # flat rows, folded to (1, 6, 6)
    y = rng.integers(0, 3, 5)
    V = rng.standard_normal(theta.shape)
    Hv = fasttrap.hvp(tm, theta, X, y, V)
    Xt = torch.from_numpy(X).reshape(5, 1, 6, 6)
    for k in range(2):
        def loss(t):
            return torch.nn.functional.cross_entropy(torch.func.functional_call(net, tm.params(t), (Xt,)),
                                                     torch.from_numpy(y))
        H = torch.autograd.functional.hessian(loss, torch.from_numpy(theta[k]))
        np.testing.assert_allclose(Hv[k], (H @ torch.from_numpy(V[k])).numpy(), rtol=1e-9, atol=1e-12)
    L, G, dG = fasttrap.grad_G(tm, theta, X, y)
    _, g = fasttrap.value_and_grad(tm, theta, X, y)
    np.testing.assert_allclose(dG, fasttrap.hvp(tm, theta, X, y, g), rtol=1e-12)
    np.testing.assert_allclose(G, 0.5 * (g * g).sum(1), rtol=1e-12)


def test_refusals(rng):
    bn = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    with pytest.raises(ValueError, match="BatchNorm layer in training mode.*module.eval"):
        TorchModel(bn)
    TorchModel(bn.eval(), input_shape=(4,))                          # in eval mode it is a fixed function
    with pytest.raises(ValueError, match="dropout"):
        TorchModel(torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Dropout(0.5)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TorchModel(lambda x: x)
    with pytest.raises(ValueError, match="needs output 'identity'"):
        TorchModel(torch.nn.Linear(4, 3), loss="nll", output="sigmoid")
    tm = TorchModel(torch.nn.Sequential(torch.nn.Linear(4, 3)).double(), input_shape=(4,))
    th = tm.init(1, 0, np.float64)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*match the number of classes"):
        fasttrap.value_and_grad(tm, th, np.zeros((2, 4)), np.array([0, 7]))
    with pytest.raises(ValueError, match=r"each input must have shape \[4\]"):
        fasttrap.value_and_grad(tm, th, np.zeros((2, 5)), np.array([0, 1]))
    with pytest.raises(ValueError, match="backend: 'cpu' is the compiled core"):
        fasttrap.value_and_grad(tm, th, np.zeros((2, 4)), np.array([0, 1]), backend="cpu")
    with pytest.raises(ValueError, match=r"theta: expected shape \[K, 15\]"):
        fasttrap.value_and_grad(tm, np.zeros((1, 9)), np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"expected \[2, classes\]"):
        TorchModel(torch.nn.Conv2d(1, 2, 3), input_shape=(1, 5, 5))


def _fashion_or_mnist():
    from fasttrap.model import data

    try:
        return data.load("fashion-mnist").subset(600, 200)
    except data.DataError:
        return data.load("mnist").subset(600, 200)      # CI without Debian's package


def test_outer_sgd_and_aging_run_on_a_small_conv_net():
    """Outer SGD, aging (Δ, Δ₄) and the gradient noise on the small conv net, on a slice of
    Fashion-MNIST (MNIST where that package is missing); the path learns and resumes exactly."""
    from fasttrap.analysis import aging

    ds = _fashion_or_mnist()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(1, 4, 5, stride=2), torch.nn.Conv2d(4, 8, 5, stride=2)
            self.f1, self.f2 = torch.nn.Linear(8 * 4 * 4, 32), torch.nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.f2(torch.relu(self.f1(x.flatten(1))))

    tm = TorchModel(Net(), input_shape=(1, 28, 28))
    out = fasttrap.outer_sgd(tm, ds, [0, 1], lr=0.05, batch_size=32, steps=60, record=[0, 30, 60], curve_points=3,
                             progress=False)
    assert out.thetas.shape == (2, 3, tm.n_params)
    assert np.all(out.train_loss[:, -1] < out.train_loss[:, 0])
    a = fasttrap.outer_sgd(tm, ds, [0, 1], lr=0.05, batch_size=32, steps=30, record=[30], curve_points=0, progress=False)
    b = fasttrap.outer_sgd(tm, ds, [0, 1], lr=0.05, batch_size=32, steps=60, start=30, theta0=a.thetas[:, 0],
                           record=[60], curve_points=0, progress=False)
    assert b.thetas[:, 0].tobytes() == out.thetas[:, 2].tobytes()
    r = aging.run_aging(tm, ds, seeds=[0, 1], lr=0.05, batch_size=32, steps=80, t_w=[5, 20], lags=[1, 10, 50],
                        curve_points=3, noise_rows=100, eval_rows=100, progress=False,
                        moves=[fasttrap.Swap("pixels", images=0)])
    assert np.isfinite(r.two_time.msd[:, 0, :]).all() and (r.two_time.msd[:, 0, :] > 0).all()
    assert np.isfinite(r.noise_D).all() and (r.noise_D > 0).all()
    with pytest.raises(ValueError, match="weight swaps act on the layers of a fasttrap.MLP"):
        fasttrap.outer_sgd(tm, ds, [0], steps=2, moves=[fasttrap.Swap("rows", layer=1)], progress=False)


# --- the inner descent, certificates and the trap analysis on a module ------------------------------------------


@pytest.mark.parametrize("act, loss, output", [("tanh", "nll", "identity"), ("sigmoid", "mse", "sigmoid")])
@pytest.mark.parametrize("batches", ["shared", "independent"])
def test_inner_descent_of_an_mlp_as_a_module_equals_the_compiled_one(rng, act, loss, output, batches):
    """A few inner steps on G from the same start points, same batches: the same endpoints (float64)."""
    tm, mlp = _mlp_pair(act, loss=loss, output=output)
    theta0 = mlp.init(3, 2, np.float64)
    X, y = rng.standard_normal((40, 12)), rng.integers(0, 4, 40)
    kw = dict(steps=7, solver=fasttrap.SGD(lr=0.3, batch_size=8, batches=batches), seed=5, record_every=1,
              progress=False)
    a = fasttrap.inner_descent(tm, theta0, (X, y), **kw)
    b = fasttrap.inner_descent(mlp, theta0, (X, y), backend="cpu", **kw)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(a.G_trace, b.G_trace, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(a.train_G, b.train_G, rtol=1e-9, atol=1e-15)
    assert list(a.status) == list(b.status) and a.settings["backend"] == fasttrap.ops.resolve_for(tm, "auto")
    _, _, g0 = fasttrap.evaluate(tm, theta0, X, y, True)
    assert np.all(a.train_G < 0.5 * (g0 * g0).sum(1))                  # the descent lowers the full-batch G


def test_stopping_rules_on_a_module(rng):
    """Converged (G below G_tol), diverged (growth) and running-out endpoints get the statuses and
    step counts of the core."""
    tm, mlp = _mlp_pair("tanh")
    theta0 = mlp.init(2, 0, np.float64)
    X, y = rng.standard_normal((16, 12)), rng.integers(0, 4, 16)
    seen = set()
    for kw in (dict(G_tol=1e3), dict(solver=fasttrap.SGD(lr=3e3, batch_size=16), growth=1.5), dict()):
        args = dict(steps=5, solver=fasttrap.SGD(lr=0.1, batch_size=16), progress=False) | kw
        a = fasttrap.inner_descent(tm, theta0, (X, y), **args)
        b = fasttrap.inner_descent(mlp, theta0, (X, y), backend="cpu", **args)
        assert list(a.status) == list(b.status) and list(a.steps_done) == list(b.steps_done)
        seen |= set(a.status)
    assert seen == {"converged", "diverged", "max_steps"}


def test_certify_a_module_equals_the_compiled_certificate(rng):
    tm, mlp = _mlp_pair("tanh", widths=(6, 4, 3))
    X, y = rng.standard_normal((30, 6)), rng.integers(0, 3, 30)
    theta = mlp.init(2, 1, np.float64)
    kw = dict(k=4, lanczos_steps=30, slq_probes=1, slq_steps=10, minres_iters=30)
    a = fasttrap.certify(tm, theta, X, y, **kw)
    b = fasttrap.certify(mlp, theta, X, y, backend="cpu", **kw)
    for f in ("grad_sq", "loss", "lambda_min", "lambda_max", "gf_residual", "negative_fraction"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-7, atol=1e-10, err_msg=f)
    assert list(a.kind) == list(b.kind) and list(a.index) == list(b.index)
    e = fasttrap.hessian_eigs(tm, theta, X, y, k=2)
    np.testing.assert_allclose(e.values, fasttrap.hessian_eigs(mlp, theta, X, y, k=2, backend="cpu").values, rtol=1e-8)


def test_a_module_is_refused_by_the_compiled_backend_of_the_drivers(rng):
    tm, mlp = _mlp_pair()
    theta0 = mlp.init(1, 0, np.float64)
    X, y = rng.standard_normal((8, 12)), rng.integers(0, 4, 8)
    with pytest.raises(ValueError, match="backend: 'cpu' is the compiled core"):
        fasttrap.inner_descent(tm, theta0, (X, y), steps=1, backend="cpu", progress=False)
    with pytest.raises(ValueError, match="backend: 'cpu' is the compiled core"):
        fasttrap.certify(tm, theta0, X, y, backend="cpu")
    with pytest.raises(ValueError, match=r"data X: each input must have shape \[12\]"):
        fasttrap.inner_descent(tm, theta0, (X[:, :5], y), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 4\)"):
        fasttrap.certify(tm, theta0, X, y + 4)


def test_inner_descent_and_certificates_on_the_small_conv_net():
    """The built-in small net on a slice of Fashion-MNIST: the descent lowers G, stops with statuses,
    and the certificates read the endpoints (float64 Lanczos on torch.func HVPs)."""
    from fasttrap.model import zoo

    ds = _fashion_or_mnist()
    tm = zoo.build("smallnet", ds.image_shape, ds.n_classes)
    assert isinstance(tm, TorchModel) and tm.n_params == 21_840
    theta0 = tm.init(2, 0)
    r = fasttrap.inner_descent(tm, theta0, ds, steps=12, solver=fasttrap.SGD(lr=0.05, batch_size=50), progress=False,
                               eval_rows=200)
    assert set(r.status) == {"max_steps"} and r.theta.dtype == np.float32
    assert np.all(np.nanmin(r.G_trace, 1) < r.G_start)
    X4 = ds.X_train[:100].reshape(100, *ds.image_shape)                 # images keep their shape, too
    c = fasttrap.certify(tm, r.theta, X4, ds.y_train[:100], k=2, k_max=4, lanczos_steps=12, slq_probes=0,
                         minres_iters=10)
    assert set(c.kind) <= {"minimum", "saddle", "gradient_flat", "not_converged"}
    assert np.all(c.lambda_max > 0) and np.all(c.lambda_min < c.lambda_max) and np.all(c.grad_sq > 0)


# --- the aging paper's networks, built in -----------------------------------------------------------------------


def test_the_built_in_networks():
    from fasttrap.model import zoo

    toy = zoo.build("toy", (1, 28, 28), 10, hidden=4)
    assert isinstance(toy, fasttrap.MLP) and toy.widths == (784, 4, 10)
    assert (toy.activation, toy.loss, toy.output) == ("relu", "mse", "sigmoid")
    fc = zoo.build("mlp", (1, 28, 28), 10, hidden=[100, 100])
    assert fc.widths == (784, 100, 100, 10)
    sn = zoo.build("smallnet", (3, 32, 32), 10)                     # CIFAR-size images: 20·5·5 into the dense layers
    assert sn.input_shape == (3, 32, 32) and sn.n_out == 10
    assert sn.n_params == (3 * 25 * 10 + 10) + (10 * 25 * 20 + 20) + (500 * 50 + 50) + (50 * 10 + 10)
    rn = zoo.build("resnet18", (3, 32, 32), 10)
    assert rn.n_params == 11_173_962                                # ResNet-18 (CIFAR stem), 10 classes
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rn.module.modules())
    bn = zoo.resnet18((3, 32, 32), 100, norm="batch")
    assert not bn.training and TorchModel(bn, input_shape=(3, 32, 32)).n_params == 11_173_962 + 513 * 90
    with pytest.raises(ValueError, match="arch: expected one of"):
        zoo.build("vgg", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="too small for two 5x5 convolutions"):
        zoo.smallnet((1, 8, 8), 10)
    with pytest.raises(ValueError, match="one hidden layer"):
        zoo.build("toy", (1, 28, 28), 10, hidden=[5, 5])
    with pytest.raises(ValueError, match="image_shape: expected"):
        zoo.build("smallnet", (28, 28), 10)


def test_resnet18_runs_through_the_ops(rng):
    """The ResNet-18 (GroupNorm) gives finite loss, gradient and HVP on two CIFAR-size images, and its
    HVP is linear in the direction (a cheap check that needs no dense Hessian of 11M parameters)."""
    from fasttrap.model import zoo

    rn = zoo.build("resnet18", (3, 32, 32), 10)
    th = rn.init(1, 0)
    X, y = rng.standard_normal((2, 3 * 32 * 32)).astype(np.float32), np.array([1, 7])
    L, g = fasttrap.value_and_grad(rn, th, X, y)
    assert np.isfinite(L).all() and np.isfinite(g).all() and np.abs(g).sum() > 0
    v = rng.standard_normal(th.shape).astype(np.float32)
    h1, h2 = fasttrap.hvp(rn, th, X, y, v), fasttrap.hvp(rn, th, X, y, 2 * v)
    assert rel_l2(h2, 2 * h1) < 1e-5


def test_resnet18_written_out_equals_torchvisions_layout():
    """Where torchvision is installed, its ResNet-18 (adapted: 3×3 stem, no max-pool) and the written-out
    one have the same parameters, name for name and shape for shape."""
    pytest.importorskip("torchvision")
    from fasttrap.model import zoo

    a = zoo.resnet18((3, 32, 32), 10, source="torchvision")
    b = zoo.resnet18((3, 32, 32), 10, source="written")
    assert [(n, tuple(p.shape)) for n, p in a.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in b.named_parameters()]


def test_compiled_per_sample_norms_equal_the_eager_ones(rng):
    """TorchModel(compile=True): torch.compile of the per-sample gradients gives the same norms."""
    net = SmallConv().double()
    eager = TorchModel(net, input_shape=(1, 6, 6))
    comp = TorchModel(net, input_shape=(1, 6, 6), compile=True)
    th = eager.init(2, 0, np.float64)
    X, y = rng.standard_normal((10, 36)), rng.integers(0, 3, 10)
    a, ga = fasttrap.per_sample_grad_sq(eager, th, X, y, True, 4)
    b, gb = fasttrap.per_sample_grad_sq(comp, th, X, y, True, 4)
    np.testing.assert_allclose(b, a, rtol=1e-10)
    np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-14)
    with pytest.raises(TypeError, match="compile: expected a bool"):
        TorchModel(net, compile="yes")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_without_running_statistics_is_refused_in_either_mode(mode):
    """Such a layer uses the batch's own statistics always: the loss of 64 rows differed from the mean
    of its two halves (1.384889 against 1.385804) before this was refused."""
    bn = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5, track_running_stats=False),
                             torch.nn.Linear(5, 3))
    getattr(bn, mode)()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fasttrap.TorchModel(bn, input_shape=(4,))


def test_a_wrong_input_shape_is_named():
    """Before: torch's "mat1 and mat2 shapes cannot be multiplied", naming neither argument."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 26 * 26, 10))
    with pytest.raises(ValueError, match=r"input_shape: the module cannot take inputs of shape \[1, 20, 20\]"):
        TorchModel(net, input_shape=(1, 20, 20))
    m = TorchModel(torch.nn.Linear(784, 10))            # no input_shape: the data's rows are the inputs
    X, y = np.zeros((4, 100), np.float32), np.arange(4)
    with pytest.raises(ValueError, match=r"input_shape.*\[100\].*pass input_shape"):
        fasttrap.value_and_grad(m, m.init(1, 0), X, y)


class _Squeezed(torch.nn.Module):
    def __init__(self, out_shape):
        super().__init__()
        self.lin = torch.nn.Linear(6, int(np.prod(out_shape)))
        self.out_shape = out_shape

    def forward(self, x):
        return self.lin(x).reshape(-1, *self.out_shape) if self.out_shape != (1,) else self.lin(x)[:, 0]


@pytest.mark.parametrize("out_shape,shown", [((1,), r"\[2\]"), ((4, 2), r"\[2, 4, 2\]")])
@pytest.mark.parametrize("given", [True, False])
def test_an_output_that_is_not_batch_by_classes_is_named(out_shape, shown, given):
    """Before: an output [B] gave "labels must lie in [0, 1)", and [B, 4, 2] a torch target-size error."""
    X, y = np.zeros((5, 6), np.float32), np.arange(5) % 2
    with pytest.raises(ValueError, match=rf"module: its output for inputs \[2, 6\] has shape {shown}; expected \[2, "
                                         "classes\\]"):
        m = TorchModel(_Squeezed(out_shape), input_shape=(6,) if given else None)
        fasttrap.value_and_grad(m, m.init(1, 0), X, y)


def test_train_mode_after_wrapping_is_refused_before_any_op():
    """Before: ``net.train()`` after wrapping an eval-mode BatchNorm net gave a functorch in-place error."""
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3)).eval()
    m = TorchModel(net, input_shape=(6,))
    th, X, y = m.init(2, 0), np.random.default_rng(0).random((8, 6), dtype=np.float32), np.arange(8) % 3
    loss, _ = fasttrap.value_and_grad(m, th, X, y)
    assert np.isfinite(loss).all()
    net.train()
    with pytest.raises(ValueError, match="BatchNorm layer in training mode.*put back in training mode"):
        fasttrap.value_and_grad(m, th, X, y)
    with pytest.raises(ValueError, match="BatchNorm layer in training mode"):
        fasttrap.hvp(m, th, X, y, th)
    net.eval()
    np.testing.assert_array_equal(fasttrap.value_and_grad(m, th, X, y)[0], loss)
