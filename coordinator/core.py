"""The pure core shared by :class:`Coordinator` and :class:`AsyncCoordinator`.

Nothing here does I/O. Each operation validates and encodes its arguments into a
*call* (a script, a command or a pipelined batch of commands) plus a decoder that
turns the reply into a model or raises the mapped exception. Operations that need
several round trips are generators ("plans") that yield calls and receive replies;
a plan that streams results also yields :class:`Emit` items. The sync and async
shells only execute calls, so behaviour cannot drift between them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache, partial
from typing import Any, Final, NoReturn, Protocol, TypeVar

from coordinator import validation
from coordinator.calls import Batch, Command, Emit, Offload, Op, Plan, Script, Sleep, StreamPlan
from coordinator.constants import KEY_SCHEMA_VERSION, MAX_ERROR_MESSAGE_LENGTH
from coordinator.errors import (
    ConfigurationError,
    ConflictError,
    CoordinatorError,
    DurabilityUnsupported,
    FsyncTimeout,
    InvalidInputError,
    ReplicationTimeout,
    RequestIdReusedError,
    ReservationScopesNeeded,
    SessionAlreadyActive,
    SessionLeaseExpired,
    ShardCountMismatch,
    UnexpectedReply,
)
from coordinator.events import matching_events
from coordinator.failures import Backoff, Failures, out_of_memory
from coordinator.keys import KeySpace
from coordinator.listing import FIELDS, leases_plan, records_plan, trusted_lease
from coordinator.models import AgentEvent, AgentProject, Lease, Session
from coordinator.reservations import MAX_SCOPE_ROUNDS, SCOPES_NEEDED, ReservationCore
from coordinator.server import ServerFacts, every_node, eviction_refusal, server_facts
from coordinator.timestamps import datetime_to_ms, ms_to_datetime, stream_id_key, time_reply_ms

T = TypeVar("T")

# --- script reply codes (the one table mapping them to exceptions is _raise_for) ----

OK: Final = 0
CONFLICT: Final = 1
LEASE: Final = 2
EXCLUSIVE: Final = 3
REQUEST_REUSED: Final = 4

#: Lease hash fields read for listings, in this order.
LEASE_FIELDS: Final = FIELDS
#: Project record fields of the agent hash, in this order.
RECORD_FIELDS: Final = ("p", "v", "ps", "pe")

_dt = ms_to_datetime
#: pydantic's validator on a plain dict: the cheapest way to build a checked model.
_validate_project: Callable[[dict[str, Any]], AgentProject] = (
    AgentProject.__pydantic_validator__.validate_python
)


class CoreSettings(Protocol):
    """What the core reads of :class:`coordinator.settings.Settings` (the core sits below
    the settings, which read the environment)."""

    @property
    def namespace(self) -> str: ...
    @property
    def shards(self) -> int: ...
    @property
    def lease_ttl(self) -> float: ...
    @property
    def request_ttl(self) -> float: ...
    @property
    def wait_replicas(self) -> int: ...
    @property
    def wait_aof(self) -> bool: ...
    @property
    def wait_timeout(self) -> float: ...
    @property
    def retry_attempts(self) -> int: ...
    @property
    def retry_backoff(self) -> float: ...
    @property
    def retry_backoff_cap(self) -> float: ...
    @property
    def safe_redis_url(self) -> str: ...
    @property
    def allow_eviction(self) -> bool: ...


class EventSource(Protocol):
    """A source of persisted events (an event sink)."""

    def query(
        self,
        namespace: str,
        agent_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AgentEvent]: ...


class CoordinatorCore:
    """Validation, encoding and decoding for one namespace; holds no connection."""

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        self.failures = Failures(
            settings.safe_redis_url,
            settings.retry_attempts,
            Backoff(settings.retry_backoff, settings.retry_backoff_cap),
        )
        self.keys = KeySpace(settings.namespace, settings.shards)
        self.lease_ttl_ms = round(settings.lease_ttl * 1000)
        self.request_ttl_ms = round(settings.request_ttl * 1000)
        # Hot path: a repeated (agent, project, session) is validated and encoded once.
        self._set_prefix_cached = lru_cache(maxsize=4096)(self._set_prefix)
        #: Durability mode: replicas that must acknowledge each script's changes (0 = off)
        #: and how long ``WAIT`` may block for them (ms).
        self.wait_replicas = settings.wait_replicas
        self.wait_timeout_ms = max(1, round(settings.wait_timeout * 1000))
        #: Durability mode: whether each script's changes must be fsynced (WAITAOF).
        self.wait_aof = settings.wait_aof
        #: The commands pipelined after each state-changing script (none: off).
        self.durability_commands: tuple[tuple[Any, ...], ...] = (
            *((("WAIT", self.wait_replicas, self.wait_timeout_ms),) if self.wait_replicas else ()),
            *((("WAITAOF", 1, 0, self.wait_timeout_ms),) if self.wait_aof else ()),
        )
        self.durable = bool(self.durability_commands)
        #: Resource reservations (``coordinator.reservations``).
        self.reservations = ReservationCore(self.keys, self.lease_ttl_ms, self.request_ttl_ms)

    # --- namespace ------------------------------------------------------------------

    def connect(self, cluster: bool = False) -> Plan[tuple[ServerFacts, ...]]:
        """What every client runs once when it connects: read what the server says about
        itself and refuse an evicting one (unless ``allow_eviction``), then check the
        namespace's recorded shard count and schema. The record is read first and
        written only when missing, so a server at ``maxmemory`` (which refuses every
        write) still serves reads, ``status`` and the worker that frees its memory."""
        facts = server_facts((yield Command("info", (), every_node(cluster), optional=True)))
        if not self.settings.allow_eviction:
            refusal = eviction_refusal(facts, self.settings.safe_redis_url)
            if refusal is not None:
                raise refusal
        if self.wait_aof:
            yield from self._durability_probe(cluster)
        recorded = yield Command("hmget", (self.keys.meta, "shards", "schema"))
        if recorded[0] is None or recorded[1] is None:
            init = self.init_namespace()
            call = init.call
            assert isinstance(call, Script)
            call.optional = True
            reply = yield call
            if isinstance(reply, Exception):
                if out_of_memory(reply):
                    # Nothing recorded yet, so nothing to disagree with; a later
                    # connect records it once memory is free (writes fail until then).
                    return facts
                raise self.failures.redis_error(reply, call)
            recorded = reply
        self._check_namespace(recorded)
        return facts

    def init_namespace(self) -> Op[None]:
        """Record the namespace's shard count and schema version unless recorded, and
        check what is recorded (one script; :meth:`connect` reads first)."""
        call = Script(
            "init_namespace", (self.keys.meta,), (self.keys.shards, KEY_SCHEMA_VERSION), retry=True
        )
        return Op(call, self._check_namespace)

    def _check_namespace(self, reply: Any) -> None:
        recorded = int(reply[0])
        if recorded != self.keys.shards:
            raise ShardCountMismatch(self.keys.namespace, self.keys.shards, recorded)
        if int(reply[1]) != KEY_SCHEMA_VERSION:
            raise ConfigurationError(
                f"namespace {self.keys.namespace!r} has key schema {reply[1]}; "
                f"this client speaks {KEY_SCHEMA_VERSION}"
            )

    # --- sessions -------------------------------------------------------------------

    def _ttl_ms(self, ttl: float | None) -> int:
        if ttl is None:
            return self.lease_ttl_ms
        return round(validation.ttl_seconds(ttl) * 1000)

    def start_session(
        self,
        agent_id: str,
        metadata: Mapping[str, Any] | None,
        ttl: float | None,
        exclusive: bool,
        scopes: Sequence[str] = (),
    ) -> Op[Session]:
        """``scopes``: of the agent's shard, where it may hold reservations (see
        ReservationScopesNeeded); the clients pass what they granted."""
        agent = validation.agent_id(agent_id)
        meta = validation.metadata(metadata)
        ttl_ms = self._ttl_ms(ttl)
        nonce = secrets.token_hex(8)
        keys = self.keys.agent_keys(agent)
        extra_keys, names = self.reservations.ending(keys, scopes)
        call = Script(
            "start_session",
            (*keys.fenced_keys, *extra_keys),
            (agent, nonce, ttl_ms, "1" if exclusive else "0", meta, *names),
        )

        def decode(reply: Any) -> Session:
            if reply[0] == OK:
                token = int(reply[1])
                return Session(
                    session_id=validation.format_session_id(agent, token, nonce),
                    agent_id=agent,
                    fencing_token=token,
                    started_at=_dt(reply[2]),
                    last_heartbeat=_dt(reply[2]),
                    expires_at=_dt(reply[3]),
                    ttl=ttl_ms / 1000,
                    metadata=validation.decode_metadata(meta),
                )
            _raise_for(reply, agent=agent)

        return Op(call, decode)

    def heartbeat(self, session_id: str, ttl: float | None) -> Op[Session]:
        agent, token = validation.session_id(session_id)
        keys = self.keys.agent_keys(agent)
        new_ttl = "" if ttl is None else self._ttl_ms(ttl)
        call = Script(
            "heartbeat", keys.fenced_keys, (agent, session_id, token, new_ttl), retry=True
        )

        def decode(reply: Any) -> Session:
            if reply[0] == OK:
                return Session(
                    session_id=session_id,
                    agent_id=agent,
                    fencing_token=token,
                    started_at=_dt(reply[1]),
                    last_heartbeat=_dt(reply[2]),
                    expires_at=_dt(reply[3]),
                    ttl=int(reply[4]) / 1000,
                    metadata=validation.decode_metadata(reply[5]),
                )
            _raise_for(reply, agent=agent, session_id=session_id)

        return Op(call, decode)

    def end_session(self, agent_id: str, session_id: str, scopes: Sequence[str] = ()) -> Op[bool]:
        agent = validation.agent_id(agent_id)
        owner, _ = validation.session_id(session_id)
        keys = self.keys.agent_keys(agent)
        foreign = "1" if owner != agent else "0"
        extra_keys, names = self.reservations.ending(keys, scopes)
        # Idempotent by design: ending an ended session answers True again.
        call = Script(
            "end_session",
            (*keys.script_keys, *extra_keys),
            (agent, session_id, foreign, *names),
            retry=True,
        )
        return Op(call, partial(_decode_flag, agent))

    def revoke_session(self, agent_id: str, reason: str, scopes: Sequence[str] = ()) -> Op[bool]:
        agent = validation.agent_id(agent_id)
        text = validation.reason(reason)
        keys = self.keys.agent_keys(agent)
        extra_keys, names = self.reservations.ending(keys, scopes)
        call = Script("revoke_session", (*keys.script_keys, *extra_keys), (agent, text, *names))
        return Op(call, partial(_decode_flag, agent))

    # --- project records ------------------------------------------------------------

    def _set_prefix(
        self, agent_id: str, project_name: str | None, session_id: str
    ) -> tuple[str, str | None, int, tuple[str, ...], tuple[str | int, ...]]:
        """Validated agent, project, token, script keys and leading ARGV of a write."""
        agent = validation.agent_id(agent_id)
        project = validation.project_name(project_name)
        owner, token = validation.session_id(session_id)
        keys = self.keys.agent_keys(agent).fenced_keys
        args = (agent, session_id, token, project or "", "1" if owner != agent else "0")
        return agent, project, token, keys, args

    def set_project(
        self,
        agent_id: str,
        project_name: str | None,
        session_id: str,
        expected_version: int | None,
        request_id: str | None,
    ) -> Op[AgentProject]:
        try:
            agent, project, token, keys, args = self._set_prefix_cached(
                agent_id, project_name, session_id
            )
        except TypeError:  # an unhashable argument: validate uncached for the real error
            agent, project, token, keys, args = self._set_prefix(agent_id, project_name, session_id)
        expected = None if expected_version is None else validation.version(expected_version)
        rid = None if request_id is None else validation.request_id(request_id)
        if rid is None:
            call = Script("set_project", keys, (*args, "" if expected is None else expected))
        else:
            # With a request id the write is idempotent, so it may be retried.
            call = Script(
                "set_project",
                (*keys, self.keys.request(agent, rid)),
                (*args, "" if expected is None else expected, self.request_ttl_ms),
                retry=True,
            )

        def decode(reply: Any) -> AgentProject:
            if reply[0] == OK or reply[0] == "0":  # a replayed reply carries strings
                return _validate_project(
                    {
                        "agent_id": agent,
                        "project_name": project,
                        "version": reply[1],
                        "session_id": session_id,
                        "updated_by": agent,
                        "event_id": reply[2],
                        "fencing_token": token,
                    }
                )
            _raise_for(reply, agent=agent, session_id=session_id, expected=expected, request_id=rid)

        return Op(call, decode)

    def get_project(self, agent_id: str) -> Op[AgentProject | None]:
        agent = validation.agent_id(agent_id)
        call = Command("hmget", (self.keys.agent(agent), *RECORD_FIELDS))
        return Op(call, lambda reply: record_from(agent, reply))

    # --- reaping --------------------------------------------------------------------

    def cleanup_expired(self, batch: int = 256) -> Plan[int]:
        """Reap every shard's lapsed leases; returns how many this call reaped."""
        reaped, _ = yield from self.reap_due(batch)
        return reaped

    def reap_due(self, batch: int = 256) -> Plan[tuple[int, float | None]]:
        """Reap every shard's lapsed leases. Returns how many this call reaped and the
        seconds (server clock) until the next lease deadline, None when no lease is
        left: the worker sleeps exactly that long instead of polling.

        One round trip finds each shard's earliest deadline (``ZRANGE 0 0``); only
        shards with one already past are read further and reaped, so a pass that finds
        nothing due costs what the poll it replaces did."""
        reaped = 0
        shards = range(self.keys.shards)
        while True:
            now_ms = time_reply_ms((yield Command("time")))
            firsts = yield Batch(
                tuple(
                    Command("zrange", (self.keys.index(s), 0, 0), {"withscores": True})
                    for s in shards
                )
            )
            earliest = [int(first[0][1]) if first else None for first in firsts]
            due = [s for s, first in enumerate(earliest) if first is not None and first <= now_ms]
            if not due:
                upcoming = [e for e in earliest if e is not None]
                return reaped, (min(upcoming) - now_ms) / 1000 if upcoming else None
            due_by_shard = yield Batch(
                tuple(
                    Command(
                        "zrangebyscore",
                        (self.keys.index(s), "-inf", now_ms),
                        {"start": 0, "num": batch},
                    )
                    for s in due
                )
            )
            this_pass = 0
            for shard, agents in zip(due, due_by_shard, strict=True):
                if agents:
                    this_pass += yield from self._reap_shard(shard, agents)
            reaped += this_pass
            if not this_pass:
                # A deadline this very millisecond: the server has not expired the key
                # yet. Look again in a moment rather than spin.
                return reaped, 0.001

    def _reap_shard(self, shard: int, agents: Sequence[str]) -> Plan[int]:
        """Reap lapsed candidates of one shard, releasing their listed reservations in
        the same script: a candidate listed in scopes not given is left by the script,
        which names them, and reaped by the next call with them."""
        head = [self.keys.index(shard), self.keys.stream(shard)]
        head += (self.keys.reservation_index(shard), self.keys.reservation_ids(shard))
        for agent in agents:
            ak = self.keys.agent_keys(agent)
            head += (ak.lease, ak.agent, ak.listed)
        reaped, scopes = 0, tuple[str, ...]()
        for _ in range(MAX_SCOPE_ROUNDS):
            extra = self.reservations.scope_keys_of(shard, scopes)
            # Re-running reaps nothing twice (each expiry is audited once), so retry.
            reply = yield Script(
                "reap_expired", (*head, *extra), (len(agents), *agents, *scopes), retry=True
            )
            reaped += int(reply[0])
            if len(reply) == 1:
                break
            scopes = (*scopes, *(str(scope) for scope in reply[1:]))
        return reaped

    # --- listings -------------------------------------------------------------------

    def leases(self, agent_id: str | None, page_size: int = 500) -> StreamPlan[Lease]:
        """Live leases, a page per shard at a time (never all in memory; see listing.py)."""
        page_size = validation.page_size(page_size)
        if agent_id is not None:
            agent = validation.agent_id(agent_id)
            reply = yield Command("hmget", (self.keys.lease(agent), *LEASE_FIELDS))
            lease = lease_from(agent, reply)
            if lease is not None:
                yield Emit([lease])
            return
        yield from leases_plan(self.keys, page_size)

    def projects(self, agent_ids: Sequence[str]) -> Plan[list[AgentProject | None]]:
        """Project records of several agents: one ``read_records`` per shard, all in
        one pipelined round trip."""
        agents = validation.agent_ids(agent_ids)
        return records_plan(self.keys, agents, record_from)

    def server_time(self) -> Op[datetime]:
        """The Redis server's clock (the only clock the coordinator trusts)."""
        return Op(Command("time"), lambda reply: _dt(time_reply_ms(reply)))

    # --- events ---------------------------------------------------------------------

    def follow_events(
        self,
        agent_id: str | None,
        event_type: str | None,
        poll_interval: float = 0.2,
        batch: int = 500,
        positions: dict[int, str] | None = None,
    ) -> StreamPlan[AgentEvent]:
        """Events appended from now on, oldest first, until the caller stops iterating.

        Each shard stream is read on its own (never a multi-stream command, so it works
        on Redis Cluster); when nothing new arrived the plan sleeps ``poll_interval``.
        ``positions`` (shard -> last stream id read) is where to continue and is kept up
        to date, so a new plan given the same dict resumes where this one stopped.
        """
        agent = None if agent_id is None else validation.agent_id(agent_id)
        etype = validation.event_type(event_type)
        shards = [self.keys.shard_of(agent)] if agent is not None else list(range(self.keys.shards))
        newest = yield Batch(
            tuple(
                Command("xrevrange", (self.keys.stream(s), "+", "-"), {"count": 1}) for s in shards
            )
        )
        last = {
            s: (entries[0][0] if entries else "0-0")
            for s, entries in zip(shards, newest, strict=True)
        }
        if positions is not None:
            last.update((s, positions[s]) for s in shards if s in positions)
            positions.update(last)
            last = positions
        while True:
            replies = yield Batch(
                tuple(
                    Command("xrange", (self.keys.stream(s), "(" + last[s], "+"), {"count": batch})
                    for s in shards
                )
            )
            fresh: list[AgentEvent] = []
            for shard, entries in zip(shards, replies, strict=True):
                fresh += matching_events(shard, entries, agent, etype)
                if entries:
                    last[shard] = entries[-1][0]
            if fresh:
                fresh.sort(key=lambda e: (stream_id_key(e.stream_id), e.shard))
                yield Emit(fresh)
            else:
                yield Sleep(poll_interval)

    def stream_events(
        self,
        agent_id: str | None,
        event_type: str | None,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
        page: int = 200,
    ) -> Plan[list[AgentEvent]]:
        """Newest-first events still in the shard streams, filtered, at most ``limit``."""
        agent = None if agent_id is None else validation.agent_id(agent_id)
        etype = validation.event_type(event_type)
        limit = validation.limit(limit)
        shards = [self.keys.shard_of(agent)] if agent is not None else list(range(self.keys.shards))
        low = "-" if since is None else str(datetime_to_ms(validation.moment("since", since)))
        high = "+" if until is None else str(datetime_to_ms(validation.moment("until", until)))
        upper = dict.fromkeys(shards, high)
        found: dict[int, list[AgentEvent]] = {s: [] for s in shards}
        active = list(shards)
        while active:
            replies = yield Batch(
                tuple(
                    Command("xrevrange", (self.keys.stream(s), upper[s], low), {"count": page})
                    for s in active
                )
            )
            still = []
            for shard, entries in zip(active, replies, strict=True):
                found[shard] += matching_events(shard, entries, agent, etype)
                if len(entries) == page and len(found[shard]) < limit:
                    upper[shard] = "(" + entries[-1][0]
                    still.append(shard)
            active = still
        merged = [event for events in found.values() for event in events]
        merged.sort(key=lambda e: (stream_id_key(e.stream_id), e.shard), reverse=True)
        return merged[:limit]

    def agent_events(
        self,
        sink: EventSource | None,
        agent_id: str | None,
        event_type: str | None,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Plan[list[AgentEvent]]:
        """Newest-first events from the sink and the not-yet-persisted stream tail.

        The tail is read first: an entry trimmed from the stream after that read was
        persisted before it was trimmed, so the sink read that follows holds it.
        """
        tail = yield from self.stream_events(agent_id, event_type, limit, since, until)
        if sink is None:
            return tail
        query = partial(sink.query, self.keys.namespace, agent_id, event_type, limit, since, until)
        persisted = yield Offload(query)
        return merge_events(tail, persisted, limit)

    # --- adapters -------------------------------------------------------------------

    def log_event(
        self,
        agent_id: object,
        session_id: object,
        event_type: object,
        to_project: object,
        from_project: object,
        expected_version: object,
        actual_version: object,
        success: object,
        error_message: object,
        metadata: object,
    ) -> Op[str]:
        """An application's own event (``log_event.lua``, for ``compat``); decodes its
        stream id. Stored as ``app_event`` with ``event_type`` in the metadata."""
        agent = validation.agent_id(agent_id)
        sid, token = "", ""
        if session_id:
            owner, fencing = validation.session_id(session_id)
            if owner != agent:
                raise InvalidInputError("session_id", f"belongs to agent {owner!r}, not {agent!r}")
            sid, token = str(session_id), str(fencing)
        logged = validation.logged_event_type(event_type)
        if type(success) is not bool:
            raise InvalidInputError("success", f"must be a bool, not {type(success).__name__}")
        # The original passed to_project="" for events without a project.
        to_p = validation.project_name(to_project or None) or ""
        from_p = validation.project_name(from_project or None) or ""
        expected = validation.optional_version(expected_version, "expected_version")
        actual = validation.optional_version(actual_version, "actual_version")
        message = validation.optional_text("error_message", error_message, MAX_ERROR_MESSAGE_LENGTH)
        envelope: dict[str, Any] = {"logged_type": logged}
        if metadata is not None:
            envelope["metadata"] = metadata
        meta = validation.metadata(envelope)
        args = (
            agent, sid, token, from_p, to_p,
            "" if expected is None else expected, "" if actual is None else actual,
            "1" if success else "0", message, meta,
        )  # fmt: skip
        call = Script("log_event", (self.keys.stream(self.keys.shard_of(agent)),), args)
        return Op(call, lambda reply: str(reply[1]))

    def import_project(
        self,
        agent_id: str,
        project_name: str | None,
        version: int | None,
        session_id: str | None,
        updated_ms: int | None,
        metadata: Mapping[str, Any],
    ) -> Op[tuple[bool, str | None, int]]:
        """Import a record of another system (``import_project.lua``, for ``migrate``):
        ``version`` None binds ``project_name`` as the next version if the agent has no
        project. Decodes (imported, stored project, stored version); idempotent."""
        agent = validation.agent_id(agent_id)
        project = validation.project_name(project_name)
        agent_keys = self.keys.agent_keys(agent)
        if version is None:
            args: tuple[str | int, ...] = ("", "", "")
        else:
            args = (validation.version(version, "version"), session_id or "", f"{updated_ms}-0")
        call = Script(
            "import_project",
            (agent_keys.agent, agent_keys.stream),
            (agent, project or "", *args, validation.metadata(dict(metadata))),
            retry=True,  # re-running an import finds it done and changes nothing
        )

        def decode(reply: Any) -> tuple[bool, str | None, int]:
            if int(reply[0]) == 0:
                return True, project, int(reply[1])
            return False, reply[1] or None, int(reply[2])

        return Op(call, decode)

    # --- worker ---------------------------------------------------------------------

    def dead_letter(
        self,
        shard: int,
        group: str,
        entry_id: str,
        consumer: str,
        reason: str,
        fields: Mapping[str, str] | None,
    ) -> Op[bool]:
        """Move a pending entry to the shard's dead-letter stream and ack it (atomic)."""
        pairs = [item for pair in (fields or {}).items() for item in pair]
        keys = (self.keys.stream(shard), self.keys.dead_letters(shard))
        call = Script("dead_letter", keys, (group, entry_id, consumer, reason[:1000], *pairs))
        call.retry = True  # only a still-pending entry moves: running twice is harmless
        return Op(call, lambda reply: int(reply) == 1)

    # --- durability mode ------------------------------------------------------------

    def _durability_probe(self, cluster: bool) -> Plan[None]:
        """``wait_aof``: ask the server (every primary of a cluster) for ``WAITAOF`` at
        connect, before anything is written. A fresh connection has written nothing, so
        it answers at once; a server without the command (Redis before 7.2), without
        its append-only file, or a replica refuses it: :class:`DurabilityUnsupported`.
        Told by the server's answer, never by its version (Valkey has WAITAOF too)."""
        target = {"target_nodes": "primaries"} if cluster else {}
        call = Command("execute_command", ("WAITAOF", 1, 0, self.wait_timeout_ms), target)
        call.optional = True
        reply = yield call
        if isinstance(reply, Exception):
            raise self.failures.redis_error(reply, call)
        answers = list(reply.values()) if isinstance(reply, Mapping) else [reply]
        if not all(isinstance(a, list) and len(a) == 2 for a in answers):
            raise UnexpectedReply(f"unexpected WAITAOF reply {reply!r}")

    def check_durable(self, reply: Any, waits: Sequence[Any]) -> Any:
        """The script's reply once the pipelined :attr:`durability_commands` answered
        ``waits``. ReplicationTimeout when fewer replicas than ``wait_replicas``
        acknowledged it, FsyncTimeout when the server did not confirm the fsync in
        time, DurabilityUnsupported (or the mapped error) when one was refused."""
        for command, answer in zip(self.durability_commands, waits, strict=True):
            if isinstance(answer, Exception):
                error = self.failures.redis_error(answer, Command("execute_command", command))
                if isinstance(error, DurabilityUnsupported):
                    error.applied, error.reply = True, reply
                raise error
            if command[0] == "WAIT" and int(answer) < self.wait_replicas:
                raise ReplicationTimeout(self.wait_replicas, int(answer), reply=reply)
            if command[0] == "WAITAOF" and int(answer[0]) < 1:
                raise FsyncTimeout(reply=reply)
        return reply

    @staticmethod
    def replication_outcome(
        op: Op[Any], short: ReplicationTimeout | FsyncTimeout | DurabilityUnsupported
    ) -> None:
        """Attach what the call produced on the primary to ``short`` (result or error)."""
        if isinstance(short, DurabilityUnsupported) and not short.applied:
            return
        try:
            short.result = op.decode(short.reply)
        except CoordinatorError as exc:
            short.error = exc


def merge_events(
    first: Sequence[AgentEvent], second: Sequence[AgentEvent], limit: int
) -> list[AgentEvent]:
    """Both lists' events once each (by shard and stream id), newest first."""
    unique = {(e.shard, e.stream_id): e for e in (*first, *second)}
    merged = sorted(
        unique.values(), key=lambda e: (stream_id_key(e.stream_id), e.shard), reverse=True
    )
    return merged[:limit]


def _decode_flag(agent: str, reply: Any) -> bool:
    if int(reply[0]) != OK:
        _raise_for(reply, agent=agent)
    return bool(int(reply[1]))


def _raise_for(
    reply: Any,
    *,
    agent: str,
    session_id: str = "",
    expected: int | None = None,
    request_id: str | None = None,
) -> NoReturn:
    """The one table from script reply codes to exceptions; an unknown code raises too."""
    code = int(reply[0])
    if code == LEASE:
        raise SessionLeaseExpired(agent, session_id, reply[1])
    if code == CONFLICT:
        current = record_from(agent, reply[1:5]) if int(reply[2]) > 0 else None
        raise ConflictError(agent, expected if expected is not None else -1, current)
    if code == EXCLUSIVE:
        raise SessionAlreadyActive(agent, _dt(reply[1]))
    if code == REQUEST_REUSED and request_id is not None:
        raise RequestIdReusedError(request_id)
    if code == SCOPES_NEEDED:
        raise ReservationScopesNeeded(agent, [str(scope) for scope in reply[1:]])
    raise UnexpectedReply(f"unknown script reply {reply!r}")


def record_from(agent: str, reply: Sequence[Any]) -> AgentProject | None:
    """A project record from its agent-hash fields (``RECORD_FIELDS`` order)."""
    project, version, session, event_id = reply
    if not version:
        return None
    return AgentProject(
        agent_id=agent,
        project_name=project or None,
        version=int(version),
        session_id=session or None,
        updated_by=agent,
        event_id=event_id or "0-0",
        fencing_token=_token_of(session),
    )


def _token_of(session_id: str | None) -> int | None:
    """The fencing token inside a session id (None for ids of imported records)."""
    if not session_id:
        return None
    # Only ids minted here carry a token; an imported UUID may well start with digits.
    try:
        return validation.session_id(session_id)[1]
    except InvalidInputError:
        return None


def lease_from(agent: str, reply: Sequence[Any]) -> Lease | None:
    """One agent's lease from its hash's ``LEASE_FIELDS`` (None: no live lease), built
    as the listing builds it (equal to a validated one: tests/test_listing.py)."""
    sid, start, heartbeat, deadline, ttl, meta = reply
    return trusted_lease(agent, sid, start, heartbeat, deadline, ttl, meta) if sid else None
