"""One settings object: explicit arguments first, then ``COORDINATOR_*`` variables, then defaults.

Passwords are kept out of URLs and reprs: ``Settings.from_url("redis://u:pw@h/0")``
stores ``redis_url="redis://u@h/0"`` and the password as a :class:`~pydantic.SecretStr`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from coordinator import constants as C
from coordinator import validation
from coordinator.errors import InvalidInputError

#: Field name -> environment variable (without the prefix), where they differ.
_ENV_NAMES: Mapping[str, str] = {
    "cluster": "REDIS_CLUSTER",
    "password": "REDIS_PASSWORD",
    "username": "REDIS_USERNAME",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print or log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=_netloc(parts, "***")))


def _netloc(parts: SplitResult, password: str | None) -> str:
    # netloc may hold several comma-separated hosts (Sentinel, Cluster seeds): keep them.
    hosts = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    if password is None:
        return f"{user}@{hosts}" if user else hosts
    return f"{user}:{password}@{hosts}"


def parse_url(url: str) -> SplitResult:
    """``urlsplit``, with its ValueError (a malformed IPv6 address, say) as an
    InvalidInputError that does not echo the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        parts.password  # noqa: B018 (parsed lazily: a bad user info fails here)
    except ValueError as exc:
        raise InvalidInputError("redis_url", f"cannot parse the URL: {exc}") from None
    return parts


def split_password(url: str) -> tuple[str, str | None]:
    """Remove the password from a URL's user info; returns (url, password)."""
    parts = parse_url(url)
    if parts.password is None:
        return url, None
    return urlunsplit(parts._replace(netloc=_netloc(parts, None))), unquote(parts.password)


class Settings(BaseModel):
    """Connection and behaviour settings shared by the clients, the worker and the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: ``redis://``, ``rediss://`` (TLS), ``unix://``, ``redis+sentinel://`` (without password).
    redis_url: str = C.DEFAULT_REDIS_URL
    username: str | None = None
    password: SecretStr | None = None
    namespace: str = C.DEFAULT_NAMESPACE
    lease_ttl: float = C.DEFAULT_LEASE_TTL
    shards: int = C.DEFAULT_SHARDS
    #: None: detect with ``INFO cluster``; True/False: force.
    cluster: bool | None = None
    #: Where the worker persists events (``sqlite:///path`` or ``postgresql://...``).
    sink_url: SecretStr | None = None
    request_ttl: float = C.DEFAULT_REQUEST_TTL
    socket_timeout: float = C.DEFAULT_SOCKET_TIMEOUT
    connect_timeout: float = C.DEFAULT_CONNECT_TIMEOUT
    retry_attempts: int = C.DEFAULT_RETRY_ATTEMPTS
    retry_backoff: float = C.DEFAULT_RETRY_BACKOFF
    retry_backoff_cap: float = C.DEFAULT_RETRY_BACKOFF_CAP
    max_connections: int | None = None
    #: TLS: CA bundle, client certificate and key (``rediss://`` URLs).
    tls_ca_certs: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_verify: bool = True
    #: Durability mode: after each state change wait for this many replicas (0 = off).
    wait_replicas: int = 0
    #: Durability mode: after each state change wait until the server has fsynced it to
    #: its append-only file (``WAITAOF 1 0``; Redis >= 7.2, Valkey), so a killed or
    #: crashed server cannot lose it even with ``appendfsync everysec``.
    wait_aof: bool = False
    #: How long to wait for replica acknowledgement or the fsync (s).
    wait_timeout: float = 1.0
    client_name: str | None = None
    #: asyncio client: send the calls of concurrent tasks together (docs: README).
    auto_pipeline: bool = True
    #: UNSAFE: connect to a Redis whose ``maxmemory-policy`` may evict keys. Evicted
    #: leases, fencing counters and records lose acknowledged writes silently.
    allow_eviction: bool = False

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            cause = first.get("ctx", {}).get("error")
            if isinstance(cause, InvalidInputError):  # a validator's own: already worded
                raise cause from None
            field = ".".join(str(p) for p in first["loc"]) or "settings"
            raise InvalidInputError(field, first["msg"].removeprefix("Value error, ")) from None

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return validation.namespace(value)

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, value: float) -> float:
        return validation.ttl_seconds(value, "lease_ttl")

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int) -> int:
        if not 0 < value <= C.MAX_SHARDS:
            raise ValueError(f"must be from 1 to {C.MAX_SHARDS}")
        return value

    @field_validator("request_ttl", "socket_timeout", "connect_timeout", "wait_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be positive")
        return value

    @field_validator("retry_attempts", "wait_replicas")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("wait_timeout")
    @classmethod
    def _wait_timeout(cls, value: float, info: ValidationInfo) -> float:
        socket_timeout = info.data.get("socket_timeout")
        waits = info.data.get("wait_replicas") or info.data.get("wait_aof")
        if waits and socket_timeout and value >= socket_timeout:
            # WAIT blocks the connection: a longer wait would look like a dead server.
            raise ValueError(f"must be shorter than socket_timeout ({socket_timeout} s)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = parse_url(value)
        scheme = parts.scheme
        if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"):
            raise ValueError(f"scheme {scheme!r} is not one of redis, rediss, unix, redis+sentinel")
        if parts.password is not None:
            raise ValueError("pass the password separately (Settings.from_url splits it out)")
        if scheme != "unix":
            for host in parts.netloc.rpartition("@")[2].split(","):
                port = host.rpartition("]")[2].rpartition(":")[2] if ":" in host else ""
                if port and not (port.isdigit() and 0 < int(port) <= 65535):
                    raise ValueError(f"port {port!r} is not a TCP port (1-65535)")
        return value

    # --- constructors ---------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **explicit: Any) -> Settings:
        """Explicit keyword arguments (None = not given), then ``COORDINATOR_*``, then defaults."""
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        variables: dict[str, str] = {}  # field -> the variable its value came from
        for name in cls.model_fields:
            variable = C.ENV_PREFIX + _ENV_NAMES.get(name, name.upper())
            raw = env.get(variable)
            if raw is not None and raw != "":
                data[name] = _from_env_text(name, raw)
                variables[name] = variable
        given = {k: v for k, v in explicit.items() if v is not None}
        data.update(given)
        for name in given:
            variables.pop(name, None)
        try:
            url = data.get("redis_url")
            if isinstance(url, str):
                data["redis_url"], password = split_password(url)
                if password is not None and "password" not in explicit:
                    data["password"] = password
            return cls(**data)
        except InvalidInputError as exc:
            source = variables.get(exc.field)
            if source is None:
                raise
            # Name what the user set: the variable, not the field behind it.
            message = str(exc).removeprefix(f"invalid {exc.field}: ")
            raise InvalidInputError(source, message) from None

    @classmethod
    def from_url(cls, url: str, **explicit: Any) -> Settings:
        """Settings for ``url``; other fields from ``explicit``, the environment, defaults."""
        return cls.from_env(redis_url=url, **explicit)

    @property
    def safe_redis_url(self) -> str:
        """The Redis URL for messages (it never holds the password)."""
        return self.redis_url

    @property
    def safe_sink_url(self) -> str | None:
        return None if self.sink_url is None else redact_url(self.sink_url.get_secret_value())


def _from_env_text(name: str, raw: str) -> Any:
    if name in ("cluster", "tls_verify", "auto_pipeline", "allow_eviction", "wait_aof"):
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        if name == "cluster" and lowered == "auto":
            return None
        raise InvalidInputError(
            C.ENV_PREFIX + _ENV_NAMES.get(name, name.upper()), f"{raw!r} is not a boolean"
        )
    return raw
