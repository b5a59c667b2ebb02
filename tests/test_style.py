"""Style rules that a reader of the code relies on, checked on every run.

No function longer than 60 lines in the driver, the worker and the store (issue 24): each
reads on one screen, and a longer one is several steps that want names.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smartbkg_prod"
MAX_FUNCTION_LINES = 60
CHECKED = ("submit.py", "lifecycle.py", "worker.py", "store/*.py")


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function or method in ``source`` longer than
    ``limit`` lines, from its ``def`` line to its last line (decorators not counted).

    >>> long_functions("def short():\\n    return 1\\n", limit=1)
    [('short', 2)]
    """
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and lines > limit:
                    found.append((name, lines))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def checked_modules() -> list[Path]:
    return sorted(path for pattern in CHECKED for path in PACKAGE.glob(pattern))


def test_the_check_finds_a_long_method_and_a_long_nested_function():
    body = "\n".join(f"        x{i} = {i}" for i in range(60))
    source = f"class Runner:\n    def drive(self):\n{body}\n\n    def poll(self):\n        pass\n"
    assert long_functions(source) == [("Runner.drive", 61)]
    nested = f"def outer():\n    def inner():\n{body}\n    return inner\n"
    assert long_functions(nested) == [("outer", 63), ("outer.inner", 61)]


def test_no_function_in_the_driver_the_worker_or_the_store_is_longer_than_60_lines():
    modules = checked_modules()
    assert {PACKAGE / "submit.py", PACKAGE / "worker.py", PACKAGE / "store" / "__init__.py"} <= set(
        modules
    )
    too_long = [
        f"{path.relative_to(PACKAGE.parent)}: {name} is {lines} lines"
        for path in modules
        for name, lines in long_functions(path.read_text())
    ]
    assert not too_long, "split these (at most 60 lines each):\n" + "\n".join(too_long)
