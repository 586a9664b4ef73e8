"""Input validation: every argument is checked here before anything reaches Redis.

Validators raise :class:`~coordinator.errors.InvalidInputError` (a ``ValueError``).
Hot-path validators are cached, so a repeated agent id or project name costs one
dictionary lookup.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from coordinator import constants as C
from coordinator.errors import InvalidInputError

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
#: Session ids are minted by start_session: ``<token>-<16 hex>@<agent_id>``.
_SESSION_ID_RE = re.compile(r"([1-9][0-9]{0,18})-([0-9a-f]{16})@(.+)", re.DOTALL)


def _check_text(field: str, value: object, max_length: int, invisible: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidInputError(field, "must not be empty")
    if len(value) > max_length:
        raise InvalidInputError(
            field, f"is {len(value)} characters long; the limit is {max_length}"
        )
    if value != value.strip():
        raise InvalidInputError(field, "must not start or end with white space")
    for ch in value:
        # Cc: control characters; Cs: lone surrogates (not encodable); Zl/Zp: line breaks.
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs", "Zl", "Zp"):
            raise InvalidInputError(field, f"contains the control character {ch!r}")
        if category == "Cf" and not invisible:
            # Zero-width and bidi-control characters (U+200B, U+202E, ...) would let one
            # agent id pass for another in an operator's table.
            raise InvalidInputError(
                field, f"contains the invisible format character U+{ord(ch):04X} (Unicode Cf)"
            )
    return value


@lru_cache(maxsize=8192)
def _agent_id_cached(value: str) -> str:
    return _check_text("agent_id", value, C.MAX_AGENT_ID_LENGTH, invisible=False)


def agent_id(value: object) -> str:
    """An agent id: 1-128 characters, no control or invisible format characters
    (Unicode Cf: zero-width, bidi controls), no outer white space."""
    if type(value) is str:
        return _agent_id_cached(value)
    return _check_text("agent_id", value, C.MAX_AGENT_ID_LENGTH, invisible=False)


@lru_cache(maxsize=8192)
def _project_cached(value: str) -> str:
    return _check_text("project_name", value, C.MAX_PROJECT_NAME_LENGTH)


def project_name(value: object) -> str | None:
    """A project name (1-256 characters, no control characters) or None to clear."""
    if value is None:
        return None
    if type(value) is str:
        return _project_cached(value)
    return _check_text("project_name", value, C.MAX_PROJECT_NAME_LENGTH)


@lru_cache(maxsize=8192)
def _session_cached(value: str) -> tuple[str, int]:
    match = _SESSION_ID_RE.fullmatch(value)
    if match is None:
        raise InvalidInputError("session_id", f"{value[:80]!r} is not a session id of this system")
    owner = agent_id(match.group(3))
    return owner, int(match.group(1))


def session_id(value: object) -> tuple[str, int]:
    """Parse a session id minted by ``start_session``; returns (agent_id, fencing_token)."""
    if not isinstance(value, str):
        raise InvalidInputError("session_id", f"must be a string, not {type(value).__name__}")
    if len(value) > C.MAX_AGENT_ID_LENGTH + 40:
        raise InvalidInputError("session_id", "is too long to be a session id")
    return _session_cached(value)


def format_session_id(agent: str, token: int, nonce: str) -> str:
    """The inverse of :func:`session_id` (the Lua script builds the same string)."""
    return f"{token}-{nonce}@{agent}"


def version(value: object, field: str = "expected_version") -> int:
    """A non-negative integer version no larger than ``MAX_VERSION``."""
    if type(value) is not int:  # bool is an int subclass and is refused on purpose
        raise InvalidInputError(field, f"must be an integer, not {type(value).__name__}")
    if value < 0:
        raise InvalidInputError(field, "must not be negative")
    if value > C.MAX_VERSION:
        raise InvalidInputError(field, f"must be at most {C.MAX_VERSION}")
    return value


def optional_version(value: object, field: str = "expected_version") -> int | None:
    return None if value is None else version(value, field)


def request_id(value: object) -> str | None:
    """An idempotency key: 1-128 characters of ``[A-Za-z0-9._-]``, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError("request_id", f"must be a string, not {type(value).__name__}")
    if not 0 < len(value) <= C.MAX_REQUEST_ID_LENGTH or not _REQUEST_ID_RE.fullmatch(value):
        raise InvalidInputError(
            "request_id", f"must be 1-{C.MAX_REQUEST_ID_LENGTH} characters of A-Z a-z 0-9 . _ -"
        )
    return value


