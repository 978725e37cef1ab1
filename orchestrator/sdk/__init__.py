"""The worker SDK: the one way to add a worker type.

A worker type is a module in ``workers/`` that makes a ``WorkerType`` and registers plain
functions as its actions::

    echo = WorkerType("echo", display_name="Echo")

    @echo.action("say")
    def say(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
        ctx.progress(50, "halfway")
        return {"said": params["text"]}

``inputs`` maps each upstream stage id to its output as a Python value: the function never
sees object storage, handshake packets or Celery. What it returns is stored and referenced
by the next packet. Return a ``StageResult`` to fill the packet's summary or to stop the
downstream branch (``proceed=False`` becomes ``summary.continue = false``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.errors import ConfigError, ValidationFailed

if TYPE_CHECKING:
    from orchestrator.settings import Settings


class StageSink(Protocol):
    """Where a running stage's side effects go; the engine provides the real one."""

    def progress(self, ctx: StageContext, percent: float, message: str) -> None: ...

    def usage(self, ctx: StageContext, resource: str, quantity: float) -> None: ...

    def deliver(self, ctx: StageContext, name: str, data: bytes, content_type: str) -> str: ...

    def cooldown(self, ctx: StageContext, resource: str, seconds: float) -> None: ...

    def throttle(self, ctx: StageContext, resource: str, units: float) -> float: ...


@dataclass
class StageContext:
    """What a stage function knows about its run, and how it reports back."""

    execution_id: str
    stage_id: str
    worker_type: str
    action: str
    settings: Settings
    sink: StageSink
    attempt: int = 1

    def progress(self, percent: float, message: str = "") -> None:
        """Publish progress (0-100) for the SSE stream; cheap enough to call per item."""
        self.sink.progress(self, max(0.0, min(100.0, float(percent))), message)

    def usage(self, resource: str, quantity: float) -> None:
        """Report actual use of a resource (``openai_api`` tokens, ``email_quota`` sends)."""
        if quantity < 0:
            raise ValueError(f"usage of {resource!r} cannot be negative: {quantity}")
        self.sink.usage(self, resource, quantity)

    def deliver(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        """Store a deliverable of the run (a report) and return its storage key."""
        return self.sink.deliver(self, name, data, content_type)

    def cooldown(self, resource: str, seconds: float) -> None:
        """Put ``resource`` on hold for every process (a provider answered 429 Retry-After)."""
        self.sink.cooldown(self, resource, seconds)

    def throttle(self, resource: str, units: float = 1) -> float:
        """Wait until ``resource``'s per-minute rate, shared by every process, and any
        cooldown let ``units`` calls go; returns the seconds waited. Call it before each
        request to a metered API."""
        return self.sink.throttle(self, resource, units)


@dataclass
class StageResult:
    """A richer return value: the output plus the packet summary fields."""

    output: Any
    items_processed: int | None = None
    quality_score: float | None = None
    errors: list[str] = field(default_factory=list)
    proceed: bool = True


StageFunction = Callable[[StageContext, dict[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Action:
    """One registered stage function and what the engine needs to know about it."""

    worker_type: str
    name: str
    function: StageFunction
    version: str = "1"
    description: str = ""
    #: Safe to run twice with the same inputs (Celery ``acks_late`` redelivery relies on it).
    idempotent: bool = True
    #: Results may be served from the result cache when the template's policy allows.
    cacheable: bool = True


class WorkerType:
    """A named worker type: its own Celery queue, its own worker process, its actions."""

    def __init__(
        self,
        name: str,
        *,
        display_name: str = "",
        capabilities: list[str] | None = None,
        requirements: dict[str, Any] | None = None,
        internal: bool = False,
    ) -> None:
        if not name.isidentifier():
            raise ValidationFailed(f"worker type name {name!r} must be a Python identifier")
        self.name = name
        self.display_name = display_name or name.replace("_", " ").title()
        self.capabilities = capabilities or []
        self.requirements = requirements or {}
        #: Test and benchmark types: registered, but not deployed (no compose service).
        self.internal = internal
        self.actions: dict[str, Action] = {}
        REGISTRY.add(self)

    def action(
        self,
        name: str,
        *,
        version: str = "1",
        idempotent: bool = True,
        cacheable: bool = True,
    ) -> Callable[[StageFunction], StageFunction]:
        """Register ``function`` as ``<worker type>.<name>``."""

        def register(function: StageFunction) -> StageFunction:
            self.actions[name] = Action(
                worker_type=self.name,
                name=name,
                function=function,
                version=version,
                description=(function.__doc__ or "").strip().split("\n")[0],
                idempotent=idempotent,
                cacheable=cacheable,
            )
            return function

        return register

    def describe(self) -> dict[str, Any]:
        """The worker registry row's content."""
        return {
            "worker_name": self.name,
            "display_name": self.display_name,
            "capabilities": self.capabilities or sorted(self.actions),
            "resource_requirements": self.requirements,
            "actions": {
                a.name: {"version": a.version, "description": a.description}
                for a in self.actions.values()
            },
        }


class Registry:
    """Worker types known to this process, filled by importing worker modules."""

    def __init__(self) -> None:
        self._types: dict[str, WorkerType] = {}

    def add(self, worker_type: WorkerType) -> None:
        existing = self._types.get(worker_type.name)
        if existing is not None and existing is not worker_type:
            raise ValidationFailed(f"worker type {worker_type.name!r} is registered twice")
        self._types[worker_type.name] = worker_type

    def get(self, name: str) -> WorkerType:
        try:
            return self._types[name]
        except KeyError:
            raise ValidationFailed(f"unknown worker type {name!r}") from None

    def action(self, worker_type: str, action: str) -> Action:
        kind = self.get(worker_type)
        try:
            return kind.actions[action]
        except KeyError:
            raise ValidationFailed(
                f"worker type {worker_type!r} has no action {action!r}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Iterator[WorkerType]:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types


#: The process-wide registry; ``load_worker_modules`` fills it.
REGISTRY = Registry()


#: Submodules a worker package does not load unless named itself: worker types for tests
#: (``workers.testing``) never reach a production app or its queues.
NOT_LOADED_BY_PACKAGE = frozenset({"testing"})


def load_worker_modules(modules: tuple[str, ...]) -> Registry:
    """Import every worker module (a package imports its submodules, but ``testing``) and
    return the registry."""
    import importlib
    import pkgutil

    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if module_name != missing and not module_name.startswith(missing + "."):
                raise  # the module exists; something it imports is missing: its traceback
            raise ConfigError(
                "ORCH_WORKER_MODULES",
                f"no module named {module_name!r} (is its package installed, or its "
                "directory on PYTHONPATH?)",
            ) from error
        if hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__, module_name + "."):
                if info.name.rpartition(".")[2] not in NOT_LOADED_BY_PACKAGE:
                    importlib.import_module(info.name)
    return REGISTRY
