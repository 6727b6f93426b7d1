"""The package's layout rules, read from its source: no import cycles, no reaching into another
room's underscore names, every op beside its twin.

Imports are read with ``ast`` from every ``fasttrap/**/*.py`` (module level and inside functions
alike: a cycle broken only by a lazy import is still a cycle of the design).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import fasttrap

PKG = Path(fasttrap.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(mod: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import statement of ``mod``."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text())
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("fasttrap")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, path.name == "__init__.py", node)
            if not target.startswith("fasttrap"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None) if sub in MODULES else (target, a.name))
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _ in imports_of(m):
            if target in MODULES and target != m:
                g[m].add(target)
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of g (as a list of modules, first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(g[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(g):
        if u not in state:
            c = visit(u)
            if c:
                return c
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_inside_the_package():
    # The package's own __init__ imports every room to re-export the public API; a room that
    # imported it back would be a cycle, and so is caught here like any other.
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()) else ""


def test_no_module_imports_another_rooms_underscore_names():
    """An underscore module or name is private to its folder: only its siblings may import it."""
    bad = []
    for m in MODULES:
        if m == "fasttrap._compat" or m == "fasttrap":
            continue     # the alias table names the old private modules to keep their paths working
        for target, name in imports_of(m):
            private = any(p.startswith("_") and not p.startswith("__") for p in target.split(".")[1:])
            private = private or (name is not None and name.startswith("_") and not name.startswith("__"))
            if private and target != "fasttrap._core" and _room(target) != _room(m):
                bad.append(f"{m} imports {target}{'.' + name if name else ''}")
    assert not bad, "\n".join(bad)


def test_no_room_imports_the_package_root():
    """Rooms import each other, never ``fasttrap`` itself (its __init__ imports them all)."""
    bad = [f"{m} imports {t}" for m in MODULES if m != "fasttrap" for t, _ in imports_of(m) if t == "fasttrap"]
    assert not bad, "\n".join(bad)


OPS = {"fasttrap.ops.grad": "fasttrap.reference.grad", "fasttrap.ops.dataset": "fasttrap.reference.dataset",
       "fasttrap.ops.spectra": "fasttrap.reference.spectra"}


@pytest.mark.parametrize("ops_mod, twin_mod", OPS.items())
def test_every_op_sits_beside_a_twin_of_the_same_name_and_signature(ops_mod, twin_mod):
    import importlib

    ops, twins = importlib.import_module(ops_mod), importlib.import_module(twin_mod)
    public = [n for n, f in vars(ops).items() if inspect.isfunction(f) and f.__module__ == ops_mod and not n.startswith("_")]
    assert public
    core = fasttrap.ops._loader.core
    for n in public:
        twin = getattr(twins, n)
        p_op = [p for p in inspect.signature(getattr(ops, n)).parameters if p != "backend"]
        assert p_op == list(inspect.signature(twin).parameters), n
        if core is not None:
            assert hasattr(core, n), f"the compiled core has no kernel named {n}"


def test_every_op_module_mirrors_a_twin_module():
    ops = {p.stem for p in (PKG / "ops").glob("*.py")} & {"grad", "dataset", "spectra"}
    twins = {p.stem for p in (PKG / "reference").glob("*.py")}
    assert ops <= twins


def test_one_set_of_names():
    """No alias layer: no module-level ``__getattr__`` hook and no ``_compat`` module anywhere in the
    package; the root exports exactly its ``__all__``; the old flat names do not import."""
    import ast
    import importlib

    import fasttrap

    assert not (PKG / "_compat.py").exists()
    for p in PKG.rglob("*.py"):
        tree = ast.parse(p.read_text())
        hooks = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("__getattr__", "__dir__")]
        assert not hooks, f"{p.relative_to(PKG)}: a module-level {hooks[0]} (an alias hook)"
    for name in fasttrap.__all__:
        assert hasattr(fasttrap, name), name
    public = {n for n in vars(fasttrap) if not n.startswith("_")}
    subpackages = {"annotations", "analysis", "common", "dynamics", "linalg", "model", "ops", "reference", "run", "version"}
    assert public - set(fasttrap.__all__) <= subpackages, sorted(public - set(fasttrap.__all__) - subpackages)
    for old in ("kernels", "traps", "stats", "data", "store", "config", "cli", "pipeline", "report"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"fasttrap.{old}")


def test_the_console_script_points_at_a_real_function():
    """``fasttrap-run`` names ``module:function`` in pyproject.toml; both must exist at their real path,
    and where the package is installed the script must start (its --help)."""
    import importlib
    import shutil
    import subprocess
    import sys
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    mod, _, fn = scripts["fasttrap-run"].partition(":")
    assert callable(getattr(importlib.import_module(mod), fn))
    exe = shutil.which("fasttrap-run", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("fasttrap is not pip-installed here (no fasttrap-run script beside this python)")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--resume" in r.stdout, r.stderr[-2000:]


def test_every_public_driver_is_keyword_only_past_its_first_three_arguments():
    """Drivers take (model, data or θ, seeds or data) by position and every setting by name, so a
    setting can be added or reordered without silently shifting a call. (The ops and the
    certificates take the four data arguments (model, θ, X, y) of their compiled twins.)"""
    import fasttrap
    from fasttrap.analysis import aging

    for f in (fasttrap.outer_sgd, fasttrap.inner_descent, aging.run_aging, fasttrap.traps_from_endpoints):
        ps = inspect.signature(f).parameters.values()
        positional = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) <= 3, f"{f.__module__}.{f.__name__}: positional past the third: {positional[3:]}"


# The floors, lowest first: a room may import only from its own floor or below. ``ops`` sits above
# ``reference`` because the dispatch point routes ``backend="torch"`` to the twins.
FLOORS = ["common", "model", "reference", "ops", "linalg", "dynamics", "analysis", "run"]


def _room(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else None


def test_solvers_are_chosen_by_value_not_by_a_string_branch():
    """The inner solver is a value (fasttrap.dynamics.solvers); a name becomes one only in the registry's
    from_settings, so no module compares a method name (issue 26, step 3)."""
    import re

    hits = []
    for p in PKG.rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"""(method|inner\.method"\])\s*(==|!=|in)\s*["'(]""", line):
                hits.append(f"{p.relative_to(PKG)}:{i}: {line.strip()}")
    assert not hits, hits


_CLASSES = r"(MLP|TorchModel|TorchPathModel)"
MODEL_TYPE_TEST = re.compile(rf"isinstance\([^)]*\b{_CLASSES}\b|type\([^)]*\)\s*(is|==)\s*{_CLASSES}\b")


def test_no_isinstance_on_a_model_class_outside_the_model_package():
    """The ops, drivers and analyses ask a model (``compiled``, ``noun``, ``label``, ``check_inputs`` …:
    :class:`fasttrap.model.base.Model`) instead of testing its type, so a new model type needs no
    branch anywhere else (issue 26, step 2)."""
    pat = MODEL_TYPE_TEST
    hits = []
    for p in PKG.rglob("*.py"):
        if p.relative_to(PKG).parts[0] == "model":
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pat.search(line):
                hits.append(f"{p.relative_to(PKG)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_isinstance_rule_catches_an_isinstance():
    pat = MODEL_TYPE_TEST
    assert pat.search("type(model) is MLP") and pat.search("if isinstance(mlp, TorchModel):") and pat.search("isinstance(m, (MLP, TorchModel))")
    assert not pat.search("check_model(mlp)")


def test_arrows_point_down():
    """No upward import (lazy ones count): training and descents live in ``dynamics/`` and the
    analyses call them; the twins never reach for an analysis."""
    assert {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()} <= set(FLOORS) | {"datasets"}
    up = []
    for m in MODULES:
        a = _room(m)
        if a is None:
            continue
        for target, _ in imports_of(m):
            b = _room(target)
            if b is not None and FLOORS.index(b) > FLOORS.index(a):
                up.append(f"{m} ({a}) imports {target} ({b})")
    assert not up, "\n".join(up)


def test_every_binding_is_named_and_in_the_stub():
    """Every function of the compiled core has a name for each argument (so a caller can pass them by
    keyword: ``cuda_descent_loop`` has 34), and ``_core.pyi`` declares it, the CUDA entries included,
    with the same argument names."""
    from fasttrap.ops import _loader

    core = _loader.core
    if core is None:
        pytest.skip("the compiled core is not built here")
    stub = ast.parse((PKG / "_core.pyi").read_text())
    declared = {n.name: [a.arg for a in n.args.args] for n in stub.body if isinstance(n, ast.FunctionDef)}
    assert "__getattr__" not in declared, "the stub must name every entry, not hide them behind __getattr__"
    funcs = [n for n in dir(core) if not n.startswith("_") and callable(getattr(core, n))]
    assert funcs
    for n in funcs:
        head = (getattr(core, n).__doc__ or "").split("\n")[0]
        assert head.startswith(f"{n}(") and "arg0" not in head, f"{n}: an unnamed argument: {head[:200]}"
        assert n in declared, f"_core.pyi does not declare {n}"
        names = re.findall(r"(?:\(|, )(\w+): ", head[: head.rindex(") ->")])   # pybind's "name: type" pairs
        assert declared[n] == names, f"{n}: stub {declared[n]} but binding {names}"


def test_the_cuda_wrappers_pass_every_argument_by_its_binding_name():
    """ops/cuda.py calls each ``cuda_*`` net op by keyword; checked here against the stub (and the
    stub against the binding above), so a renamed or missing argument fails on a machine without a GPU."""
    stub = ast.parse((PKG / "_core.pyi").read_text())
    declared = {n.name: [a.arg for a in n.args.args] for n in stub.body if isinstance(n, ast.FunctionDef)}
    calls = 0
    for node in ast.walk(ast.parse((PKG / "ops" / "cuda.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("cuda_"):
            name = node.func.attr
            kws = [k.arg for k in node.keywords]
            if None in kws:                                   # **_net(mlp): the four layout codes
                kws = ["widths", "act", "loss", "out_act"] + [k for k in kws if k is not None]
            assert not node.args or name in ("cuda_set_graph_calls", "cuda_cublas_hint"), f"{name}: positional"
            if not node.args:
                assert kws == declared[name], f"{name}: passes {kws}, the binding takes {declared[name]}"
                calls += 1
    assert calls >= 5