def namespace(value: object) -> str:
    """A namespace: 1-64 characters of ``[A-Za-z0-9_.-]`` (it becomes part of every key)."""
    if not isinstance(value, str):
        raise InvalidInputError("namespace", f"must be a string, not {type(value).__name__}")
    if not 0 < len(value) <= C.MAX_NAMESPACE_LENGTH or not _NAMESPACE_RE.fullmatch(value):
        raise InvalidInputError(
            "namespace", f"must be 1-{C.MAX_NAMESPACE_LENGTH} characters of A-Z a-z 0-9 _ . -"
        )
    return value


def metadata(value: object) -> str:
    """Encode metadata (a JSON object or None) compactly; '' means none."""
    if value is None:
        return ""
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            "metadata", f"must be a JSON object (dict), not {type(value).__name__}"
        )
    for key in value:
        if not isinstance(key, str):
            raise InvalidInputError("metadata", f"keys must be strings, not {type(key).__name__}")
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError("metadata", f"is not JSON-serialisable: {exc}") from None
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(
            "metadata", "contains characters that are not valid UTF-8"
        ) from None
    if size > C.MAX_METADATA_BYTES:
        raise InvalidInputError(
            "metadata", f"is {size} bytes as JSON; the limit is {C.MAX_METADATA_BYTES}"
        )
    return encoded


def ttl_seconds(value: object, field: str = "ttl") -> float:
    """A lease TTL in seconds within ``MIN_LEASE_TTL`` .. ``MAX_LEASE_TTL``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field, f"must be a number of seconds, not {type(value).__name__}")
    # A chained comparison also refuses NaN and infinities, and unlike math.isfinite
    # it cannot overflow on an int too large for a float.
    if not C.MIN_LEASE_TTL <= value <= C.MAX_LEASE_TTL:
        raise InvalidInputError(
            field, f"must be between {C.MIN_LEASE_TTL} and {C.MAX_LEASE_TTL:.0f} seconds"
        )
    return float(value)


def limit(value: object) -> int:
    """An event query limit: 1 .. ``MAX_EVENT_LIMIT``."""
    if type(value) is not int or not 0 < value <= C.MAX_EVENT_LIMIT:
        raise InvalidInputError("limit", f"must be an integer from 1 to {C.MAX_EVENT_LIMIT}")
    return value


def page_size(value: object) -> int:
    """Entries fetched per round trip by a listing: 1 .. ``MAX_PAGE_SIZE``."""
    if type(value) is not int or not 0 < value <= C.MAX_PAGE_SIZE:
        raise InvalidInputError("page_size", f"must be an integer from 1 to {C.MAX_PAGE_SIZE}")
    return value


def agent_ids(value: object) -> list[str]:
    """A list (or tuple) of agent ids; a lone string is refused, not split into letters."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InvalidInputError(
            "agent_ids", f"must be a list of agent ids, not {type(value).__name__}"
        )
    return [agent_id(a) for a in value]


def reason(value: object) -> str:
    """An operator's revoke reason: 1-512 characters, no control characters."""
    return _check_text("reason", value, 512)


def event_type(value: object) -> str | None:
    from coordinator.models import EventType

    if value is None:
        return None
    try:
        return EventType(str(value)).value
    except ValueError:
        raise InvalidInputError(
            # Cut: the message is one line even for a megabyte of input.
            "event_type",
            f"{str(value)[:80]!r} is not one of {', '.join(e.value for e in EventType)}",
        ) from None


def decode_metadata(raw: str | None) -> dict[str, Any] | None:
    """Inverse of :func:`metadata` for values read back from Redis or a sink."""
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else {"value": value}


def moment(field: str, value: object) -> datetime:
    """A ``since``/``until`` bound: a datetime (naive means UTC) from 1970 to 9999."""
    if not isinstance(value, datetime):
        raise InvalidInputError(field, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value < _EPOCH:
        raise InvalidInputError(field, "must not be before 1970-01-01 UTC")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def worker_name(field: str, value: object) -> str:
    """A consumer or group name: 1-128 characters of ``[A-Za-z0-9._-]``."""
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value) or len(value) > 128:
        raise InvalidInputError(field, "must be 1-128 characters of A-Z a-z 0-9 . _ -")
    return value


