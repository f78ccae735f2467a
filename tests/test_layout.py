"""The package layout docs/architecture.md describes, checked on the source (ast).

Which package may import which, and no import cycles: a cycle makes import order
matter and hides which module owns what. Imports are read from the source, so a
lazy import inside a function counts as much as one at the top; imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pfcompose"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(module: str, name: str | None) -> str:
    """``from module import name``: the submodule if ``name`` is one, else ``module``."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING", "typing.TYPE_CHECKING"
        ):
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str) -> Iterator[str]:
    """Every pfcompose module ``name`` imports when it runs, anywhere in its source."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    here = name if _is_package(name) else name.rpartition(".")[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield _resolve(base, alias.name)


GRAPH = {
    name: {dep for dep in imports_of(name) if dep in MODULES and dep != name} for name in MODULES
}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(GRAPH):
        if start in index:
            continue
        work = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(GRAPH[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_checker_sees_imports() -> None:
    """Guard against a checker that finds nothing and so passes anything."""
    assert "pfcompose.config.listen" in GRAPH["pfcompose.up.listeners"]
    assert "pfcompose.kube.access" in GRAPH["pfcompose.kube.kubeconfig"]
    assert "pfcompose.wire.errors" in GRAPH["pfcompose.wire.proxy"]  # a relative import
    assert "pfcompose.sandbox.rbac" in GRAPH["pfcompose.sandbox.apiserver"]


KNOWN: list[list[str]] = []


def test_no_import_cycles() -> None:
    assert [cycle for cycle in _cycles() if cycle not in KNOWN] == []


def test_the_checker_finds_cycles() -> None:
    """The cycles this layout removed, put back into a copy of the graph, are found."""
    saved = {name: set(deps) for name, deps in GRAPH.items()}
    try:
        GRAPH["pfcompose.kube.access"].add("pfcompose.kube.kubeconfig")
        GRAPH["pfcompose.sandbox.apiserver"].add("pfcompose.sandbox")
        GRAPH["pfcompose.sandbox"].add("pfcompose.sandbox.server")
        found = _cycles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
    assert ["pfcompose.kube.access", "pfcompose.kube.kubeconfig"] in found
    assert any("pfcompose.sandbox" in cycle and "pfcompose.sandbox.apiserver" in cycle
               for cycle in found)  # fmt: skip


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # the file format and the plan: read by everyone, imports no runtime
        ("pfcompose.config", ("pfcompose.up", "pfcompose.daemon", "pfcompose.wire",
                              "pfcompose.kube", "pfcompose.sandbox", "pfcompose.commands")),
        # the protocols know nothing of Kubernetes objects, config or the runtime
        ("pfcompose.wire", ("pfcompose.config", "pfcompose.kube", "pfcompose.up",
                            "pfcompose.daemon", "pfcompose.sandbox", "pfcompose.commands")),
        ("pfcompose.kube", ("pfcompose.up", "pfcompose.daemon", "pfcompose.sandbox",
                            "pfcompose.commands")),
        ("pfcompose.up", ("pfcompose.sandbox", "pfcompose.commands")),
        ("pfcompose.daemon", ("pfcompose.sandbox", "pfcompose.commands")),
        ("pfcompose.platform", ("pfcompose.config", "pfcompose.kube", "pfcompose.wire",
                                "pfcompose.up", "pfcompose.daemon", "pfcompose.sandbox")),
        ("pfcompose._util", ("pfcompose.",)),
    ],
)  # fmt: skip
def test_package_imports(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if _in(name, package)
        for dep in deps
        if any(_in(dep, f.rstrip(".")) if not f.endswith(".") else dep.startswith(f)
               for f in forbidden) and not _in(dep, package)
    )  # fmt: skip
    assert wrong == []


def test_nothing_outside_the_sandbox_imports_it() -> None:
    """The client never imports the sandbox; only the command line (``pfcompose
    sandbox``, ``up --sandbox``) and the pytest plugin's re-exports do."""
    allowed = {"pfcompose.testing", "pfcompose.testing_kubectl"}
    wrong = sorted(
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if not _in(name, "pfcompose.sandbox") and not _in(name, "pfcompose.commands")
        and name not in allowed
        for dep in deps
        if _in(dep, "pfcompose.sandbox")
    )
    assert wrong == []


def test_up_shares_only_three_daemon_modules() -> None:
    """The foreground runtime uses the daemon's ``ps`` record, event log file and control
    socket (for ``top``); nothing else of ``daemon/`` (the daemon imports ``up/``)."""
    shared = {"pfcompose.daemon.status", "pfcompose.daemon.eventlog", "pfcompose.daemon.control"}
    wrong = sorted(
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if _in(name, "pfcompose.up")
        for dep in deps
        if _in(dep, "pfcompose.daemon") and dep not in shared
    )
    assert wrong == []
    assert "pfcompose.daemon.server" in {
        dep for name, deps in GRAPH.items() if _in(name, "pfcompose.commands") for dep in deps
    }


def test_the_user_facing_names_survive_the_moves() -> None:
    """``pytest_plugins = ["pfcompose.testing"]`` still gets the plugin's fixtures."""
    import pfcompose.sandbox.pytest_plugin as plugin
    import pfcompose.sandbox.testing_kubectl as fetch
    import pfcompose.testing as testing
    import pfcompose.testing_kubectl as testing_kubectl

    assert set(plugin.__all__) <= set(dir(testing))
    assert testing.sandbox is plugin.sandbox and testing.sandbox_state is plugin.sandbox_state
    assert testing_kubectl.fetch_kubectl is fetch.fetch_kubectl
