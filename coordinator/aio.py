"""AsyncCoordinator: the asyncio client.

This shell only executes the calls that :mod:`coordinator.core` builds; all
validation, encoding, decoding and error mapping live there. ``coordinator/client.py``
(the synchronous ``Coordinator``) is generated from this file by
``scripts/unasync.py``; edit this file and regenerate, never the other.
"""

from __future__ import annotations

import logging
import random
from asyncio import Lock, get_running_loop, sleep, to_thread
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
)

from coordinator.ahead import ahead
from coordinator.calls import (
    Ahead,
    Call,
    Collect,
    Command,
    Emit,
    Offload,
    Op,
    Plan,
    Script,
    Sleep,
    StreamPlan,
)
from coordinator.connection import (
    AsyncRedisClient,
    attempt_was_tls,
    cluster_hint,
    is_cluster_client,
    node_settings,
    open_async_client,
    owner_address,
    parse_cluster_info,
    redis_mode,
    sentinels_of,
    tls_refusal,
)
from coordinator.core import CoordinatorCore
from coordinator.errors import (
    CoordinatorError,
    DurabilityUnsupported,
    FsyncTimeout,
    ReplicationTimeout,
    ReservationScopesNeeded,
)
from coordinator.failures import REPLICATED, refused
from coordinator.gc_tuning import fewer_collections
from coordinator.keepalive import AsyncKeepAlive
from coordinator.keys import KeySpace
from coordinator.loops import UNBOUND, LoopLink, close_with_loop, discard
from coordinator.models import AgentEvent, AgentProject, Lease, Reservation, Session
from coordinator.pipelining import AutoPipeline
from coordinator.reservations import MAX_SCOPE_ROUNDS
from coordinator.scripts import sources
from coordinator.server import ServerFacts, eviction_refusal
from coordinator.settings import Settings
from coordinator.sinks import Sink, sink_from_url
from coordinator.stats import DEFAULT_LAG_SCAN_LIMIT, NamespaceStats, stats_plan

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Reason recorded when an operator revokes without giving one.
DEFAULT_REVOKE_REASON = "revoked by an operator"