_LOGGED_TYPE: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def logged_event_type(value: object) -> str:
    """An application's own event type (``compat.log_agent_event``)."""
    if not isinstance(value, str) or not _LOGGED_TYPE.fullmatch(value):
        raise InvalidInputError("event_type", "must be 1-64 characters of A-Z a-z 0-9 _ . : -")
    return value


def optional_text(field: str, value: object, limit: int) -> str:
    """Free text up to ``limit`` characters; None becomes ``""``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInputError(field, f"is {len(value)} characters long; the limit is {limit}")
    return value


# --- reservations -------------------------------------------------------------------

#: Reservation modes and their one-letter form in the scripts.
RESERVATION_MODES: Final = {"exclusive": "x", "shared": "s"}


@lru_cache(maxsize=4096)
def _scope_cached(value: str) -> str:
    return _check_text("scope", value, C.MAX_SCOPE_LENGTH)


def scope(value: object) -> str:
    """A reservation scope: 1-256 characters, no control characters."""
    if type(value) is str:
        return _scope_cached(value)
    return _check_text("scope", value, C.MAX_SCOPE_LENGTH)


def resource_key(name: str) -> str:
    """The path a resource name stands for: trailing ``/`` (a directory) removed."""
    return name.rstrip("/")


def resource_parents(key: str) -> list[str]:
    """The path prefixes above a resource key (``a/b/c`` -> ``a``, ``a/b``); a
    leading ``/`` is not a prefix of its own. ``lua/lib.lua`` computes the same."""
    return [key[:i] for i, ch in enumerate(key) if ch == "/" and i > 0]


def overlapping(a: str, b: str) -> bool:
    """Whether two resource keys conflict: equal, or one a path prefix of the other."""
    if len(a) > len(b):
        a, b = b, a
    return a == b or b.startswith(a + "/")


def resources(value: object) -> tuple[str, ...]:
    """A non-empty list of distinct, non-overlapping resource names (1-512 characters,
    no control characters, no empty path component). A lone string is refused."""
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise InvalidInputError(
            "resources", f"must be a list of resource names, not {type(value).__name__}"
        )
    if not value:
        raise InvalidInputError("resources", "must name at least one resource")
    if len(value) > C.MAX_RESERVATION_RESOURCES:
        raise InvalidInputError(
            "resources", f"names {len(value)} resources; the limit is {C.MAX_RESERVATION_RESOURCES}"
        )
    names = tuple(_check_text("resources", v, C.MAX_RESOURCE_LENGTH) for v in value)
    keys: dict[str, str] = {}
    for name in names:
        key = resource_key(name)
        if not key or "//" in key:
            raise InvalidInputError("resources", f"{name[:80]!r} has an empty path component")
        if key in keys:
            raise InvalidInputError("resources", f"{name[:80]!r} is named twice")
        keys[key] = name
    for key in keys:
        for parent in resource_parents(key):
            if parent in keys:
                raise InvalidInputError(
                    "resources", f"{keys[key][:80]!r} lies beneath {keys[parent][:80]!r}"
                )
    return names


def reservation_mode(value: object) -> str:
    """``exclusive`` or ``shared``, as the scripts' one letter."""
    letter = RESERVATION_MODES.get(value) if isinstance(value, str) else None
    if letter is None:
        raise InvalidInputError("mode", "must be 'exclusive' or 'shared'")
    return letter


def reservation_reason(value: object) -> str:
    """An optional reason (None or 1-512 characters)."""
    if value is None:
        return ""
    return _check_text("reason", value, C.MAX_RESERVATION_REASON_LENGTH)


def wait_seconds(value: object) -> float | None:
    """``wait=``: None (do not wait) or 0 .. ``MAX_RESERVATION_WAIT`` seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError("wait", f"must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value <= C.MAX_RESERVATION_WAIT:
        raise InvalidInputError("wait", f"must be between 0 and {C.MAX_RESERVATION_WAIT:.0f} s")
    return float(value)


_RESERVATION_ID_RE: Final = re.compile(r"([0-9]{1,4})\.[0-9a-f]{16}")


def reservation_id(value: object) -> tuple[str, int]:
    """A reservation id (``<shard>.<16 hex>``) and the shard it names."""
    if type(value) is not str or not (match := _RESERVATION_ID_RE.fullmatch(value)):
        raise InvalidInputError("reservation_id", f"{str(value)[:80]!r} is not a reservation id")
    return value, int(match.group(1))
