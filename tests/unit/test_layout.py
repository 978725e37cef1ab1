"""The architecture as tests: a pure core, nothing at import time, compose.yaml that runs."""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "orchestrator" / "core"
#: The pure core may not touch any of these: I/O lives in the adapters around it.
IO_LIBRARIES = {
    "redis",
    "sqlalchemy",
    "celery",
    "kombu",
    "minio",
    "flask",
    "flask_openapi3",
    "httpx",
    "psycopg",
    "urllib3",
    "requests",
    "socket",
    "subprocess",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module.startswith("orchestrator.") and not node.module.startswith(
                ("orchestrator.core", "orchestrator.errors", "orchestrator.constants")
            ):
                names.add(node.module)
    return names


def test_core_does_no_io() -> None:
    modules = sorted(CORE.glob("*.py"))
    assert modules, "orchestrator/core/ holds the pure core"
    for module in modules:
        imported = _imports(module)
        forbidden = (imported & IO_LIBRARIES) | {n for n in imported if "." in n}
        assert not forbidden, f"{module.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_importing_the_package_opens_nothing() -> None:
    code = (
        "import socket, threading\n"
        "opened = []\n"
        "real = socket.socket.connect\n"
        "socket.socket.connect = lambda self, *a: opened.append(a) or real(self, *a)\n"
        "before = threading.active_count()\n"
        "import orchestrator, orchestrator.celery_app, orchestrator.api, workers\n"
        "assert not opened, opened\n"
        "assert threading.active_count() == before\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_services_run_commands_the_project_has() -> None:
    from orchestrator.cli import main
    from orchestrator.sdk import load_worker_modules

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "minio", "api", "coordinator", "beat", "flower"} <= set(services)
    registry = load_worker_modules(("workers",))
    served: set[str] = set()
    for name, service in services.items():
        command = service.get("command")
        if "build" not in service:
            assert "image" in service and "healthcheck" in service, name
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        if argv[0] == "orchestrator":
            assert argv[1] in main.commands, f"{name}: no command {argv[1]!r}"
            if argv[1] == "worker":
                worker_type = argv[argv.index("--type") + 1]
                assert worker_type == "coordinator" or worker_type in registry, name
                served.add(worker_type)
        else:
            assert argv[:3] == ["celery", "-A", "orchestrator.celery_app"], name
    product_types = {w.name for w in registry if not w.internal}
    assert product_types <= served, f"worker types without a service: {product_types - served}"
    assert "coordinator" in served


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dependencies(path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports, deferred imports included (an import
    inside a function is still an edge); ``if TYPE_CHECKING:`` blocks are not."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            for name in names:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _import_graph() -> dict[str, set[str]]:
    paths = {_module(p): p for p in (ROOT / "orchestrator").rglob("*.py")}
    return {m: _dependencies(p, set(paths)) - {m} for m, p in paths.items()}


def test_no_import_cycle_among_orchestrator_modules() -> None:
    import graphlib

    try:
        graphlib.TopologicalSorter(_import_graph()).prepare()
    except graphlib.CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_the_engine_never_imports_the_api_or_the_cli() -> None:
    for module, deps in _import_graph().items():
        if module.startswith(("orchestrator.engine", "orchestrator.core", "orchestrator.storage")):
            outward = {d for d in deps if d.startswith(("orchestrator.api", "orchestrator.cli"))}
            assert not outward, f"{module} imports {outward}"


def test_no_module_at_the_top_serves_only_one_other() -> None:
    """A helper of one module lives beside it in its package, not at the top."""
    graph = _import_graph()
    users: dict[str, set[str]] = {m: set() for m in graph}
    for module, deps in graph.items():
        for dep in deps:
            users[dep].add(module)
    for path in (ROOT / "orchestrator").glob("*.py"):
        module = _module(path)
        if module in {"orchestrator", "orchestrator.celery_app"}:  # entry points
            continue
        assert len(users[module] - {"orchestrator"}) != 1, (module, users[module])


def test_a_production_app_knows_no_test_worker_types() -> None:
    """Without ``workers.testing`` named, its worker types get neither tasks nor queues."""
    code = (
        "from orchestrator.celery_app import create_celery_app\n"
        "from orchestrator.settings import Settings\n"
        "app = create_celery_app(Settings.from_env({}))\n"
        "queues = {q.name for q in app.conf.task_queues}\n"
        "assert not queues & {'echo', 'sum', 'fail', 'sleep', 'big'}, queues\n"
        "assert 'topic_researcher' in queues and 'coordinator' in queues, queues\n"
        "assert 'stage.echo' not in app.tasks and 'stage.topic_researcher' in app.tasks\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_dockerfile_copies_what_exists_and_runs_unprivileged_with_a_healthcheck() -> None:
    import fnmatch

    instructions = _dockerfile()
    ignored = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    copied = 0
    for instruction, args in instructions:
        if instruction in {"COPY", "ADD"}:
            *sources, _dest = (a for a in args.split() if not a.startswith("--"))
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the context"
                assert not any(fnmatch.fnmatch(source, p) for p in ignored), source
                copied += 1
    assert copied >= 5
    (base,) = [a for i, a in instructions if i == "FROM"]
    assert ":" in base and not base.endswith(":latest"), base
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    assert any(i == "HEALTHCHECK" for i, _ in instructions)
    assert {".git", ".venv", "var", "tests"} <= set(ignored)


def test_compose_pins_images_checks_beat_and_locks_flower() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        image = service.get("image", "")
        _, _, tag = image.rpartition(":")
        assert image and tag and "/" not in tag and tag != "latest", f"{name}: {image!r}"
    assert "healthcheck" in services["beat"]
    beat_check = services["beat"]["healthcheck"]["test"]
    assert beat_check[1:] == ["orchestrator", "beat", "--check"], beat_check
    flower = services["flower"]
    # Flower reads FLOWER_<OPTION> variables; compose refuses to start without a value.
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    from flower.options import options

    assert "basic-auth" in options._options  # what FLOWER_BASIC_AUTH sets
    assert "5555:5555" in flower["ports"][0]
