"""The Spark line (../shared/DESIGN.md "Layout"), checked on the source itself.

import-linter (`make lint`, `.importlinter`) checks the layers and cycles over the import
graph; these tests check what a graph cannot say: where in a module an import sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UDFS = sorted((ROOT / "curator_udfs").glob("*.py"))
JOBS = sorted((ROOT / "spark_jobs").glob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    out: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node, node.module))
    return out


def _without_functions(tree: ast.Module) -> ast.Module:
    """The module with every function body removed: what runs when it is imported."""

    class Strip(ast.NodeTransformer):
        def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
            node.body = [ast.Pass()]
            return node

        visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    return Strip().visit(tree)


def _is_main_block(node: ast.stmt) -> bool:
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


@pytest.mark.parametrize("path", UDFS, ids=lambda p: p.name)
def test_curator_udfs_never_imports_spark_jobs_nor_pyspark_at_module_level(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node, name in _imports(tree):
        top = name.partition(".")[0]
        assert top != "spark_jobs", f"{path.name}:{node.lineno} imports {name}"
    for node, name in _imports(_without_functions(tree)):  # lazy imports in functions are fine
        assert name.partition(".")[0] != "pyspark", f"{path.name}:{node.lineno} imports {name}"


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_only_a_main_block_imports_the_command_table(path: Path) -> None:
    """Jobs never import the CLI; `spark-submit spark_jobs/<job>.py` enters it from __main__."""
    if path.name == "cli.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = {
        id(n) for block in tree.body if _is_main_block(block) for n in ast.walk(block)
    }
    for node, name in _imports(tree):
        if name in ("spark_jobs.cli", "spark_jobs.cli_runner"):
            assert id(node) in allowed, f"{path.name}:{node.lineno} imports {name}"
    mains = [b for b in tree.body if _is_main_block(b)]
    lines = path.read_text(encoding="utf-8").splitlines()
    for block in mains:
        body = [ln for ln in lines[block.lineno - 1 : block.end_lineno] if ln.strip()]
        assert len(body) <= 3, f"{path.name}: the __main__ block is three lines, not {body}"


@pytest.mark.parametrize("path", UDFS + JOBS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_modules_stay_under_500_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 500, f"{path} has {lines} lines: split it by idea"
