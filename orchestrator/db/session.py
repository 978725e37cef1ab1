"""Engine and session factory, built from settings (never at import time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import DependencyUnavailable
from orchestrator.settings import Settings


class Database:
    """One engine per process; ``session()`` is a unit of work that commits or rolls back."""

    def __init__(self, settings: Settings, *, connect_timeout_s: int | None = None) -> None:
        url = settings.database_url
        kwargs: dict[str, object] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {
                "timeout": connect_timeout_s or 30,
                "check_same_thread": False,
            }
        else:
            kwargs.update(pool_size=5, max_overflow=10)
            if connect_timeout_s is not None:
                kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def load_driver(url: str) -> None:
        """Import the driver ``url`` needs (SQLAlchemy's dialect and its DBAPI module)."""
        make_url(url).get_dialect().import_dbapi()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Raise ``DependencyUnavailable`` unless the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise DependencyUnavailable(
                f"ORCH_DATABASE_URL: database unreachable: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0]}",
                details={"variable": "ORCH_DATABASE_URL"},
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read while workers write; with WAL, synchronous=NORMAL survives a
    # process crash and skips an fsync per commit. Foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
