"""The import rules docs/architecture.md states, read from the source of every module
(imports at the top, in functions and under TYPE_CHECKING alike)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "apimart_cli"
DISPLAY = {"apimart_cli.console", "apimart_cli.progress", "apimart_cli.tables"}
# What only a use-case (app.py) or the library below it may call.
ORCHESTRATION = {
    "Client",
    "Engine",
    "Downloader",
    "ReferenceSender",
    "submit",
    "wait_for_tasks",
    "query_tasks",
    "upload_files",
    "model_info",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_adapter(name: str) -> bool:
    """The command line and the MCP server: they parse, call `app`, render."""
    return name.startswith("apimart_cli.commands") or name in (
        "apimart_cli.cli",
        "apimart_cli.__main__",
        "apimart_cli.mcp_server",
    )


@cache
def imports(name: str) -> list[tuple[str, str | None]]:
    """(module, name imported from it or None) for every import in the module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (base, alias.name))
    return found


def package_imports(name: str) -> set[str]:
    return {module for module, _ in imports(name) if module in MODULES and module != name}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_display_knows_rich_and_only_the_client_knows_httpx(name: str) -> None:
    roots = {module.split(".")[0] for module, _ in imports(name)}
    if name not in DISPLAY:
        assert "rich" not in roots
    if name != "apimart_cli.client":
        assert "httpx" not in roots


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if not is_adapter(n) and n not in DISPLAY)
)
def test_no_library_module_uses_the_display(name: str) -> None:
    """Not even for the secrets: they have a module of their own (secrets.py)."""
    display = package_imports(name) & DISPLAY
    assert not display, f"{name} imports {display}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if is_adapter(n)))
def test_commands_and_the_mcp_server_hold_no_orchestration(name: str) -> None:
    called = {imported for _, imported in imports(name) if imported in ORCHESTRATION}
    assert not called, f"{name} imports {called}: call a use-case in app.py instead"


def test_the_import_graph_has_no_circle() -> None:
    graph = {name: package_imports(name) for name in MODULES}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circle = [*path[path.index(name) :], name]
            raise AssertionError("an import circle: " + " -> ".join(circle))
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
