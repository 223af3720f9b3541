"""The house's structure: no import cycles, every module importable alone, models/ standalone."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from archive_subsets import REPO_ROOT

PACKAGES = ("idenprof", "models")


def project_modules() -> dict[str, ast.Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = ast.parse(path.read_text())
    return modules


def module_level_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Project modules imported when this module is imported (not those inside functions)."""
    found = set()
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def test_no_import_cycles_at_module_level():
    modules = project_modules()
    graph = {name: module_level_imports(tree, set(modules)) - {name} for name, tree in modules.items()}

    def cycle_from(start, path, seen):
        for nxt in graph[start]:
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                found = cycle_from(nxt, path + [nxt], seen)
                if found:
                    return found
        return None

    for name in graph:
        cycle = cycle_from(name, [name], {name})
        assert cycle is None, " -> ".join(cycle)


def test_every_module_imports_alone_in_a_fresh_process():
    def import_alone(name):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=300,
                                env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""})
        return name, result

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [(name, r.stderr.strip().splitlines()[-1:]) for name, r in pool.map(import_alone, project_modules())
                    if r.returncode != 0]
    assert failures == []


def test_models_imports_nothing_from_the_application():
    for name, tree in project_modules().items():
        if name.split(".")[0] != "models":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "idenprof" for a in node.names), name
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "idenprof", name
