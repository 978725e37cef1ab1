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
