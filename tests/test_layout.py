"""The package's shape, engine-free: every module in a layer's subpackage, and the size limits that
keep each one readable (CONTRIBUTING.md): a module at most 300 lines, a class at most 150 lines of
methods (a settings model's field declarations do not count), a function at most 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"
LAYERS = {"processes", "http", "dialects", "rerank", "engine", "core"}
ENTRY_POINTS = {"__init__.py", "__main__.py", "cli.py"}


def modules() -> list[Path]:
    return sorted(SERVER.rglob("*.py"))


def test_each_module_is_an_entry_point_or_in_a_layer():
    top = {p.name for p in SERVER.glob("*.py")}
    assert top == ENTRY_POINTS
    packages = {p.name for p in SERVER.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages == LAYERS
    assert all((SERVER / layer / "__init__.py").is_file() for layer in LAYERS)


def test_no_module_class_or_function_over_its_size():
    too_big = []
    for path in modules():
        source = path.read_text()
        name = path.relative_to(SERVER.parent)
        if len(source.splitlines()) > 300:
            too_big.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    too_big.append(f"{name}: {node.name}() {lines} lines")
            elif isinstance(node, ast.ClassDef):
                methods = sum(
                    item.end_lineno - item.lineno + 1
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                )
                if methods > 150:
                    too_big.append(f"{name}: class {node.name} {methods} lines of methods")
    assert not too_big, too_big
