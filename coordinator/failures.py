"""Redis failures: what they mean, whether to try again, and which exception to raise.

Pure: the one mapping from redis-py errors to the package's exceptions, and the one
retry decision, shared by both client shells and the worker. The shells obey
:meth:`Failures.decide`; nothing else in the package chooses to resend a call.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Final

import redis.exceptions as rx
from redis.sentinel import MasterNotFoundError

from coordinator.calls import Call, Command, Script
from coordinator.errors import (
    AccessDenied,
    ConfigurationError,
    CoordinatorError,
    CoordinatorUnavailable,
    DurabilityUnsupported,
    RedisOutOfMemory,
    UnexpectedReply,
)
from coordinator.scripts import SCRIPT_NAMES

#: Scripts that change state (an unknown outcome matters for these): all but these.
WRITES: Final = frozenset(SCRIPT_NAMES) - {
    "init_namespace",
    "heartbeat",
    "read_leases",
    "read_records",
}

#: Scripts whose changes durability mode waits for: every one but the namespace check,
#: which any client repeats with the same values.
REPLICATED: Final = WRITES | {"heartbeat"}

#: Errors after which an idempotent call is retried.
RETRYABLE: Final = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.TryAgainError,
    rx.ClusterDownError,
)

#: The server's TLS certificate did not verify (Python's ssl module): retrying cannot help.
_TLS_UNVERIFIED: Final = "CERTIFICATE_VERIFY_FAILED"
#: redis-py's Sentinel connection turns READONLY from a demoted primary into this.
_DEMOTED_PRIMARY: Final = "previous master is now a slave"

#: An error code: the first word of an error reply (``-NOSCRIPT No matching script``).
_CODE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: Redis 6.2 wraps the error of a command run by a script in a generic ``ERR``:
#: ``Error running script (call to f_<sha>): @user_script:<line>: <CODE> <text>``
#: (or ``... @user_script: <line>: -<CODE> <text>``); Redis 7 and Valkey pass the
#: command's own code through.
_SCRIPT_WRAPPED: Final = re.compile(r"@user_script: ?\d+: -?([A-Z][A-Z0-9_]{0,63}) ")
#: Codes that redis-py moves from the message into the exception class (redis-py
#: before 6 keeps no ``status_code``), most specific class first.
_CODES_BY_CLASS: Final = (
    (rx.NoScriptError, "NOSCRIPT"),
    (rx.ReadOnlyError, "READONLY"),
    (rx.NoPermissionError, "NOPERM"),
    (rx.OutOfMemoryError, "OOM"),
    (rx.BusyLoadingError, "LOADING"),
    (rx.ExecAbortError, "EXECABORT"),
    (rx.TryAgainError, "TRYAGAIN"),
    (rx.MovedError, "MOVED"),
    (rx.AskError, "ASK"),
    (rx.MasterDownError, "MASTERDOWN"),
    (rx.ClusterDownError, "CLUSTERDOWN"),
    (rx.ClusterCrossSlotError, "CROSSSLOT"),
)


def error_code(exc: BaseException) -> str | None:
    """The code of a Redis error reply (``NOSCRIPT``, ``READONLY``, ``NOGROUP``,
    ``ERR`` for the generic one), or None when ``exc`` is no error reply.

    Redis and Valkey word their errors differently (Valkey rewrote the ``NOSCRIPT``
    and script error texts) but agree on the codes, so decisions are taken on codes,
    never on message text. A Redis 6.2 script error reports the code of the failed
    command it wraps.
    """
    if not isinstance(exc, rx.ResponseError):
        return None
    code: str | None = getattr(exc, "status_code", None)
    if code is None:
        for cls, known in _CODES_BY_CLASS:
            if isinstance(exc, cls):
                code = known
                break
        else:
            first = str(exc).split(" ", 1)[0]
            code = first if _CODE.fullmatch(first) else "ERR"
    if code == "ERR":
        wrapped = _SCRIPT_WRAPPED.search(str(exc))
        if wrapped is not None:
            return wrapped.group(1)
    return code


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with "equal jitter" (AWS's name): attempt ``n``
    waits a uniform time in ``[c/2, c]`` with ``c = min(cap, base * 2**n)``. Half the
    delay is fixed, so a retry loop never spins at zero delay; the other half spreads
    the clients that failed together."""

    base: float
    cap: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 30))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the call again after ``delay`` seconds; first reconnect (``reconnect``: a
    demoted primary, a Sentinel client finds the new one) or re-read the cluster's
    slot map (``refresh_topology``). ``sent``: some attempt may have reached the server."""

    delay: float
    sent: bool
    reconnect: bool = False
    refresh_topology: bool = False


class Failures:
    """Error mapping and retry decisions for one Redis deployment (named in messages by
    its password-free URL)."""

    def __init__(self, safe_url: str, attempts: int, backoff: Backoff) -> None:
        self.safe_url = safe_url
        self.attempts = max(attempts, 1)
        self.backoff = backoff

    def decide(
        self,
        call: Call,
        attempt: int,
        exc: BaseException,
        sent: bool,
        rng: random.Random,
        cluster: bool = False,
    ) -> Retry | CoordinatorError:
        """What to do after attempt ``attempt`` (0-based) of ``call`` failed with ``exc``:
        a :class:`Retry`, or the exception to raise. ``sent``: an earlier attempt may have
        reached the server (a write's outcome then stays unknown whatever a later
        attempt's error says: a refused reconnect proves nothing)."""
        if not retryable(exc):
            return self.redis_error(exc, call, sent)
        sent = sent or not not_applied(exc)
        delay = self.retry_delay(call, attempt, exc, rng)
        if delay is None:
            return self.unavailable(exc, call, sent)
        demoted = read_only(exc)
        return Retry(delay, sent, demoted, not demoted and cluster and node_lost(exc))

    def retry_delay(
        self, call: Call, attempt: int, exc: BaseException, rng: random.Random
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt + 1 >= self.attempts:
            return None
        if not (call.retry or not_applied(exc)) or _TLS_UNVERIFIED in str(exc):
            return None
        return self.backoff.delay(attempt, rng)

    def unavailable(
        self, exc: BaseException, call: Call | None = None, sent: bool = False
    ) -> CoordinatorUnavailable:
        """``sent``: an earlier attempt of the call may have reached the server."""
        maybe = isinstance(call, Script) and call.name in WRITES and (sent or not not_applied(exc))
        hint = ""
        if maybe:
            assert call is not None
            hint = " (the write may have been applied; " + (
                "retry with the same request_id)"
                if call.retry
                else "pass a request_id to retry safely)"
            )
        if _TLS_UNVERIFIED in str(exc):
            hint = " (the server's certificate is not signed by a CA in tls_ca_certs)"
        return CoordinatorUnavailable(
            f"Redis at {self.safe_url} is unavailable: {exc}{hint}", maybe_applied=maybe
        )

    def redis_error(
        self, exc: BaseException, call: Call | None = None, sent: bool = False
    ) -> CoordinatorError:
        """Map a Redis (or Redis Cluster client) error to the package's exceptions."""
        if isinstance(exc, rx.RedisClusterException):
            return CoordinatorUnavailable(f"Redis Cluster at {self.safe_url} is unavailable: {exc}")
        code = error_code(exc)
        if isinstance(exc, rx.NoPermissionError | rx.AuthenticationError | rx.AuthorizationError):
            return AccessDenied(f"Redis at {self.safe_url} refused access: {exc}")
        if code == "ERR" and isinstance(call, Script):
            # A command refused by ACL inside a script has no code of its own (Redis
            # and Valkey answer ``ERR`` with different texts), and the scripts raise
            # no error themselves: a script's ERR is a refusal of one of its commands
            # or keys.
            return AccessDenied(
                f"Redis at {self.safe_url} refused access to a command or key of the "
                f"{call.name} script (ACL): {exc}"
            )
        if code == "OOM":
            # Refused before anything ran (a script is refused at its first write, or
            # not at all): nothing was written. No policy advice: the safe policy,
            # noeviction, is what makes a full server refuse.
            return RedisOutOfMemory(
                f"Redis at {self.safe_url} is out of memory (maxmemory reached) and refused "
                "the write; nothing was written. Reads still work; memory is freed as the "
                "worker persists and trims the audit streams: check that a worker is alive "
                "(coordinator health), or raise maxmemory"
            )
        if isinstance(exc, rx.AskError):  # MovedError too: a cluster client follows both
            return ConfigurationError(
                f"Redis at {self.safe_url} is a Redis Cluster node and "
                f"redirected the call ({exc}); connect in cluster mode (cluster=True, "
                "COORDINATOR_REDIS_CLUSTER=1, or leave it unset to detect)"
            )
        if retryable(exc) or (call is None and isinstance(exc, rx.RedisError | OSError)):
            return self.unavailable(exc, call, sent)
        if isinstance(exc, rx.ResponseError) and _waitaof(call):
            # No such command (Redis < 7.2), appendonly off, or a replica: by the answer.
            return DurabilityUnsupported(self.safe_url, str(exc))
        name = call.name if isinstance(call, Script) else type(call).__name__
        return UnexpectedReply(f"Redis answered {name} with an error: {exc}")


def _waitaof(call: Call | None) -> bool:
    return isinstance(call, Command) and bool(call.args) and call.args[0] == "WAITAOF"


def retryable(exc: BaseException) -> bool:
    """Errors after which an idempotent call (or a write that surely did not run) is
    sent again."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return False  # redis-py files them under ConnectionError; retrying cannot help
    if isinstance(exc, rx.NoScriptError):
        # The script did not run. The shells load it and run it again at once; this is
        # a second NOSCRIPT (scripts flushed again in between): try again after backoff.
        return True
    return isinstance(exc, RETRYABLE) or error_code(exc) == "NOREPLICAS" or read_only(exc)


def out_of_memory(exc: BaseException) -> bool:
    """Redis at ``maxmemory`` refused a command (or a script at its first write)."""
    return error_code(exc) == "OOM"


def refused(exc: BaseException) -> bool:
    """The server answered with an error that no retry changes (an unknown or forbidden
    command, a write at ``maxmemory``): what an optional call hands to its plan."""
    return isinstance(exc, rx.ResponseError) and not retryable(exc)


def node_lost(exc: BaseException) -> bool:
    """The node serving the call failed or left: a cluster client should re-read the
    slot map before the next attempt."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return False
    return isinstance(
        exc, rx.ConnectionError | rx.TimeoutError | rx.ClusterDownError | rx.SlotNotCoveredError
    )


def read_only(exc: BaseException) -> bool:
    """The node answered as a replica: typically a primary demoted by a failover, so
    the client should connect afresh (a Sentinel client then finds the new primary)."""
    if isinstance(exc, rx.ReadOnlyError):
        return True
    if isinstance(exc, rx.ConnectionError):
        return _DEMOTED_PRIMARY in str(exc)  # redis-py's own wording, not the server's
    return error_code(exc) == "READONLY"  # also wrapped in a Redis 6.2 script error


def not_applied(exc: BaseException) -> bool:
    """True when the failed command certainly did not run, so even a write may be resent.

    A refused connection, a full connection pool (no connection to send on), a
    loading or read-only replica (also as reported by the Sentinel client after a
    failover), a primary without enough replicas, a sentinel that knows no primary
    and a cluster that is down all reject the command before executing it; a timeout
    or a dropped connection after sending does not tell.
    """
    if isinstance(
        exc,
        rx.MaxConnectionsError
        | rx.BusyLoadingError
        | rx.NoScriptError
        | rx.ReadOnlyError
        | rx.TryAgainError
        | rx.ClusterDownError
        | MasterNotFoundError,
    ):
        return True
    if isinstance(exc, rx.AuthenticationError):
        return False
    if read_only(exc):  # a replica runs no write (a script fails at its first one)
        return True
    if isinstance(exc, rx.ResponseError):
        return error_code(exc) == "NOREPLICAS"
    # redis-py words connect-phase failures as "Error <errno> connecting to <addr>".
    return isinstance(exc, rx.ConnectionError) and " connecting to " in str(exc)
