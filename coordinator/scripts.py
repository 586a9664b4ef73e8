"""The Lua script registry: one ``.lua`` file per operation, loaded by file name.

The scripts live in the repository's top-level ``lua/`` folder and are shipped
inside the wheel as ``coordinator/lua/``. ``lib.lua`` holds helpers shared by the
operations and is prepended to each of them, so every registered script is one
self-contained source whose SHA-1 is computed locally by redis-py.
"""

from __future__ import annotations

from functools import cache
from hashlib import sha1
from importlib import resources
from pathlib import Path
from typing import Final

#: Operation scripts, by name (file ``lua/<name>.lua``).
SCRIPT_NAMES: Final = (
    "init_namespace",
    "start_session",
    "heartbeat",
    "end_session",
    "revoke_session",
    "set_project",
    "reap_expired",
    "log_event",
    "import_project",
    "dead_letter",
    "read_leases",
    "read_records",
    "reserve",
    "release_reservations",
    "renew_reservation",
    "upgrade_fence",
)
_LIBRARY: Final = "lib"


def lua_dir() -> Path:
    """Where the scripts are: inside the installed package, else the source checkout."""
    packaged = resources.files("coordinator") / "lua"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "lua"
    if source.is_dir():
        return source
    raise FileNotFoundError("the coordinator's Lua scripts are missing from this installation")


@cache
def sources() -> dict[str, str]:
    """Every operation's full source (library prepended), by name."""
    folder = lua_dir()
    library = (folder / f"{_LIBRARY}.lua").read_text(encoding="utf-8")
    return {
        name: f"{library}\n{(folder / f'{name}.lua').read_text(encoding='utf-8')}"
        for name in SCRIPT_NAMES
    }


@cache
def digest(name: str) -> str:
    """The SHA-1 ``EVALSHA`` runs the script by (what redis-py's ``register_script``
    computes): for a plan that pipelines a script as a plain command."""
    return sha1(sources()[name].encode("utf-8")).hexdigest()
