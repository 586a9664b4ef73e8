"""Lua scripts: cluster-safety rules, headers, one hash slot per call, NOSCRIPT recovery."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from coordinator.core import Batch, Command, CoordinatorCore, Script
from coordinator.scripts import SCRIPT_NAMES, lua_dir, sources
from coordinator.settings import Settings

LUA_FILES = sorted(lua_dir().glob("*.lua"))


def test_every_operation_has_its_own_file() -> None:
    names = {p.stem for p in LUA_FILES}
    assert names == {*SCRIPT_NAMES, "lib"}


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: p.name)
def test_scripts_never_scan_or_list_keys(path: Any) -> None:
    text = path.read_text()
    code = "\n".join(line.split("--")[0] for line in text.splitlines())
    for forbidden in ("'KEYS'", '"KEYS"', "'SCAN'", '"SCAN"', "'FLUSH", "'EVAL"):
        assert forbidden not in code.upper(), forbidden
    # Every key a script touches comes from KEYS (or a helper argument fed from KEYS):
    # no redis.call whose first key argument is built by concatenation.
    for call in re.findall(r"redis\.call\(([^)]*)\)", code):
        args = call.split(",")
        if len(args) > 1:
            assert ".." not in args[1], f"key built inside Lua: {call}"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_operation_scripts_have_a_header(name: str) -> None:
    text = (lua_dir() / f"{name}.lua").read_text()
    header = text.split("\nlocal ", 1)[0]
    assert header.startswith(f"-- {name}:")
    assert "KEYS[1]" in header
    assert "Returns" in header
    # Named locals are bound from KEYS right after the header (a script reading a
    # list of keys binds the list).
    assert re.search(r"^local [a-z_, ]+ = KEYS(\[1\])?\b", text, re.M)


def _calls_of_every_operation(core: CoordinatorCore) -> list[Script | Command]:
    sid = "3-0123456789abcdef@agent-1"
    calls: list[Any] = [
        core.init_namespace().call,
        core.start_session("agent-1", None, None, False).call,
        core.heartbeat(sid, None).call,
        core.end_session("agent-1", sid).call,
        core.revoke_session("agent-1", "r").call,
        core.set_project("agent-1", "p", sid, None, None).call,
        core.set_project("agent-1", "p", sid, 1, "req").call,
        core.get_project("agent-1").call,
        core.dead_letter(3, "coordinator", "1-0", "w1", "bad", {"x": "y"}).call,
    ]
    plan = core.cleanup_expired()
    plan.send(None)
    plan.send((1, 0))
    # The index of shard 0 only ever holds agents of shard 0; its earliest deadline
    # (500 ms) is past at the server time (1 s): only shard 0 is read further.
    zero = [a for a in (f"agent-{i}" for i in range(50)) if core.keys.shard_of(a) == 0][:3]
    assert len(zero) == 3
    earliest = [[(zero[0], 500.0)]] + [[] for _ in range(core.keys.shards - 1)]
    assert len(plan.send(earliest).commands) == 1  # type: ignore[union-attr]
    calls.append(plan.send([zero]))
    listing = core.leases(None)
    first = listing.send(None)  # each round trip is started ahead, then collected
    assert len(first.call.commands) == core.keys.shards  # type: ignore[union-attr]
    listing.send("round trip")
    # Shard 0's index holds three agents, the others none: one page of shard 0 is read.
    scans = [(0, [(a, 1.0) for a in zero])] + [(0, [])] * (core.keys.shards - 1)
    (read,) = listing.send(scans).call.commands  # type: ignore[union-attr]
    calls.append(read)
    (records,) = core.projects(zero).send(None).commands  # type: ignore[union-attr]
    calls.append(records)
    return calls


@pytest.mark.parametrize("namespace", ["coord", "other.ns"])
def test_every_call_touches_one_hash_slot(namespace: str) -> None:
    core = CoordinatorCore(Settings(namespace=namespace, shards=4))
    for call in _calls_of_every_operation(core):
        if isinstance(call, Script):
            keys = list(call.keys)
        elif isinstance(call, Batch):
            continue
        elif call.method == "evalsha":  # a script pipelined as a command
            keys = list(call.args[2 : 2 + call.args[1]])
            assert len(keys) == 3
        else:
            keys = [call.args[0]]
        slots = {key_slot(k.encode()) for k in keys}
        assert len(slots) == 1, (call, keys)


def test_shards_spread_over_distinct_slots() -> None:
    core = CoordinatorCore(Settings(shards=16))
    slots = {key_slot(core.keys.stream(i).encode()) for i in range(16)}
    assert len(slots) == 16


@pytest.mark.cluster
def test_noscript_recovery_after_script_flush(client: Any, raw: redis.Redis) -> None:
    s = client.start_session("agent-1")
    client.set_current_project("agent-1", "a", s.session_id)
    raw.script_flush()
    assert raw.script_exists(
        *[__import__("hashlib").sha1(src.encode()).hexdigest() for src in sources().values()]
    ) == [False] * len(sources())
    # Every operation reloads its script transparently.
    assert client.heartbeat_session(s.session_id)
    assert client.set_current_project("agent-1", "b", s.session_id).version == 2
    raw.script_flush()
    assert client.start_session("agent-2").fencing_token == 1
    raw.script_flush()
    assert client.end_session("agent-2", client.list_leases("agent-2")[0].session_id)
    raw.script_flush()
    assert client.cleanup_expired_sessions() == 0
    raw.script_flush()
    assert client.revoke_session("agent-1", reason="x") is True


def test_leases_from_leaves_out_leases_that_lapsed_after_the_index_was_read() -> None:
    from coordinator.listing import leases_from

    sid = "7-0123456789abcdef@agent-a"
    live = "\n".join([sid, "1000", "2000", "3000", "30000", '{"host": "h"}'])
    (lease,) = leases_from(["agent-a", "agent-b"], [live, None])
    assert (lease.agent_id, lease.session_id, lease.fencing_token) == ("agent-a", sid, 7)
    assert lease.expires_at.timestamp() == 3.0
    assert lease.ttl == 30.0
    assert lease.metadata == {"host": "h"}
