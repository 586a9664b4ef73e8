"""Auto-pipelining for the asyncio client: concurrent calls share one round trip.

Fifty tasks sharing one ``AsyncCoordinator`` each send an ``EVALSHA`` and wait for its
reply; Redis answers them in a few microseconds each, so the time goes to the client's
per-call overhead and to one socket write and read per call. ioredis'
``enableAutoPipelining`` and Go's rueidis gather the calls issued in the same event-loop
turn and write them together; this does the same.

How a batch forms: the first caller of a loop turn becomes its *leader*; it yields once
(``sleep(0)``), which runs every task already ready in that turn, and each of those
that calls in joins the batch instead of sending. A leader that finds itself alone sends
its call itself (the same direct way as a batch, below; on a cluster through the
cluster client), so a lone caller pays one loop iteration and nothing else: there is no
timer. A batch is sent by a task of its own, so a caller cancelled while it waits never
strands the others. While a batch is in flight the next turn's calls form the next
batch, on another connection of the pool.

How a batch is sent: on a single node (or the master a Sentinel names) the batch's
commands are packed at once (hiredis' packer) and written in one piece on a connection
of the client's own pool, and the replies are read back off that connection in order,
without redis-py's pipeline object (its per-command bookkeeping and response callbacks
cost as much as the rest of a call). On a cluster, each master gets the batch of the
calls whose first key it serves, on its own connections; a call a node redirects
(``MOVED``, ``ASK``: it did not run there) is sent again through the cluster client,
which follows the redirection (as redis-py's cluster pipeline does). Other clients
(a subclass, a single-connection client) batch through their own pipeline.

What each caller gets back is exactly what a lone call would have produced: its own
reply, or its own error reply raised (``NOSCRIPT``, a script's refusal, an ACL denial),
handled by the caller's usual recovery. If the connection fails, the calls whose reply
had already arrived keep it; every later call of the batch gets the connection error,
and the caller's recovery decides, as for a lone call, whether the write may have been
applied (it may have, once the batch reached the wire; not when connecting failed).
"""

from __future__ import annotations

import inspect
from asyncio import CancelledError, Future, Task, gather, get_running_loop, sleep, timeout
from contextlib import suppress
from typing import Any

from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import AskError, ConnectionError, DataError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coordinator.connection import AsyncRedisClient

#: hiredis' command packer (redis[hiredis] is a dependency; None without it).
_hiredis_pack: Any = None
#: What redis-py's hiredis parser returns while a reply is incomplete, its class and
#: redis-py's connection base class: with another redis-py, replies are read through
#: the connection's own ``read_response`` only.
_NO_DATA: Any = object()
_HiredisParser: Any = None
_BaseConnection: Any = None
with suppress(ImportError):
    from hiredis import pack_command

    _hiredis_pack = pack_command
with suppress(ImportError, AttributeError, OSError, TypeError):
    from redis._parsers import hiredis as _parsers
    from redis.asyncio import connection as _connections

    # Only a parser whose reader marks an incomplete reply with that object (not with
    # False, which older hiredis readers return by default).
    if "notEnoughData" in inspect.getsource(_parsers._AsyncHiredisParser.on_connect):
        _NO_DATA = _parsers.NOT_ENOUGH_DATA
        _HiredisParser = _parsers._AsyncHiredisParser
        _BaseConnection = _connections.AbstractConnection

#: What redis-py's Sentinel connection raises when its primary was demoted (the
#: coordinator's failure policy recognises the text: coordinator.failures.read_only).
_DEMOTED = "The previous master is now a slave"
#: The error a demoted primary unblocks blocked clients with (redis-py 8).
_UNBLOCKED = "UNBLOCKED force unblock from blocking operation"
#: Reply types that need no further look (errors, pushes and "no data yet" do).
_PLAIN = frozenset({list, int, str, bytes, type(None)})

_Entry = tuple[tuple[Any, ...], "Future[Any]"]


