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
