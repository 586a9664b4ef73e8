"""The package's floors (README "Architecture"): imports only go downward.

Walks every module's imports with ``ast`` (including imports inside functions and
under ``TYPE_CHECKING``) and fails when a floor imports a floor above it, when anything
but the command line itself imports ``coordinator.cli``, when a module outside the two
client shells touches a client's private ``_core`` / ``_run``, or when a module grows
past 800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coordinator"

#: Lowest first. A module belongs to the first floor whose prefix matches its name.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "pure",
        (
            "coordinator.constants", "coordinator.errors", "coordinator.models",
            "coordinator.validation", "coordinator.timestamps", "coordinator.keys",
            "coordinator.scripts", "coordinator.events", "coordinator.calls",
            "coordinator.failures", "coordinator.core", "coordinator.stats",
            "coordinator.gc_tuning", "coordinator.liveness", "coordinator.server",
            "coordinator.health", "coordinator.shapes",
            "coordinator.reservations",
            "coordinator.listing",
        ),
    ),
    (
        "library I/O",
        (
            "coordinator.settings", "coordinator.connection", "coordinator.paths",
            "coordinator.processes", "coordinator.pipelining", "coordinator.aio",
            "coordinator.client", "coordinator.sinks", "coordinator.keepalive",
            "coordinator.loops", "coordinator.ahead",
        ),
    ),
    ("daemon", ("coordinator.worker",)),
    ("local tooling", ("coordinator.local",)),
    (
        "adapters and tools",
        (
            "coordinator.compat", "coordinator.migrate", "coordinator.verify", "coordinator.mcp",
            "coordinator.web",
            "coordinator.upgrade",
        ),
    ),
    ("command line", ("coordinator.cli", "coordinator.__main__")),
)  # fmt: skip
#: The package facade re-exports from every floor below the command line.
FACADE = "coordinator"
#: Standard or third-party modules the pure floor must not import: it does no I/O.
IO_MODULES = (
    "socket", "subprocess", "asyncio", "sqlite3", "psycopg", "ssl", "multiprocessing",
    "redis.client", "redis.asyncio", "redis.cluster", "redis.connection",
)  # fmt: skip
MAX_LINES = 800
SHELLS = {"coordinator.aio", "coordinator.client"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(name: str) -> int:
    for index, (_, prefixes) in enumerate(FLOORS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{name} belongs to no floor: add it to FLOORS")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package.pop()
                base = ".".join([*package[: len(package) - node.level + 1], base]).rstrip(".")
            found.append((node.lineno, base))
            # ``from coordinator import errors`` imports the module coordinator.errors.
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
    return found


def internal(target: str) -> str | None:
    """The package module an import names (None for the facade or a non-module name)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target if target and target != FACADE else None


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != FACADE))
def test_imports_only_go_downward(name: str) -> None:
    floor = floor_of(name)
    for line, target in imports(MODULES[name]):
        module = internal(target)
        if module is None:
            continue
        assert floor_of(module) <= floor, (
            f"{name}:{line} ({FLOORS[floor][0]}) imports {module} "
            f"({FLOORS[floor_of(module)][0]}), a floor above it"
        )


def test_nothing_imports_the_command_line() -> None:
    for name, path in MODULES.items():
        if name != FACADE and floor_of(name) == len(FLOORS) - 1:
            continue
        for line, target in imports(path):
            cli = target == "coordinator.cli" or target.startswith("coordinator.cli.")
            assert not cli, f"{name}:{line} imports {target}"


@pytest.mark.parametrize("name", [n for n in MODULES if n != FACADE and floor_of(n) == 0])
def test_the_pure_floor_does_no_io(name: str) -> None:
    for line, target in imports(MODULES[name]):
        bad = [m for m in IO_MODULES if target == m or target.startswith(m + ".")]
        assert not bad, f"{name}:{line} imports {target}: the pure floor does no I/O"


def test_only_the_shells_touch_a_clients_private_parts() -> None:
    for name, path in MODULES.items():
        if name in SHELLS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            own = isinstance(node.value, ast.Name) and node.value.id == "self"
            if node.attr == "_core" or (node.attr == "_run" and not own):
                pytest.fail(f"{name}:{node.lineno} uses .{node.attr}; use the public seam")


def test_no_module_is_too_long() -> None:
    for name, path in MODULES.items():
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{name} has {lines} lines; split it before {MAX_LINES}"


def test_the_stats_plan_is_made_of_smaller_plans() -> None:
    tree = ast.parse(MODULES["coordinator.stats"].read_text())
    plan = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "stats_plan")
    steps = [n for n in ast.walk(plan) if isinstance(n, ast.YieldFrom)]
    assert len(steps) >= 5
    assert not [n for n in ast.walk(plan) if isinstance(n, ast.Yield)], "yields its own calls"


def test_the_layering_check_sees_a_wrong_import(tmp_path: Path) -> None:
    # The walker must catch an upward import, also one inside a function.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from coordinator.cli.output import emit_json\n")
    assert (2, "coordinator.cli.output") in imports(bad)
    assert floor_of(internal("coordinator.cli.output.emit_json") or "") > floor_of(
        "coordinator.core"
    )
