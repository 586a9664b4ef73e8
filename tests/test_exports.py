"""The public surface: everything public is exported, sorted, and exists."""

from __future__ import annotations

import coordinator
from coordinator import errors, models, stats


def test_all_is_sorted_and_resolves() -> None:
    names = [n for n in coordinator.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in coordinator.__all__:
        assert hasattr(coordinator, name), name


def test_every_public_error_and_model_is_exported() -> None:
    for module in (errors, models, stats):
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if isinstance(value, type):
                assert name in coordinator.__all__, f"{module.__name__}.{name} is not exported"


def test_error_hierarchy() -> None:
    for name in coordinator.__all__:
        value = getattr(coordinator, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, coordinator.CoordinatorError), name
    assert issubclass(coordinator.InvalidInputError, ValueError)


def test_sync_and_async_clients_have_the_same_api() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        import inspect

        return {
            name: list(inspect.signature(getattr(cls, name)).parameters)
            for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))
        }

    sync, asyn = public(coordinator.Coordinator), public(coordinator.AsyncCoordinator)
    sync_names = {n.replace("close", "aclose") for n in sync}
    assert sync_names == set(asyn)
    for name, params in sync.items():
        assert asyn[name.replace("close", "aclose")] == params, name


def test_documented_import_paths_keep_working() -> None:
    import importlib

    for path in (
        "coordinator.compat.AgentContextManager",
        "coordinator.compat.ConflictError",
        "coordinator.compat.SessionLeaseExpired",
        "coordinator.EmbeddedRedis",
        "coordinator.EmbeddedCluster",
        "coordinator.EmbeddedSentinel",
        "coordinator.worker.EventWorker",
        "coordinator.worker.WorkerOptions",
        "coordinator.worker.run_worker",
        "coordinator.verify.run_verify",
        "coordinator.verify.VerifyOptions",
        "coordinator.migrate.migrate",
        "coordinator.sinks.sink_from_url",
        "coordinator.cli.main",
    ):
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path
    assert issubclass(coordinator.compat.ConflictError, coordinator.ConflictError)


def test_import_coordinator_stays_light() -> None:
    # A fresh interpreter: the embedded-server tooling, the daemon and the CLI load
    # only when asked for.
    import subprocess
    import sys

    code = (
        "import sys, coordinator\n"
        "heavy = [m for m in sys.modules if m.partition('.')[0] == 'click' or "
        "m.split('.')[:2] in (['coordinator', p] for p in ('local', 'worker', 'cli', 'verify'))]\n"
        "assert not heavy, heavy\n"
        "coordinator.EmbeddedRedis\n"
        "assert 'coordinator.local.embedded' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
