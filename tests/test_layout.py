"""The layout is the architecture: imports point one way, between packages and layers.

Read from the source with ``ast`` (every import, including those inside functions and
under ``TYPE_CHECKING``): no module of ``permissions``, ``blocks`` or ``engine`` takes
part in an import cycle, the three packages depend in one direction, and inside
``engine`` each sub-package imports only the layers below it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("permissions", "blocks", "engine")
# engine's layers, lowest first; a module may import its own layer and those below
LAYERS = ("_model", "_store", "_runtime", "_http", "_cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """The modules of ours that ``path`` imports (a package import counts as its
    ``__init__``; ``from package import module`` counts as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_graph() -> nx.DiGraph:
    modules = {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for target in imports_of(path, name):
            if target in modules and target != name:
                graph.add_edge(name, target)
    return graph


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "engine" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def test_the_import_graph_is_read_from_the_real_modules() -> None:
    graph = import_graph()
    assert graph.has_edge("engine._runtime.engine", "engine._model.records")
    assert graph.has_edge("engine._store.sql", "engine._model.records")
    assert graph.has_edge("blocks._builtins", "blocks._contract")


def test_no_module_takes_part_in_an_import_cycle() -> None:
    graph = import_graph()
    # a package's __init__ re-exporting its modules is not a cycle with them
    edges = [(a, b) for a, b in graph.edges if not b.startswith(a + ".")]
    cycles = list(nx.simple_cycles(nx.DiGraph(edges)))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_packages_depend_one_way() -> None:
    order = {package: rank for rank, package in enumerate(PACKAGES)}
    reversed_arrows = [
        (a, b) for a, b in import_graph().edges if order[a.split(".")[0]] < order[b.split(".")[0]]
    ]
    assert reversed_arrows == []


def test_engine_layers_import_only_downwards() -> None:
    upward = [
        (a, b)
        for a, b in import_graph().edges
        if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)  # type: ignore[operator]
    ]
    assert upward == []


@pytest.mark.parametrize(
    "module",
    ["engine._model.records", "engine._store.sql", "engine._runtime.engine", "engine._cli.main"],
)
def test_a_module_of_each_layer_is_where_the_layers_say(module: str) -> None:
    assert module in import_graph()


def test_importing_engine_loads_neither_the_web_stack_nor_a_database_driver() -> None:
    code = (
        "import sys, engine\n"
        "print(sorted(m for m in ('uvicorn', 'starlette', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# Heavy modules a command loads only when it uses them: a graph library (``check``),
# jsonschema (a schema with more than the plain keywords), an HTTP client (the http
# block), the web stack, the database drivers, OpenTelemetry (an SDK configured by the
# application), metrics (``serve``) and the CLI's terminal views.
LAZY = (
    "networkx",
    "jsonschema",
    "referencing",
    "httpx",
    "uvicorn",
    "starlette",
    "psycopg",
    "psycopg_pool",
    "sqlite3",
    "opentelemetry",
    "prometheus_client",
)
VIEWS = ("rich.live", "rich.tree")
# structlog (and the rich console it loads whenever rich is installed) until an event is
# kept: a run at the CLI's default level (warning) logs nothing
LOGS = ("structlog", "rich")
# what only the other commands use: graphs (``graph``), the document schema (``schema``),
# the problems across a workspace's files (``validate``)
COMMANDS = ("engine._runtime.graph", "engine._model.schema", "engine._model.crosscheck")


def loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded once ``code`` ran."""
    check = f"\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}{check}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


def test_importing_engine_loads_no_heavy_module_it_does_not_use() -> None:
    assert loaded_after("import engine", LAZY + VIEWS + LOGS) == []


def test_a_cli_run_with_the_memory_store_loads_no_heavy_module_it_does_not_use() -> None:
    # examples/hello has an inputs schema of plain keywords, a router, CEL and templates
    code = (
        "from engine._cli import main\n"
        "assert main(['run', 'examples/hello', 'hello', '--store', 'memory:', '-q',"
        " '-i', 'name=Ada', '-i', 'lang=fr']) == 0"
    )
    assert loaded_after(code, LAZY + VIEWS + LOGS + COMMANDS) == []


def test_the_other_commands_load_what_a_run_leaves_out() -> None:
    code = (
        "from engine._cli import main\n"
        "assert main(['validate', 'examples/hello']) == 0\n"
        "assert main(['schema']) == 0\n"
        "assert main(['graph', 'examples/hello', 'hello', '--store', 'memory:']) == 0"
    )
    assert loaded_after(code, COMMANDS) == sorted(COMMANDS)


def test_the_lazy_modules_are_the_ones_the_commands_that_need_them_load() -> None:
    code = (
        "from engine._cli import main\n"
        "assert main(['check', 'examples/hello', 'hello']) == 0\n"
        "assert main(['runs', 'examples/hello', '--store', 'memory:']) == 0"
    )
    assert loaded_after(code, ("networkx", *VIEWS)) == ["networkx", *sorted(VIEWS)]


def test_the_http_names_stay_importable_from_engine() -> None:
    code = "from engine import create_app, TokenFileAuthenticator, add_token, Authenticator"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_modules_stay_small_except_the_interpreter() -> None:
    sizes = {
        module_name(path): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    large = {name: lines for name, lines in sizes.items() if lines > 430}  # "about 400"
    assert set(large) <= {"engine._runtime.interpreter"}, large
