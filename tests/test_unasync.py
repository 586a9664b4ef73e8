"""coordinator/client.py is generated from coordinator/aio.py and must be fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sync_client_is_generated_from_the_async_one() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_generated_client_has_no_async_left() -> None:
    text = (ROOT / "coordinator" / "client.py").read_text()
    for token in ("async ", "await ", "asyncio", "AsyncCoordinator"):
        assert token not in text, token
