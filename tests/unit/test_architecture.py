"""The package's shape: no import cycles, dependencies pointing down the flow, a public API that
is real names, and a stage table whose functions match their declared upstream stages."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import raypipe

PACKAGE = Path(raypipe.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, *, module_level: bool) -> set[str]:
    """raypipe modules ``name`` imports: at module level only (what can cycle), or anywhere."""
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        nodes.append(node)
        if not module_level or isinstance(node, (ast.If, ast.Try, ast.With)):
            todo.extend(ast.iter_child_nodes(node))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    # Importing a module runs its package's __init__; that alone is not an edge of the graph.
    return {m for m in found if m in MODULES and m != name and not name.startswith(m + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_level_import_cycles() -> None:
    graph = {m: _imports(m, p, module_level=True) for m, p in MODULES.items()}
    assert _cycles(graph) == []
    # The scan sees real edges (it would pass vacuously on a parser that found none).
    assert "raypipe.model" in graph["raypipe.registry.loading"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Lower layers never import higher ones, even inside functions: the flow reads one way.
FORBIDDEN = {
    "raypipe.config": ("raypipe.data", "raypipe.train", "raypipe.registry", "raypipe.serve", "raypipe.pipeline"),
    "raypipe.data": ("raypipe.train", "raypipe.registry", "raypipe.serve", "raypipe.monitor", "raypipe.pipeline"),
    "raypipe.features": ("raypipe.train", "raypipe.registry", "raypipe.serve", "raypipe.pipeline"),
    "raypipe.model": ("raypipe.train", "raypipe.registry", "raypipe.serve", "raypipe.pipeline", "raypipe.monitor"),
    "raypipe.explain": ("raypipe.train", "raypipe.registry", "raypipe.serve", "raypipe.pipeline", "raypipe.monitor"),
    "raypipe.train": ("raypipe.serve", "raypipe.pipeline", "raypipe.monitor"),
    "raypipe.registry": ("raypipe.serve", "raypipe.pipeline", "raypipe.monitor", "raypipe.cli"),
    "raypipe.serve": ("raypipe.pipeline", "raypipe.monitor", "raypipe.train"),
    "raypipe.monitor": ("raypipe.pipeline", "raypipe.serve", "raypipe.train"),
    "raypipe.report": ("raypipe.monitor", "raypipe.pipeline", "raypipe.serve"),
    "raypipe.pipeline": ("raypipe.cli",),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_dependencies_point_down_the_flow(layer: str) -> None:
    bad = []
    for name, path in MODULES.items():
        if name == layer or name.startswith(layer + "."):
            for imported in _imports(name, path, module_level=False):
                if any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN[layer]):
                    bad.append(f"{name} -> {imported}")
    assert bad == []


def test_the_public_api_is_real_names() -> None:
    # Every listed name is an attribute of the package itself (no lazy __getattr__ an IDE cannot see).
    assert not hasattr(raypipe, "__getattr__")
    for name in raypipe.__all__:
        assert name in vars(raypipe), name
    for name in ("load_config", "run", "load_model", "plan", "score", "run_monitor"):
        assert callable(getattr(raypipe, name)) and getattr(raypipe, name).__doc__
    # No public name is also a subpackage's name: importing the subpackage would replace it.
    assert not {n for n in raypipe.__all__ if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").is_file()}


def test_importing_raypipe_does_not_import_ray_or_mlflow() -> None:
    import subprocess
    import sys

    code = "import sys, raypipe; print(sorted(m for m in ('ray', 'mlflow', 'xgboost', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_table_matches_the_stage_functions() -> None:
    from raypipe.pipeline.table import NAMES, STAGES

    assert NAMES == ("ingest", "profile", "quality", "preprocess", "train", "evaluate", "register", "report", "serve")
    for i, stage in enumerate(STAGES):
        # A stage reads only stages declared before it, by their names.
        assert set(stage.upstream) <= set(NAMES[:i]), stage.name
        assert stage.module == f"raypipe.pipeline.stages.{stage.name}"
        importlib.import_module(stage.module)
        for path in stage.config:
            node = raypipe.PipelineConfig.model_fields
            for part in path.split("."):
                assert part in node, f"{stage.name}: {path}"
                ann = node[part].annotation
                node = getattr(ann, "model_fields", {})