class AsyncCoordinator:
    """Shared agent sessions, project records and audit events on Redis (asyncio).

    Connects lazily: the first call detects cluster mode (unless ``cluster`` is set),
    loads the scripts and checks the namespace's recorded shard count. A ready-made
    redis-py client may be passed as ``redis_client`` (it must use
    ``decode_responses=True`` and should not retry commands on its own).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_client: AsyncRedisClient | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_env(**overrides)
        elif overrides:
            settings = Settings(**{**dict(settings), **overrides})
        self.settings = settings
        self._core = CoordinatorCore(settings)
        # A caller-supplied client (decode_responses=True, no automatic retries) is
        # used as is and never closed by us: whoever made it owns it.
        self._supplied = redis_client
        self._scripts: dict[str, Any] = {}
        self._rng = random.Random()
        #: Durability mode: every script is followed by WAIT and/or WAITAOF on its
        #: connection.
        self._durable = self._core.durable
        #: The connections of each event loop that uses this object (a connection
        #: belongs to the loop that opened it: see coordinator.loops), by loop.
        self._links: dict[Any, LoopLink[AsyncRedisClient]] = {}
        #: (loop, client, send) of the last call, read at once by the hot path; ``send``
        #: sends its EVALSHA: the client itself, or an auto-pipeline over it.
        self._bound: tuple[Any, Any, Any] = (UNBOUND, None, None)
        #: Whether the connected Redis runs in cluster mode (known after the first call).
        self.cluster: bool | None = None
        self._sink: Sink | None = None
        #: What the server said about itself when this client connected (one entry per
        #: node of a cluster): kind, version, maxmemory policy, memory, persistence.
        self.server_facts: tuple[ServerFacts, ...] = ()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> AsyncCoordinator:
        """Connect to ``url``; other settings from ``overrides`` (e.g. ``namespace``,
        ``lease_ttl``, ``cluster``), then ``COORDINATOR_*`` variables, then defaults."""
        return cls(Settings.from_url(url, **overrides))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self.settings.safe_redis_url!r}, "
            f"namespace={self.settings.namespace!r})"
        )

    async def __aenter__(self) -> AsyncCoordinator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (of every event loop that used this object). The
        object may be used again (it reconnects)."""
        here = get_running_loop()
        links, self._links = self._links, {}
        self._bound = (UNBOUND, None, None)
        for link in links.values():
            if link.loop is here:
                await self._close_link(link)
            else:
                discard(link, self._close_link)
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()

    @property
    def keys(self) -> KeySpace:
        """The key layout of this client's namespace."""
        return self._core.keys

    @property
    def operations(self) -> CoordinatorCore:
        """Advanced: the pure builders of this client's operations (no I/O). Build an
        operation here and run it with :meth:`execute`, the way httpx pairs
        ``build_request`` with ``send``; the worker and the adapters do."""
        return self._core

    @property
    def sink(self) -> Sink | None:
        """The event sink named by ``sink_url`` (opened on first use), or None."""
        if self._sink is None and self.settings.sink_url is not None:
            self._sink = sink_from_url(self.settings.sink_url.get_secret_value())
        return self._sink

    # --- sessions -------------------------------------------------------------------

    async def start_session(
        self,
        agent_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        exclusive: bool = False,
    ) -> Session:
        """Start a session (a lease of ``ttl`` seconds, default ``lease_ttl``).

        A live session of the same agent is superseded (its later calls fail with
        reason ``superseded``) unless ``exclusive``, which raises SessionAlreadyActive.
        Raises InvalidInputError, SessionAlreadyActive, CoordinatorUnavailable.
        """
        session = await self._ending(
            agent_id, partial(self._core.start_session, agent_id, metadata, ttl, exclusive)
        )
        await self._release_ended(session.agent_id, session.session_id, "session superseded")
        return session

    async def heartbeat_session(self, session_id: str, *, ttl: float | None = None) -> Session:
        """Extend the session's lease by its TTL (or a new ``ttl``).

        Raises SessionLeaseExpired when the session is not alive (reason says why).
        """
        return await self._run(self._core.heartbeat(session_id, ttl))

    async def end_session(self, agent_id: str, session_id: str) -> bool:
        """End the session; True if it is now ended by this call or an earlier one.

        False when it is not the agent's live session. One ambiguity: when a
        connection failure loses the reply of an attempt that did end it, the resend
        answers False if a newer session of the agent started in between.
        Its reservations in scopes of the agent's own shard are released by the same
        script; those elsewhere that this client granted, right after (the worker's
        reaper releases any others).
        """
        ended = await self._ending(agent_id, partial(self._core.end_session, agent_id, session_id))
        if ended:
            await self._release_ended(agent_id, None, "session ended")
        return ended

    def keep_alive(
        self,
        session: Session,
        *,
        interval: float | None = None,
        on_change: Callable[[AsyncKeepAlive], object] | None = None,
        end_on_exit: bool = False,
    ) -> AsyncKeepAlive:
        """Hold ``session``'s lease: heartbeat every ``interval`` seconds (a third of
        its TTL by default) and watch the audit stream, so a revoke or supersede is
        noticed at once. The handle's ``state`` is ``alive``, ``jeopardy`` (heartbeats
        failing, the last confirmed deadline not passed) or ``lost`` (with ``reason``);
        ``lost`` is the signal, ``check()`` raises SessionLeaseExpired once lost, and
        ``on_change(handle)`` is called on every change. Exiting ends the session only
        with ``end_on_exit``. Use as ``async with coordinator.keep_alive(s) as ka:``.
        """
        return AsyncKeepAlive(
            self, session, interval=interval, on_change=on_change, end_on_exit=end_on_exit
        )

    async def revoke_session(self, agent_id: str, reason: str = DEFAULT_REVOKE_REASON) -> bool:
        """Operator action: end the agent's live session (audited with ``reason``).

        Returns False when the agent had no live session.
        """
        revoked = await self._ending(agent_id, partial(self._core.revoke_session, agent_id, reason))
        if revoked:
            await self._release_ended(agent_id, None, "session revoked")
        return revoked

    async def _ending(self, agent_id: str, build: Callable[[tuple[str, ...]], Op[T]]) -> T:
        """Run an operation that ends the agent's session, given the scopes of its
        shard it holds reservations in: those this client granted, then any the script
        names (another client granted them), so the script releases them all."""
        scopes = self._core.reservations.listed_here(agent_id)
        for _ in range(MAX_SCOPE_ROUNDS):
            try:
                return await self._run(build(scopes))
            except ReservationScopesNeeded as need:
                scopes = (*scopes, *need.scopes)
        return await self._run(build(scopes))

    async def _release_ended(self, agent_id: str, live: str | None, message: str) -> None:
        """Release what this client granted the agent's sessions but ``live`` that the
        ending script could not (best effort: the worker's reaper covers a failure)."""
        with suppress(CoordinatorError):
            await self._drive(self._core.reservations.release_ended(agent_id, live, message))

    async def cleanup_expired_sessions(self) -> int:
        """Audit every lapsed lease as ``session_expired``; returns how many this call
        reaped (each expiry is reaped once across all processes)."""
        return await self._drive(self._core.cleanup_expired())

    async def list_leases(self, agent_id: str | None = None) -> list[Lease]:
        """Every live lease (or the given agent's). See iter_leases for large fleets."""
        leases: list[Lease] = []
        with fewer_collections():  # 100,000 leases: no cycles, just many objects
            async for page in self._pages(self._core.leases(agent_id)):
                leases += page
        return leases

    async def iter_leases(
        self, agent_id: str | None = None, *, page_size: int = 500
    ) -> AsyncIterator[Lease]:
        """Live leases, fetched ``page_size`` at a time per shard."""
        async for page in self._pages(self._core.leases(agent_id, page_size)):
            for lease in page:
                yield lease

    # --- project records ------------------------------------------------------------

    async def set_current_project(
        self,
        agent_id: str,
        project_name: str | None,
        session_id: str,
        expected_version: int | None = None,
        *,
        request_id: str | None = None,
    ) -> AgentProject:
        """Compare-and-set the agent's project with its live session.

        ``expected_version``: None writes unconditionally, N only if the stored
        version is N, 0 only if the agent has no record. ``project_name=None`` clears.
        A repeated ``request_id`` returns the first result instead of writing again.
        Raises ConflictError (with ``current``), SessionLeaseExpired,
        InvalidInputError, CoordinatorUnavailable.
        """
        op = self._core.set_project(
            agent_id, project_name, session_id, expected_version, request_id
        )
        return await self._run(op)

    async def get_current_project(self, agent_id: str) -> AgentProject | None:
        """The agent's record, or None if it never had one (a cleared record has
        ``project_name=None`` and keeps its version)."""
        return await self._run(self._core.get_project(agent_id))

    async def get_current_projects(self, agent_ids: Sequence[str]) -> list[AgentProject | None]:
        """Records of several agents in one round trip, in the order given."""
        return await self._drive(self._core.projects(agent_ids))

    # --- reservations ---------------------------------------------------------------

    async def reserve(
        self,
        agent_id: str,
        session_id: str,
        scope: str,
        resources: Sequence[str],
        *,
        mode: str = "exclusive",
        ttl: float | None = None,
        reason: str | None = None,
        wait: float | None = None,
        request_id: str | None = None,
    ) -> Reservation:
        """Reserve ``resources`` of ``scope`` for the live session, all or nothing.

        ``mode``: ``exclusive`` (conflicts with any other holder) or ``shared``
        (coexists with other shared holders). A resource conflicts with the same name,
        with a path above it (``src/`` holds ``src/a.py``) and with one beneath it.
        ``ttl``: seconds until the reservation lapses unless renewed (default: the
        session's lease TTL); it never outlives its session either. ``wait``: seconds
        to wait in arrival order for the resources instead of failing at once.
        A repeated ``request_id`` returns the first grant instead of reserving again.
        Raises ReservationConflict (with every conflicting holder), SessionLeaseExpired,
        InvalidInputError, CoordinatorUnavailable.
        """
        plan = self._core.reservations.reserve(
            agent_id, session_id, scope, resources, mode, ttl, reason, wait, request_id
        )
        return await self._drive(plan)

    async def renew(
        self, agent_id: str, session_id: str, reservation_id: str, *, ttl: float | None = None
    ) -> Reservation:
        """Move the reservation's deadline ``ttl`` seconds (default: its own ttl) from
        now. Raises ReservationNotHeld (released or lapsed), SessionLeaseExpired."""
        return await self._drive(
            self._core.reservations.renew(agent_id, session_id, reservation_id, ttl)
        )

    async def renew_reservations(
        self, agent_id: str, session_id: str, *, ttl: float | None = None
    ) -> list[Reservation]:
        """Renew every reservation the session holds; returns them renewed."""
        return await self._drive(self._core.reservations.renew_session(agent_id, session_id, ttl))

    async def release(self, agent_id: str, session_id: str, reservation_id: str) -> bool:
        """Release a reservation of the session (audited); False when the session holds
        no such reservation (already released, lapsed or another's)."""
        return await self._drive(
            self._core.reservations.release(agent_id, session_id, reservation_id)
        )

    async def release_reservation(
        self, reservation_id: str, reason: str = DEFAULT_REVOKE_REASON
    ) -> bool:
        """Operator action: release any reservation (audited with ``reason``)."""
        return await self._drive(
            self._core.reservations.release_by_operator(reservation_id, reason)
        )

    async def list_reservations(
        self, scope: str | None = None, agent_id: str | None = None
    ) -> list[Reservation]:
        """Live reservations (of one scope, of one agent), by scope and fencing token."""
        return await self._drive(self._core.reservations.listing(scope, agent_id))

    async def holders(self, scope: str, resource: str) -> list[Reservation]:
        """Live reservations of ``scope`` holding ``resource``, a path above or beneath it."""
        return await self._drive(self._core.reservations.holders(scope, resource))

    async def reap_reservations(self) -> int:
        """Release lapsed reservations and those of dead sessions (the worker does this
        every ``reap_interval``); returns how many this call released."""
        return await self._drive(self._core.reservations.reap())

    # --- events ---------------------------------------------------------------------

    async def get_agent_events(
        self,
        agent_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AgentEvent]:
        """Newest-first audit events, optionally filtered by agent, type and time
        (``since <= created_at <= until``): the persisted ones from the event sink
        (``sink_url``) plus those still in the streams, so a write is visible at once."""
        plan = self._core.agent_events(self.sink, agent_id, event_type, limit, since, until)
        return await self._drive(plan)

    async def follow_events(
        self,
        agent_id: str | None = None,
        event_type: str | None = None,
        *,
        poll_interval: float = 0.2,
        positions: dict[int, str] | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """Events as they are appended from now on (oldest first); never ends by itself.

        ``positions`` (shard -> last stream id read), kept up to date while iterating,
        lets a new call resume where a failed one stopped (``coordinator events tail``
        does across a Redis restart)."""
        plan = self._core.follow_events(agent_id, event_type, poll_interval, positions=positions)
        async for event in self._iterate(plan):
            yield event

    async def stats(self, *, lag_scan_limit: int = DEFAULT_LAG_SCAN_LIMIT) -> NamespaceStats:
        """A snapshot of the namespace: server, leases, streams, consumer-group lag,
        pending entries, dead letters and live workers (see :mod:`coordinator.stats`).

        Raises CoordinatorUnavailable, AccessDenied.
        """
        await self.redis()  # the plan depends on the topology found when connecting
        mode = redis_mode(self.settings, bool(self.cluster))
        url = self.settings.safe_redis_url
        plan = stats_plan(self._core.keys, mode=mode, redis_url=url, lag_scan_limit=lag_scan_limit)
        return await self._drive(plan)

    async def server_time(self) -> datetime:
        """The Redis server's clock."""
        return await self._run(self._core.server_time())

    # --- plumbing -------------------------------------------------------------------

    async def redis(self) -> AsyncRedisClient:
        """The connected redis-py client (for admin tooling)."""
        bound = self._bound
        if bound[0] is not get_running_loop():
            bound = await self._bind()
        client: AsyncRedisClient = bound[1]
        return client

    def _link(self) -> LoopLink[AsyncRedisClient]:
        loop = get_running_loop()
        link = self._links.get(loop)
        if link is None:
            # list(): another thread's loop may add its link meanwhile.
            for other in [o for o in list(self._links.values()) if o.loop and o.loop.is_closed()]:
                self._links.pop(other.loop, None)  # closed without its shutdown step
                discard(other, self._close_link)
            link = self._links.setdefault(loop, LoopLink(loop, Lock()))
        return link

    async def _bind(self) -> tuple[Any, Any, Any]:
        """Connect the running event loop's link if need be; it becomes the bound one."""
        link = self._link()
        async with link.lock:
            if link.client is None:
                client = await self._ready()
                link.client, link.send = client, self._sender(client)
                link.owned = client is not self._supplied
                link.guard = await close_with_loop(self._retire, link)
            self._bound = bound = (link.loop, link.client, link.send)
            return bound

    async def _retire(self, link: LoopLink[AsyncRedisClient]) -> None:
        """The link's event loop is shutting down: close its connections in it."""
        link.guard = None  # it is what runs this
        if self._links.get(link.loop) is link:
            del self._links[link.loop]
        if self._bound[0] is link.loop:
            self._bound = (UNBOUND, None, None)
        await self._close_link(link)

    async def _close_link(self, link: LoopLink[AsyncRedisClient]) -> None:
        clients, link.client, link.send, link.nodes = link.clients(), None, None, {}
        guard, link.guard = link.guard, None
        if guard is not None:  # finished here: nothing left for the loop's shutdown
            await guard.aclose()
        for client in clients:
            await client.aclose()
            for sentinel in sentinels_of(client):
                await sentinel.aclose()

    async def _ready(self) -> AsyncRedisClient:
        """A new connected client (the caller's, or one made here)."""
        if self._supplied is not None:
            return await self._adopt(self._supplied, cluster=is_cluster_client(self._supplied))
        cluster = cluster_hint(self.settings)
        if cluster is None:
            cluster = self.cluster  # found by another event loop's connection
        if cluster is None:
            probe = open_async_client(self.settings, cluster=False)
            try:
                cluster = parse_cluster_info(await self._call(probe, Command("info", ("cluster",))))
            finally:
                await probe.aclose()
        try:
            client = open_async_client(self.settings, cluster)
        except (RedisError, RedisClusterException) as exc:
            raise self._core.failures.unavailable(exc, Command("connect")) from exc
        try:
            return await self._adopt(client, cluster)
        except BaseException:
            await client.aclose()
            raise

    async def _adopt(self, client: AsyncRedisClient, cluster: bool) -> AsyncRedisClient:
        self._scripts = {name: client.register_script(src) for name, src in sources().items()}
        self.cluster = cluster
        plan = self._core.connect(cluster)
        reply: Any = None
        try:
            while True:
                reply = await self._call(client, plan.send(reply))
        except StopIteration as done:
            self.server_facts = done.value
        if self.settings.allow_eviction and eviction_refusal(self.server_facts, ""):
            log.warning(
                "Redis at %s may evict keys (maxmemory-policy %s); allow_eviction accepts "
                "losing acknowledged writes",
                self.settings.safe_redis_url,
                ",".join(sorted({f.policy or "?" for f in self.server_facts})),
            )
        return client

    def _sender(self, client: AsyncRedisClient) -> Any:
        return (
            AutoPipeline(client).execute_command
            if self.settings.auto_pipeline
            else client.execute_command
        )

    async def execute(self, op: Op[T] | Plan[T]) -> T:
        """Advanced: run an operation built by :attr:`operations` (one call, or a plan of
        several round trips) with the retries, NOSCRIPT recovery and error mapping of
        every other call, and return its decoded result. Raises what the operation's
        decoder raises, and CoordinatorUnavailable / AccessDenied for Redis failures."""
        if isinstance(op, Op):
            return await self._run(op)
        return await self._drive(op)

    async def _run(self, op: Op[T]) -> T:
        bound = self._bound
        if bound[0] is not get_running_loop():
            bound = await self._bind()
        client = bound[1]
        call = op.call
        if type(call) is not Script or self._durable:
            try:
                return op.decode(await self._call(client, call))
            except (ReplicationTimeout, FsyncTimeout, DurabilityUnsupported) as short:
                self._core.replication_outcome(op, short)
                raise
        # The hot path, inlined: every extra Python call here costs several times its
        # textbook price once the socket round trip has cooled the CPU caches.
        try:
            reply = await bound[2](
                "EVALSHA", self._scripts[call.name].sha, len(call.keys), *call.keys, *call.args
            )
        except NoScriptError:
            reply = await self._call(client, call)  # it did not run: load it, run it
        except (RedisError, RedisClusterException) as exc:
            reply = await self._recover(client, call, exc)  # never a blind resend
        return op.decode(reply)

    async def _drive(self, plan: Plan[T]) -> T:
        bound = self._bound
        if bound[0] is not get_running_loop():
            bound = await self._bind()
        client = bound[1]
        reply: Any = None
        try:
            while True:
                reply = await self._call(client, plan.send(reply))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _iterate(self, plan: StreamPlan[T]) -> AsyncIterator[T]:
        async for items in self._pages(plan):
            for item in items:
                yield item

    async def _pages(self, plan: StreamPlan[T]) -> AsyncIterator[Sequence[T]]:
        """A streaming plan's items, as it emits them (a page at a time)."""
        bound = self._bound
        if bound[0] is not get_running_loop():
            bound = await self._bind()
        client = bound[1]
        reply: Any = None
        while True:
            try:
                step = plan.send(reply)
            except StopIteration:
                return
            if isinstance(step, Emit):
                yield step.items
                reply = None
            else:
                reply = await self._call(client, step)

    async def _call(self, client: AsyncRedisClient, call: Call) -> Any:
        try:
            return await self._execute(client, call)
        except (RedisError, RedisClusterException) as exc:
            if getattr(call, "optional", False) and refused(exc):
                return exc  # refused, not unreachable: the plan decides what it means
            return await self._recover(client, call, exc)

    async def _recover(self, client: AsyncRedisClient, call: Call, exc: Exception) -> Any:
        """A call failed: send it again only when the core says that is safe (with
        backoff), else raise the mapped error. Off the hot path."""
        attempt, sent = 0, False
        if attempt_was_tls(self.settings, exc):
            # A TLS handshake with a plain-text server only times out: say so at once
            # instead of retrying it.
            refusal = await to_thread(tls_refusal, self.settings)
            if refusal is not None:
                raise refusal from exc
        while True:
            step = self._core.failures.decide(
                call, attempt, exc, sent, self._rng, bool(self.cluster)
            )
            if isinstance(step, CoordinatorError):
                raise step from exc
            attempt, sent = attempt + 1, step.sent
            if step.reconnect:
                # Connect afresh: a Sentinel-managed pool asks the sentinels again.
                pool = getattr(client, "connection_pool", None)
                if pool is not None:
                    await pool.disconnect(inuse_connections=False)
            elif step.refresh_topology:
                await self._refresh_topology(client)
            await sleep(step.delay)
            try:
                return await self._execute(client, call)
            except (RedisError, RedisClusterException) as again:
                exc = again

    async def _execute(self, client: AsyncRedisClient, call: Call) -> Any:
        if type(call) is Script:
            if self._durable and call.name in REPLICATED:
                return await self._execute_replicated(client, call)
            script = self._scripts[call.name]
            try:
                return await client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
            except NoScriptError:
                # The server restarted, failed over or flushed its scripts: load, rerun.
                await client.script_load(script.script)
                return await client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        if type(call) is Command:
            return await getattr(client, call.method)(*call.args, **call.kwargs)
        if type(call) is Sleep:
            await sleep(call.seconds)
            return None
        if type(call) is Offload:
            return await to_thread(call.run)
        if type(call) is Ahead:
            handle = ahead(self._call(client, call.call))
            # Let it write its request before the plan goes on working: redis-py's
            # pipeline writes in a task of its own, two loop iterations in (8.x).
            for _ in range(3):
                await sleep(0)
            return handle
        if type(call) is Collect:
            return await call.handle
        pipe = client.pipeline(transaction=False)
        for command in call.commands:  # type: ignore[union-attr]
            getattr(pipe, command.method)(*command.args, **command.kwargs)
        return await pipe.execute(raise_on_error=not call.errors_in_place)  # type: ignore[union-attr]

    async def _execute_replicated(self, client: AsyncRedisClient, call: Script) -> Any:
        """Durability mode: the script, then ``WAIT`` and/or ``WAITAOF``, pipelined on
        one connection to the master that runs it (both count what was written on
        their own connection). On a cluster that is a direct client of the slot's
        master, following MOVED and ASK itself: a redirected script did not run."""
        script = self._scripts[call.name]
        address = owner_address(client, call.keys[0]) if self.cluster else None
        asking = False
        waits = self._core.durability_commands
        for attempt in range(3):
            target = client if address is None else self._node(address)
            pipe = target.pipeline(transaction=False)
            if asking:
                pipe.execute_command("ASKING")
            pipe.execute_command("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args)
            for command in waits:
                pipe.execute_command(*command)
            try:
                replies = await pipe.execute(raise_on_error=False)
                reply = replies[-1 - len(waits)]
                if isinstance(reply, Exception):  # the script's own error: as before
                    raise reply
            except NoScriptError:
                if attempt == 2:
                    raise
                await target.script_load(script.script)
                continue
            except AskError as redirect:
                if address is None or attempt == 2:
                    raise
                if isinstance(redirect, MovedError):  # the slot has a new owner for good
                    await self._refresh_topology(client)
                    address, asking = owner_address(client, call.keys[0]), False
                else:  # migrating: only this call goes to the importing node
                    address, asking = (redirect.host, int(redirect.port)), True
                continue
            return self._core.check_durable(reply, replies[-len(waits) :])
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refresh_topology(self, client: AsyncRedisClient) -> None:
        """Re-read the cluster's slot map, e.g. after a slot's master failed over.
        Durability mode looks masters up in that map without sending the cluster client
        a command, so nothing else would make it notice."""
        with suppress(RedisError, RedisClusterException):
            await client.nodes_manager.initialize()  # type: ignore[union-attr]

    def _node(self, address: tuple[str, int]) -> AsyncRedisClient:
        nodes = self._link().nodes
        node = nodes.get(address)
        if node is None:  # redis-py connects lazily: a client lost in a race holds nothing
            fresh = open_async_client(node_settings(self.settings, *address), cluster=False)
            node = nodes.setdefault(address, fresh)
        return node
