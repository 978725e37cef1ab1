"""``ORCH_WORKER_MODULES``: a module that is not there is a config error; one that is there
but misses a dependency keeps its own traceback (the error is in that module, not the setting)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.sdk import load_worker_modules


def test_a_missing_module_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_worker_modules(("no_such_workers.sub",))
    assert caught.value.variable == "ORCH_WORKER_MODULES"
    assert "no module named 'no_such_workers.sub'" in str(caught.value)


def test_a_missing_dependency_of_a_module_keeps_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_a_dependency.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError) as caught:
            load_worker_modules(("needs_a_dependency",))
        assert caught.value.name == "no_such_dependency_xyz"
    finally:
        sys.modules.pop("needs_a_dependency", None)
