"""Where the embedded default keeps its files.

``COORDINATOR_DATA_DIR`` wins; otherwise the platform's per-user data directory
(``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux, ``~/Library/Application Support``
on macOS) plus ``agent-coordinator``. The local stack keeps Redis's append-only files,
the SQLite event sink and its state file there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "agent-coordinator"
#: File name of the SQLite sink inside a data directory.
SQLITE_SINK_FILE = "events.db"


def default_data_dir() -> Path:
    explicit = os.environ.get("COORDINATOR_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def default_sink_url(data_dir: Path | None = None) -> str:
    """The SQLite sink in ``data_dir`` (default: the default data directory)."""
    folder = (data_dir or default_data_dir()).resolve()
    return f"sqlite:///{folder / SQLITE_SINK_FILE}"
