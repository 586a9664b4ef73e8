"""The built wheel ships the Lua scripts and works from a fresh virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
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


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_installs_and_round_trips(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = list((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for script in (ROOT / "lua").glob("*.lua"):
        assert f"coordinator/lua/{script.name}" in names
    assert "coordinator/py.typed" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    with EmbeddedRedis(tmp_path / "redis", port=0) as server:
        result = subprocess.run(
            [str(python), "-c", ROUND_TRIP, server.url],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # not the checkout: the import must come from the wheel
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 3"
    console = subprocess.run(
        [str(env_dir / "bin" / "coordinator"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert console.returncode == 0
    assert "coordinator" in console.stdout
