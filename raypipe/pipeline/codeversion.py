"""The code's version: what a stage depends on, computed from its imports (no hand-kept list of
files), and the whole source's version for the manifest (git commit, dirty flag, source hash).

A stage's code is the raypipe module that defines its function plus every raypipe module
that module imports, transitively, at module level or inside functions (``TYPE_CHECKING``
blocks excluded: annotations run nothing). A package's ``__init__`` counts only when it is
imported by name. Each module is hashed by its source, so a cache key changes exactly when
code the stage can run changes, and ``raypipe plan`` can name the module.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_PACKAGE = PACKAGE_ROOT.name


def module_file(name: str) -> Path | None:
    """The source file of raypipe module ``name`` (``raypipe.data.ingest``), or None."""
    rel = Path(*name.split(".")[1:])
    for path in (PACKAGE_ROOT / rel.with_suffix(".py"), PACKAGE_ROOT / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imported_names(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from pkg import sub" imports the submodule; "from mod import f" the module.
            subs = {f"{base}.{a.name}" for a in node.names}
            hits = {s for s in subs if module_file(s) is not None and s.startswith(_PACKAGE + ".")}
            found.update(hits)
            if len(hits) < len(subs):
                found.add(base)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if (m == _PACKAGE or m.startswith(_PACKAGE + ".")) and module_file(m) is not None}


@cache
def imports(name: str) -> frozenset[str]:
    """raypipe modules that module ``name`` imports directly."""
    path = module_file(name)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(), str(path))
    return frozenset(_imported_names(tree, name, path.name == "__init__.py") - {name})


def closure(name: str) -> tuple[str, ...]:
    """``name`` and every raypipe module it imports, transitively; sorted."""
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imports(m) - seen)
    return tuple(sorted(seen))


@cache
def _file_digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def module_digest(name: str) -> str:
    path = module_file(name)
    if path is None:
        return "missing"
    return _file_digest(path, path.stat().st_mtime_ns)


def code_hashes(module: str) -> dict[str, str]:
    """``{module: sha256 prefix}`` over the closure of ``module``: what a stage's cache key holds."""
    return {m: module_digest(m) for m in closure(module)}


def source_digest() -> str:
    """sha256 over every source file of the package (the manifest's code version)."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE_ROOT.rglob("*.py")):
        h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class CodeVersion:
    commit: str | None
    dirty: bool
    source_sha256: str
    diff: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"git_commit": self.commit, "git_dirty": self.dirty, "source_sha256": self.source_sha256}


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=PACKAGE_ROOT.parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def code_info() -> CodeVersion:
    """The raypipe source's version: its git commit when it is a checkout, and always a source hash."""
    commit = _git("rev-parse", "HEAD")
    dirty = False
    diff = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "raypipe", "pyproject.toml")
        dirty = bool(status and status.strip())
        diff = _git("diff", "HEAD", "--", "raypipe", "pyproject.toml") if dirty else None
    return CodeVersion(commit.strip() if commit else None, dirty, source_digest(), diff)
