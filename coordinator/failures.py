"""Redis failures: what they mean, whether to try again, and which exception to raise.

Pure: the one mapping from redis-py errors to the package's exceptions, and the one
retry decision, shared by both client shells and the worker. The shells obey
:meth:`Failures.decide`; nothing else in the package chooses to resend a call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

import redis.exceptions as rx
from redis.sentinel import MasterNotFoundError

from coordinator.calls import Call, Script
from coordinator.errors import (
    AccessDenied,
    ConfigurationError,
    CoordinatorError,
    CoordinatorUnavailable,
    UnexpectedReply,
)
from coordinator.scripts import SCRIPT_NAMES

#: Scripts that change state (an unknown outcome matters for these): all but these.
WRITES: Final = frozenset(SCRIPT_NAMES) - {"init_namespace", "heartbeat", "read_leases"}

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

#: How Redis words an ACL refusal of a command run inside a script (6.2 and 7).
_SCRIPT_ACL_REFUSALS: Final = (
    "user executing the script can't run this command",
    "user executing the script can't access at least one of the keys",
)
#: The server's TLS certificate did not verify: retrying cannot help.
_TLS_UNVERIFIED: Final = "CERTIFICATE_VERIFY_FAILED"
#: The primary refused a write for lack of replicas (``min-replicas-to-write``).
_NO_REPLICAS: Final = "NOREPLICAS"
#: redis-py's Sentinel connection turns READONLY from a demoted primary into this.
_DEMOTED_PRIMARY: Final = "previous master is now a slave"
#: A replica's refusal; Redis 6.2 wraps it in a script error when a script writes.
_READ_ONLY: Final = "READONLY You can't write against a read only replica"


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
        if isinstance(
            exc, rx.NoPermissionError | rx.AuthenticationError | rx.AuthorizationError
        ) or any(refusal in str(exc) for refusal in _SCRIPT_ACL_REFUSALS):
            return AccessDenied(f"Redis at {self.safe_url} refused access: {exc}")
        if isinstance(exc, rx.OutOfMemoryError):
            return CoordinatorUnavailable(
                f"Redis at {self.safe_url} is out of memory and refused the "
                "write (run it with maxmemory-policy noeviction and enough headroom)"
            )
        if isinstance(exc, rx.AskError):  # MovedError too: a cluster client follows both
            return ConfigurationError(
                f"Redis at {self.safe_url} is a Redis Cluster node and "
                f"redirected the call ({exc}); connect in cluster mode (cluster=True, "
                "COORDINATOR_REDIS_CLUSTER=1, or leave it unset to detect)"
            )
        if retryable(exc) or (call is None and isinstance(exc, rx.RedisError | OSError)):
            return self.unavailable(exc, call, sent)
        name = call.name if isinstance(call, Script) else type(call).__name__
        return UnexpectedReply(f"Redis answered {name} with an error: {exc}")


def retryable(exc: BaseException) -> bool:
    """Errors after which an idempotent call (or a write that surely did not run) is
    sent again."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return False  # redis-py files them under ConnectionError; retrying cannot help
    return (
        isinstance(exc, RETRYABLE)
        or (isinstance(exc, rx.ResponseError) and _NO_REPLICAS in str(exc))
        or read_only(exc)
    )


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
        return _DEMOTED_PRIMARY in str(exc)
    return isinstance(exc, rx.ResponseError) and _READ_ONLY in str(exc)


def not_applied(exc: BaseException) -> bool:
    """True when the failed command certainly did not run, so even a write may be resent.

    A refused connection, a loading or read-only replica (also as reported by the
    Sentinel client after a failover), a primary without enough replicas, a
    sentinel that knows no primary and a cluster that is down all reject the
    command before executing it; a timeout or a dropped connection after sending
    does not tell.
    """
    if isinstance(
        exc,
        rx.BusyLoadingError
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
        return _NO_REPLICAS in str(exc)
    # redis-py words connect-phase failures as "Error <errno> connecting to <addr>".
    return isinstance(exc, rx.ConnectionError) and " connecting to " in str(exc)