class AutoPipeline:
    """Sends the calls made by concurrent tasks of one event loop together."""

    __slots__ = (
        "_acquire",
        "_cluster",
        "_demote",
        "_direct_read",
        "_gathering",
        "_pack",
        "_pool",
        "_read",
        "_sending",
        "client",
    )

    def __init__(self, client: AsyncRedisClient) -> None:
        self.client = client
        #: The batch the current loop turn's leader is gathering, if any.
        self._gathering: list[_Entry] | None = None
        #: Batches on the wire (held so the loop does not drop their tasks).
        self._sending: set[Task[None]] = set()
        #: The pool whose connections carry the batches (None: a cluster client, or one
        #: not built by redis-py: its pipeline is used instead).
        self._pool: Any = _direct_pool(client)
        #: A cluster client whose masters' connections carry the batches, one per node.
        self._cluster: Any = _direct_cluster(client)
        self._acquire: Any = None
        self._pack: Any = None
        self._read: Any = None
        self._direct_read = False
        self._demote: Any = None
        if self._pool is not None:
            self._acquire = _acquirer(self._pool)
            self._pack = _packer(self._pool.connection_kwargs)
            self._read, self._direct_read, self._demote = _reading(self._pool)
        elif self._cluster is not None:
            self._pack = _packer(self._cluster.get_default_node().connection_kwargs)
            self._read, self._direct_read, self._demote = _reading(self._cluster.get_default_node())

    async def execute_command(self, *args: Any) -> Any:
        """Send one command (in a batch when other tasks call in the same turn) and
        return its reply; raise its error reply or the batch's connection error."""
        batch = self._gathering
        if batch is not None:
            future: Future[Any] = get_running_loop().create_future()
            batch.append((args, future))
            return await future
        batch = self._gathering = []
        try:
            await sleep(0)  # let the tasks ready in this turn join
        except CancelledError:
            self._gathering = None
            if batch:
                self._send(batch)
            raise
        self._gathering = None
        if not batch:  # alone: sent at once, by the caller itself
            if self._pool is None:
                return await self.client.execute_command(*args)
            own: Future[Any] = get_running_loop().create_future()
            await self._direct([(args, own)])
            return await own  # done: its reply, or its error raised
        own = get_running_loop().create_future()
        batch.insert(0, (args, own))  # the leader called first
        self._send(batch)
        return await own

    def _send(self, batch: list[_Entry]) -> None:
        task = get_running_loop().create_task(self._pipeline(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _pipeline(self, batch: list[_Entry]) -> None:
        if self._pool is not None:
            await self._direct(batch)
        elif self._cluster is not None:
            await self._per_node(batch)
        else:
            await self._redis_pipeline(batch)

    async def _per_node(self, batch: list[_Entry]) -> None:
        """A cluster batch: one direct batch per master (by each script's first key);
        a call the server redirected (MOVED, ASK: it did not run) is sent again through
        the cluster client, which follows the redirection, as redis-py's cluster
        pipeline does."""
        groups: dict[Any, list[_Entry]] = {}
        other: list[_Entry] = []
        for entry in batch:
            node = _node_of(self._cluster, entry[0])
            if node is None:
                other.append(entry)
            else:
                groups.setdefault(node, []).append(entry)
        sends = [self._node_batch(node, entries) for node, entries in groups.items()]
        if other:
            sends.append(self._redis_pipeline(other))
        if len(sends) == 1:
            await sends[0]
        else:
            await gather(*sends)

    async def _node_batch(self, node: Any, batch: list[_Entry]) -> None:
        try:
            connection = node.acquire_connection()
        except Exception as exc:  # no connection left: nothing was sent
            _fail(batch, exc)
            return
        redirected: list[_Entry] = []
        try:
            await self._exchange(connection, batch, redirected)
        finally:
            _release(node, connection)
        for args, future in redirected:
            try:
                reply = await self._cluster.execute_command(*args)
            except CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(reply)

    async def _direct(self, batch: list[_Entry]) -> None:
        """Send ``batch`` on a connection of the pool; every call's future gets its
        reply, its error or the connection's."""
        try:
            connection = await self._acquire()
        except CancelledError:  # the loop is shutting down
            _cancel(batch)
            raise
        except Exception as exc:  # connecting failed: nothing was sent
            _fail(batch, exc)
            return
        try:
            await self._exchange(connection, batch)
        finally:
            await self._pool.release(connection)

    async def _exchange(
        self, connection: Any, batch: list[_Entry], redirected: list[_Entry] | None = None
    ) -> None:
        """Write the batch on ``connection`` and hand each caller its reply. A failure
        fails the calls still waiting and closes the connection (its unread replies
        would answer the next batch)."""
        packed = self._pack(connection, batch)
        if not packed:
            return
        try:
            await _write(connection, packed)
            demoted = await self._read_replies(connection, batch, redirected)
        except CancelledError:  # the loop is shutting down
            _cancel(batch)
            await connection.disconnect(nowait=True)
            raise
        except Exception as exc:
            _fail(batch, exc)
            await connection.disconnect(nowait=True)
            return
        if demoted:  # what redis-py's Sentinel connection does: ask the sentinels again
            await connection.disconnect()

    async def _read_replies(
        self, connection: Any, batch: list[_Entry], redirected: list[_Entry] | None
    ) -> bool:
        """Hand each caller its reply or error reply, in order; raise if the connection
        fails. True when the server answered as a demoted Sentinel-managed primary.
        Calls a cluster node redirected go to ``redirected`` instead."""
        gets, parser = _buffered_reader(connection, self._direct_read)
        read = self._read.__get__(connection)
        demote = self._demote
        demoted = False
        for args, future in batch:
            if future is None:  # refused by the packer: its caller has its error
                continue
            # Replies already received are taken straight from the parser's buffer;
            # redis-py's read (timeout, errors, disconnecting) runs when it is empty.
            reply = gets()
            if type(reply) not in _PLAIN and reply is not _NO_DATA:
                reply = await _after_pushes(reply, gets, parser)
            if reply is _NO_DATA:
                try:
                    reply = await read()
                except ResponseError as error:  # this call's own error reply
                    reply = error
            if isinstance(reply, ResponseError):
                if redirected is not None and isinstance(reply, AskError):  # MOVED too
                    redirected.append((args, future))
                    continue
                if demote is not None and demote(reply):
                    demoted = True
                    reply = ConnectionError(_DEMOTED)
            elif isinstance(reply, ConnectionError):  # what redis-py raises, not returns
                raise reply
            _settle(future, reply)
        return demoted

    async def _redis_pipeline(self, batch: list[_Entry]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except CancelledError:  # the loop is shutting down
            _cancel(batch)
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            _settle(future, reply)


async def _write(connection: Any, packed: bytes) -> None:
    """Write ``packed`` on ``connection``. When it is connected, the bytes go to its
    transport at once, and only a full send buffer is waited for (redis-py's
    ``send_packed_command`` runs every write in a task of its own under
    ``wait_for``: two loop iterations per call); otherwise redis-py connects and
    writes, with its own error handling."""
    writer: Any = getattr(connection, "_writer", None)
    transport: Any = getattr(writer, "transport", None)
    if transport is None or transport.is_closing() or getattr(connection, "_reader", None) is None:
        await connection.send_packed_command(packed, check_health=False)
        return
    try:
        writer.write(packed)  # a lost connection shows at drain() or at the read
    except Exception as exc:  # e.g. a transport closed in between: as redis-py words it
        raise ConnectionError(f"Error while writing to socket. {exc}.") from exc
    if not transport.get_write_buffer_size():
        return  # all of it is in the socket already
    try:
        async with timeout(connection.socket_timeout):
            await writer.drain()
    except TimeoutError:
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        raise ConnectionError(f"Error {exc.errno} while writing to socket. {exc}.") from exc


def _settle(future: Future[Any], reply: Any) -> None:
    """Hand a caller its reply (an error reply raised), unless it was cancelled."""
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def _cancel(batch: list[_Entry]) -> None:
    for _, future in batch:
        if future is not None:
            future.cancel()


def _fail(batch: list[_Entry], exc: BaseException) -> None:
    """Fail the calls still waiting (the others have their reply)."""
    for _, future in batch:
        if future is not None and not future.done():
            future.set_exception(exc)


def _direct_pool(client: Any) -> Any:
    """The connection pool of a single-node or Sentinel client built by redis-py, whose
    connections this module may write on directly; None for anything else."""
    import redis.asyncio

    if type(client) is not redis.asyncio.Redis or getattr(client, "single_connection_client", True):
        return None  # a subclass, a fake, a cluster or a single-connection client
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, redis.asyncio.ConnectionPool):
        return None
    return pool


def _direct_cluster(client: Any) -> Any:
    """``client`` when it is redis-py's own asyncio cluster client, whose nodes'
    connections this module may write on directly; else None."""
    import redis.asyncio.cluster

    if type(client) is not redis.asyncio.cluster.RedisCluster:
        return None
    node = client.get_default_node()
    if node is None or not hasattr(node, "acquire_connection"):
        return None
    return client


def _node_of(cluster: Any, args: tuple[Any, ...]) -> Any:
    """The master serving a script call (by its first key), or None: not a script
    with keys, or a slot the client's map does not cover (the cluster pipeline then
    raises what redis-py raises)."""
    if len(args) < 4 or args[0] not in ("EVALSHA", "EVAL") or args[2] in (0, "0"):
        return None
    try:
        return cluster.get_node_from_key(args[3])
    except Exception:
        return None


def _release(node: Any, connection: Any) -> None:
    release = getattr(node, "release", None)
    if release is not None:
        release(connection)
    else:  # redis-py before release(): what its own commands do
        node._free.append(connection)


def _acquirer(pool: Any) -> Any:
    """``pool.get_connection`` called as the installed redis-py wants it (5.3 and
    later take no arguments, earlier ones the command name)."""
    params = inspect.signature(pool.get_connection).parameters
    first = next(iter(params.values()), None)
    if first is None or first.default is not inspect.Parameter.empty:
        return pool.get_connection
    return lambda: pool.get_connection("EVALSHA")


def _packer(kwargs: dict[str, Any]) -> Any:
    """How a batch becomes bytes: hiredis' packer when the connections (made with
    ``kwargs``) encode text as UTF-8 (as it does), else each connection's own."""
    utf8 = str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-") in ("utf-8", "utf8")
    if _hiredis_pack is None or not utf8:
        return _pack_generic
    return _pack_hiredis


def _pack_hiredis(connection: Any, batch: list[_Entry]) -> bytes:
    pack = _hiredis_pack
    try:
        return b"".join([pack(args) for args, _ in batch])
    except TypeError:  # an argument hiredis does not pack: redis-py names it
        return _pack_generic(connection, batch)


def _pack_generic(connection: Any, batch: list[_Entry]) -> bytes:
    """Each command through the connection's packer; a command it refuses fails its
    own caller (a DataError, as a lone call would) and leaves the batch."""
    pieces: list[bytes] = []
    for index, (args, future) in enumerate(batch):
        try:
            pieces += connection.pack_command(*args)
        except DataError as exc:
            if not future.done():
                future.set_exception(exc)
            batch[index] = (args, None)  # type: ignore[assignment]
    return b"".join(pieces)


def _no_buffer() -> Any:
    return _NO_DATA


def _buffered_reader(connection: Any, allowed: bool) -> tuple[Any, Any]:
    """(gets, parser): ``gets()`` returns the next reply already in ``connection``'s
    buffer, or ``_NO_DATA``; taken from redis-py's hiredis parser directly when
    ``allowed`` (see :func:`_reading`) and the connection has that parser."""
    parser: Any = connection._parser if allowed else None
    if type(parser) is not _HiredisParser or not parser._connected:
        return _no_buffer, None
    return parser._reader.gets, parser


def _reading(pool: Any) -> tuple[Any, bool, Any]:
    """How replies are read on ``pool``'s connections (a pool or a cluster node):
    (read_response as an unbound function, whether replies may be taken from the
    parser's buffer directly, the test of a reply that means "this primary was
    demoted" or None).

    A Sentinel-managed primary's connection turns a ``READONLY`` reply into a
    ConnectionError after closing itself (the primary was demoted): that would lose
    the later replies of a batch, each of which tells whether its call ran. Batches
    read with the plain connection's reader and do the same per call instead."""
    kind = pool.connection_class
    read = kind.read_response
    demote = None
    if issubclass(kind, SentinelManagedConnection) and getattr(pool, "is_master", False):
        # The reader SentinelManagedConnection wraps: the next one in the MRO.
        mro = kind.__mro__
        for base in mro[mro.index(SentinelManagedConnection) + 1 :]:
            if "read_response" in vars(base):
                read = vars(base)["read_response"]
                break
        demote = _demoted
    direct = (
        _BaseConnection is not None
        and read is _BaseConnection.read_response
        # getattr: a redis-py without this private method reads the plain way
        and getattr(kind, "_read_response_from_parser", None)
        is getattr(_BaseConnection, "_read_response_from_parser", False)
    )
    return read, direct, demote


def _demoted(reply: ResponseError) -> bool:
    """What redis-py's Sentinel connection reads as "the primary was demoted"."""
    return isinstance(reply, ReadOnlyError) or str(reply).startswith(_UNBLOCKED)


async def _after_pushes(reply: Any, gets: Any, parser: Any) -> Any:
    """The reply after any RESP3 pushes (none is expected: no client tracking, no
    subscriptions on these connections), each handed to redis-py's parser."""
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    while push is not None and isinstance(reply, push):
        await parser.handle_push_response(reply)
        reply = gets()
    return reply
