"""The layering of docs/architecture.md, checked on the code's own imports.

Layers, bottom up: crypto (primitives) -> mpc (pure protocols) -> services
(transport, storage, CLI); protos is the wire contract; bench drives everything
and nothing in the product depends on it. Every import of every module counts,
wherever it stands (module level, inside a function, under TYPE_CHECKING, or
`importlib.import_module` with a literal name): a lazy import is still a
dependency, and a hidden one is worse.

Second rule: a product module (Python or the compiled kernel's C sources) stays
under ~600 lines, so each file keeps one job a reader can hold in mind. Generated protobuf code and the line-by-line
transcription of the VDAF draft (bench/prio3_draft_baseline.py) are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import REPO

LAYERS = ("crypto", "mpc", "services", "protos", "bench")

# (from, to) -> why it is forbidden (the "never" arrows of the architecture)
FORBIDDEN = {
    ("crypto", "mpc"): "primitives know no protocol",
    ("crypto", "services"): "primitives do no I/O",
    ("crypto", "protos"): "primitives know no wire format",
    ("crypto", "bench"): "the product does not depend on its benchmark",
    ("mpc", "services"): "protocol code is pure, no transport or storage",
    ("mpc", "bench"): "the product does not depend on its benchmark",
    ("services", "bench"): "the product does not depend on its benchmark",
}

# (importing file, imported module) pairs accepted although their layers are forbidden.
# Each is accepted only as an import inside a function, never at module level.
LAZY_ARROWS_ALLOWED = {
    # `twinmpc bench` hands its arguments to the benchmark runner; importing it only when that
    # command runs keeps the product's import graph and runtime dependencies free of bench/.
    ("services/cli.py", "twinmpc.bench.runner"): "the `twinmpc bench` command dispatches to bench/",
}

MAX_LINES = 600
EXEMPT_FROM_SIZE = {"bench/prio3_draft_baseline.py"}  # the draft's code, transcribed one to one


def _is_generated(rel: str) -> bool:
    return rel.startswith("protos/") and (rel.endswith("_pb2.py") or rel.endswith("_pb2_grpc.py"))


def product_modules() -> list[tuple[str, str]]:
    """(repository path, dotted module name) of every Python file of the five packages."""
    out = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(REPO).as_posix()
            parts = list(Path(rel).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((rel, ".".join(["twinmpc", *parts])))
    return out


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[tuple[str, bool]]:
    """Every twinmpc module `module` imports, with whether the import runs at module level.

    Relative imports are resolved against the module's package; `from twinmpc import bench`
    names the layer imported. `importlib.import_module("...")` and `__import__("...")` with a
    literal name count as imports.
    """
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, top))
            if target == "twinmpc":  # `from twinmpc import bench`: the names are the layers
                found.extend((f"{target}.{alias.name}", top) for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, top))
        nested = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(tree, True)
    return [(name, top) for name, top in found if name == "twinmpc" or name.startswith("twinmpc.")]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def arrows_in(rel: str, module: str, source: str) -> list[str]:
    """The forbidden imports of one file, each as a line naming file, target and rule."""
    offenders = []
    here = layer_of(module)
    for target, top in imports_of(source, module, is_package=rel.endswith("__init__.py")):
        there = layer_of(target)
        why = FORBIDDEN.get((here, there))
        if why is None:
            continue
        lazy_ok = any(rel == f and (target == t or target.startswith(t + ".")) for f, t in LAZY_ARROWS_ALLOWED)
        if lazy_ok and not top:
            continue
        offenders.append(f"{rel} imports {target} ({here} -> {there}: {why})")
    return offenders


def forbidden_arrows() -> list[str]:
    offenders = []
    for rel, module in product_modules():
        offenders += arrows_in(rel, module, (REPO / rel).read_text(encoding="utf-8"))
    return sorted(set(offenders))


def test_no_import_the_architecture_forbids() -> None:
    offenders = forbidden_arrows()
    if offenders:
        print("\n".join(["forbidden arrows:", *offenders]))
    assert not offenders, "forbidden arrows:\n" + "\n".join(offenders)


def test_the_import_scan_sees_real_arrows() -> None:
    """The scan is not vacuous: the layers' allowed arrows are found in today's code."""
    seen = set()
    for rel, module in product_modules():
        for target, _ in imports_of((REPO / rel).read_text(encoding="utf-8"), module, is_package=rel.endswith("__init__.py")):
            seen.add((layer_of(module), layer_of(target)))
    assert {("mpc", "crypto"), ("services", "mpc"), ("services", "protos"), ("bench", "services")} <= seen


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from twinmpc.mpc.errors import DecodeError", "twinmpc.crypto.seal", ("twinmpc.mpc.errors", True)),
        ("def f():\n    from twinmpc.bench.runner import main", "twinmpc.services.cli", ("twinmpc.bench.runner", False)),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import twinmpc.services.client",
         "twinmpc.mpc.task", ("twinmpc.services.client", True)),
        ("from ..storage import base", "twinmpc.services.aggregator.upload", ("twinmpc.services.storage", True)),
        ("from .. import bench", "twinmpc.services", ("twinmpc.bench", True)),
        ("import importlib\nx = importlib.import_module('twinmpc.bench.peers')", "twinmpc.mpc.dp", ("twinmpc.bench.peers", True)),
    ],
    ids=["module-level", "lazy", "type-checking", "relative", "relative-from-package", "importlib"],
)
def test_the_import_scan_finds_every_form(source: str, module: str, expected: tuple[str, bool]) -> None:
    is_package = module == "twinmpc.services"
    assert expected in imports_of(source, module, is_package=is_package)


@pytest.mark.parametrize(("rel", "target"), sorted(LAZY_ARROWS_ALLOWED))
def test_a_lazy_allowance_covers_only_an_import_inside_a_function(rel: str, target: str) -> None:
    module = "twinmpc." + rel.removesuffix(".py").replace("/", ".")
    assert arrows_in(rel, module, f"def command():\n    import {target}\n") == []
    assert len(arrows_in(rel, module, f"import {target}\n")) == 1


def test_a_crypto_import_of_mpc_is_reported() -> None:
    assert arrows_in("crypto/seal.py", "twinmpc.crypto.seal", "from twinmpc.mpc.errors import SealError") == [
        "crypto/seal.py imports twinmpc.mpc.errors (crypto -> mpc: primitives know no protocol)"
    ]


def test_no_product_module_over_600_lines() -> None:
    files = [rel for rel, _ in product_modules()]
    files += [p.relative_to(REPO).as_posix() for layer in LAYERS for p in sorted((REPO / layer).rglob("*.c"))]
    assert any(rel.endswith(".c") for rel in files), "the compiled kernel's C sources are not where the check looks"
    sizes = {
        rel: len((REPO / rel).read_text(encoding="utf-8").splitlines())
        for rel in files
        if not _is_generated(rel) and rel not in EXEMPT_FROM_SIZE
    }
    too_long = {rel: n for rel, n in sizes.items() if n > MAX_LINES}
    report = [f"{rel}: {n} lines (limit {MAX_LINES})" for rel, n in sorted(too_long.items(), key=lambda kv: -kv[1])]
    if report:
        print("\n".join(["module size:", *report]))
    assert not report, "module size:\n" + "\n".join(report)


def import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports (lazy imports included), each resolved to a file."""
    modules = {module: rel for rel, module in product_modules()}
    graph: dict[str, set[str]] = {}
    for module, rel in modules.items():
        targets = set()
        for target, _ in imports_of((REPO / rel).read_text(encoding="utf-8"), module, is_package=rel.endswith("__init__.py")):
            while target and target not in modules:  # `from pkg.mod import name` names the module, not the name
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    """Two modules that import each other (even lazily) are one module split in the wrong place."""
    cycles = cycles_in(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_a_lazy_cycle() -> None:
    assert cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles_in({"a": {"b"}, "b": set()}) == []
