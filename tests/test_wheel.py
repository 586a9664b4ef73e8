"""The built wheel ships the Lua scripts and works from a fresh virtualenv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent

ROUND_TRIP = """
import sys, coordinator
from coordinator import Coordinator, ConflictError
assert "site-packages" in coordinator.__file__, coordinator.__file__
c = Coordinator.from_url(sys.argv[1], namespace="wheel")
s = c.start_session("agent-1")
assert c.set_current_project("agent-1", "p", s.session_id, expected_version=0).version == 1
try:
    c.set_current_project("agent-1", "q", s.session_id, expected_version=0)
except ConflictError as exc:
    assert exc.current.version == 1
else:
    raise SystemExit("no conflict")
print("ok", len(c.get_agent_events("agent-1")))
"""


@dataclass(frozen=True)
class Installed:
    """The built wheel installed into a fresh virtualenv."""

    wheel: Path
    env_dir: Path

    @property
    def python(self) -> Path:
        return self.env_dir / "bin" / "python"

    @property
    def console(self) -> Path:
        return self.env_dir / "bin" / "coordinator"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel once and install it into a fresh virtualenv (shared by the
    tests of this module)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = list((tmp_path / "dist").glob("*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    return Installed(wheel, env_dir)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """No COORDINATOR_* configuration and a data directory of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    env.pop("VIRTUAL_ENV", None)
    return {**env, "COORDINATOR_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_round_trips(installed: Installed, tmp_path: Path) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
    for script in (ROOT / "lua").glob("*.lua"):
        assert f"coordinator/lua/{script.name}" in names
    assert "coordinator/py.typed" in names

    with EmbeddedRedis(tmp_path / "redis", port=0) as server:
        result = subprocess.run(
            [str(installed.python), "-c", ROUND_TRIP, server.url],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # not the checkout: the import must come from the wheel
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 3"
    console = subprocess.run(
        [str(installed.console), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert console.returncode == 0
    assert "coordinator" in console.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_runs_from_a_fresh_virtualenv_without_redis(
    installed: Installed, tmp_path: Path
) -> None:
    pytest.importorskip("coordinator.worker", reason="needs the event worker")
    result = subprocess.run(
        [str(installed.console), "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "ok: every emitted event was persisted exactly once" in result.stdout
    assert "MISMATCH" not in result.stdout
    assert "local stack up: valkey 9." in result.stdout  # the core install's server
    assert not (tmp_path / "data").exists()  # a throwaway stack, not the user's
    # Redis 6.2 is an extra: without it, choosing it is a usage error naming the fix.
    refused = subprocess.run(
        [str(installed.console), "demo", "--server-binary", "redis"],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "agent-coordinator[redis6]" in refused.stderr
