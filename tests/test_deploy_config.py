"""deploy/redis.conf loads into real redis-server 6.2 and 7, with deploy/users.acl, and the
coordinator works on the result."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator import Coordinator, EmbeddedRedis
from coordinator.processes import free_port
from tests.helpers import AclRedis, acl_file_for, acl_with_passwords, password

CONF = Path(__file__).resolve().parent.parent / "deploy" / "redis.conf"
#: Directives the test replaces (paths and ports of the throwaway server).
OVERRIDDEN = {"dir", "port", "bind", "aclfile", "logfile", "pidfile", "daemonize"}


def directives() -> dict[str, list[str]]:
    """Active directives of deploy/redis.conf; repeated ones (save) are joined."""
    found: dict[str, list[str]] = {}
    for line in CONF.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, *args = line.split()
            found.setdefault(name, []).extend(a.strip('"') for a in args)
    return found


class ConfRedis(AclRedis):
    """redis-server started from deploy/redis.conf, with paths and port replaced."""

    def __init__(self, data_dir: Path, conf: Path, aclfile: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, port=free_port(), unix_socket=False, **kwargs)
        self.conf, self.aclfile = conf, aclfile

    def command_line(self) -> list[str]:
        return [
            str(self.binary), str(self.conf),
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--aclfile", str(self.aclfile),
        ]  # fmt: skip


@pytest.fixture
def conf_server(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[ConfRedis]:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl_with_passwords(acl_file_for(redis_server.binary).read_text()))
    server = ConfRedis(tmp_path / "data", CONF, aclfile, binary=redis_server.binary)
    with server:
        yield server


def _bytes(value: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
    for suffix, factor in units.items():
        if value.lower().endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value)


def test_redis_conf_loads_and_takes_effect(conf_server: ConfRedis) -> None:
    wanted = directives()
    assert not OVERRIDDEN & (set(wanted) - {"dir", "port", "bind", "aclfile"})
    with contextlib.closing(conf_server.client(decode_responses=True)) as ops:
        config = ops.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "always"
        assert config["maxmemory-policy"] == "noeviction"
        assert int(config["maxmemory"]) == _bytes(wanted["maxmemory"][0])
        assert config["save"].split() == wanted["save"]
        # Every other directive of the file is in effect as written.
        for name, args in wanted.items():
            if name in OVERRIDDEN or name in {"maxmemory", "save"} or name not in config:
                continue
            value = " ".join(args)
            if name.endswith("size"):
                assert int(config[name]) == _bytes(value), name
            else:
                assert config[name] in (value, value.replace("-::1", "").strip()), name
        # The users from the aclfile are in place, the default user is off.
        assert "off" in ops.acl_getuser("default")["flags"]
        assert {"coordinator-server", "coordinator-worker", "coordinator-admin"} <= set(
            ops.acl_users()
        )


def test_the_coordinator_runs_on_the_deployed_config(conf_server: ConfRedis) -> None:
    url = (
        f"redis://coordinator-server:{password('coordinator-server')}"
        f"@127.0.0.1:{conf_server.port}/0"
    )
    with Coordinator.from_url(url, namespace="coord") as c:
        s = c.start_session("agent-1")
        assert c.set_current_project("agent-1", "p", s.session_id).version == 1
        c.set_current_project("agent-1", "q", s.session_id)
    # Nothing acknowledged is lost when redis-server is killed: the append-only file
    # is replayed. (On Redis 7 the replay runs the scripts' MULTI/EXEC blocks as the
    # default user: with the default user stripped of its permissions they were
    # silently dropped, redis/redis#14541. users.acl keeps it off but unrestricted.)
    conf_server.kill()
    conf_server.start()
    with Coordinator.from_url(url, namespace="coord") as c:
        assert c.get_current_project("agent-1").version == 2
        assert len(c.get_agent_events("agent-1")) == 3
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=conf_server.port or 0).ping()
