"""Redis clients from :class:`~coordinator.settings.Settings`: single node, TLS, unix
socket, Sentinel and Cluster, sync and asyncio.

redis-py's own retries are switched off (its default re-sends any command up to ten
times after a timeout, which would apply a non-idempotent script twice); the
coordinator retries only calls that are safe to repeat (see ``core.retry_delay``).

URL forms::

    redis://[user@]host:port/db            rediss://... (TLS)      unix:///path.sock?db=0
    redis://host1:port,host2:port          several seeds: a Redis Cluster
    redis+sentinel://[user@]s1:26379,s2:26379/<service>[/db]   (rediss+sentinel: TLS)
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff

from coordinator.errors import ConfigurationError, InvalidInputError
from coordinator.settings import Settings
from coordinator.stats import RedisMode

RedisClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncRedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"


def _no_retry() -> redis.retry.Retry:
    return redis.retry.Retry(NoBackoff(), 0)


def _no_retry_async() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(NoBackoff(), 0)


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme in ("redis+sentinel", "rediss+sentinel")


def _seeds(url: str) -> list[tuple[str, int]]:
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    seeds = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, "6379"
        try:
            seeds.append((host.strip("[]"), int(port)))
        except ValueError:
            raise InvalidInputError("redis_url", f"bad host:port {part!r}") from None
    return seeds


def is_multi_seed(url: str) -> bool:
    return "," in urlsplit(url).netloc


def _no_client_handshake() -> dict[str, Any]:
    """redis-py 5+ sends ``CLIENT SETINFO`` on every new connection, and redis-py 8
    ``CLIENT MAINT_NOTIFICATIONS`` on RESP3: Redis before 7.2 answers with errors, and
    an ACL user without these subcommands (the shipped roles) is refused and logged in
    ``ACL LOG`` at every connect. The coordinator sends neither (redis-py 8 names the
    first switch ``driver_info``, earlier ones ``lib_name``/``lib_version``)."""
    kwargs: dict[str, Any]
    try:
        import redis.driver_info  # noqa: F401
    except ImportError:
        kwargs = {"lib_name": None, "lib_version": None}
    else:
        kwargs = {"driver_info": None}
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:
        return kwargs
    return {**kwargs, "maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by every connection the coordinator opens."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": 0,
        **_no_client_handshake(),
    }
    if settings.client_name:
        kwargs["client_name"] = settings.client_name
    # A user named in the URL counts too: cluster seeds and sentinel URLs are not
    # parsed by redis-py, so it would be dropped there.
    username = settings.username or unquote(urlsplit(settings.redis_url).username or "")
    if username:
        kwargs["username"] = username
    if settings.password is not None:
        kwargs["password"] = settings.password.get_secret_value()
    if settings.max_connections:
        kwargs["max_connections"] = settings.max_connections
    if urlsplit(settings.redis_url).scheme.startswith("rediss"):
        kwargs.update(tls_kwargs(settings))
    return kwargs


def tls_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE,
        "ssl_check_hostname": settings.tls_verify,
    }
    if settings.tls_ca_certs:
        kwargs["ssl_ca_certs"] = settings.tls_ca_certs
    if settings.tls_certfile:
        kwargs["ssl_certfile"] = settings.tls_certfile
    if settings.tls_keyfile:
        kwargs["ssl_keyfile"] = settings.tls_keyfile
    return kwargs


def sentinel_target(settings: Settings) -> tuple[list[tuple[str, int]], str, int]:
    """(sentinel addresses, service name, db) of a ``redis+sentinel://`` URL."""
    parts = urlsplit(settings.redis_url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise InvalidInputError("redis_url", "a sentinel URL needs a service name: .../mymaster")
    try:
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError:
        raise InvalidInputError("redis_url", f"bad database number {path[1]!r}") from None
    return _seeds(settings.redis_url), path[0], db


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    # Sentinels get the timeouts and TLS of the data nodes; ACL credentials apply to
    # the data nodes only (sentinels usually run without them).
    kwargs = connection_kwargs(settings)
    kwargs.pop("username", None)
    kwargs.pop("password", None)
    kwargs.pop("client_name", None)
    return kwargs


def open_client(settings: Settings, cluster: bool) -> RedisClient:
    """A synchronous client (not yet connected; redis-py connects lazily)."""
    kwargs = connection_kwargs(settings)
    url = settings.redis_url
    if is_sentinel_url(url):
        addresses, service, db = sentinel_target(settings)
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            addresses, sentinel_kwargs=_sentinel_kwargs(settings), **kwargs
        )
        client: RedisClient = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
            service, db=db, retry=_no_retry(), **kwargs
        )
        return client
    if cluster:
        kwargs.pop("health_check_interval")
        if is_multi_seed(url):
            nodes = [redis.cluster.ClusterNode(h, p) for h, p in _seeds(url)]  # type: ignore[no-untyped-call,unused-ignore]
            return redis.cluster.RedisCluster(startup_nodes=nodes, retry=_no_retry(), **kwargs)
        return redis.cluster.RedisCluster.from_url(url, retry=_no_retry(), **kwargs)
    return redis.Redis.from_url(url, retry=_no_retry(), **kwargs)


def open_async_client(settings: Settings, cluster: bool) -> AsyncRedisClient:
    """An asyncio client (not yet connected)."""
    kwargs = connection_kwargs(settings)
    url = settings.redis_url
    if is_sentinel_url(url):
        addresses, service, db = sentinel_target(settings)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            addresses, sentinel_kwargs=_sentinel_kwargs(settings), **kwargs
        )
        client: AsyncRedisClient = sentinel.master_for(
            service, db=db, retry=_no_retry_async(), **kwargs
        )
        return client
    if cluster:
        kwargs.pop("health_check_interval")
        if is_multi_seed(url):
            nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in _seeds(url)]
            return redis.asyncio.cluster.RedisCluster(
                startup_nodes=nodes, retry=_no_retry_async(), **kwargs
            )
        return redis.asyncio.cluster.RedisCluster.from_url(url, retry=_no_retry_async(), **kwargs)
    return redis.asyncio.Redis.from_url(url, retry=_no_retry_async(), **kwargs)


def attempt_was_tls(settings: Settings, exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to connect over TLS (``rediss://``, one server)."""
    url = settings.redis_url
    if not url.startswith("rediss://") or is_multi_seed(url):
        return False
    text = str(exc).lower()
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError) and (
        "connect" in text or "ssl" in text or "handshake" in text
    )


def tls_refusal(settings: Settings, timeout: float = 1.0) -> ConfigurationError | None:
    """The error to raise when the server of a ``rediss://`` URL answers in plain text
    (asked after a failed TLS connect: the handshake with such a server only times
    out), else None."""
    host, port = _seeds(settings.redis_url)[0]
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError:
        return None
    if answer[:1] not in (b"+", b"-"):
        return None
    return ConfigurationError(
        f"Redis at {settings.safe_redis_url} does not speak TLS (it answered in plain "
        "text): use a redis:// URL, or enable TLS on the server"
    )


def node_settings(settings: Settings, host: str, port: int) -> Settings:
    """Settings for a direct connection to one cluster node (same user, TLS, timeouts)."""
    parts = urlsplit(settings.redis_url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    return settings.model_copy(
        update={"redis_url": f"{parts.scheme}://{netloc}/0", "cluster": False}
    )


def owner_address(client: Any, key: str) -> tuple[str, int]:
    """(host, port) of the cluster master serving ``key``, from the client's slot map
    (no I/O: the same call on the sync and the asyncio cluster client)."""
    node = client.get_node_from_key(key)
    return str(node.host), int(node.port)


def sentinels_of(client: object) -> list[Any]:
    """The clients of the sentinels behind a Sentinel-managed client (else none): the
    client's own close leaves their connections open."""
    pool = getattr(client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


def cluster_hint(settings: Settings) -> bool | None:
    """Cluster mode when it is known without asking the server, else None."""
    if settings.cluster is not None:
        return settings.cluster
    if is_sentinel_url(settings.redis_url):
        return False
    if is_multi_seed(settings.redis_url):
        return True
    return None


def parse_cluster_info(info: dict[str, Any]) -> bool:
    return str(info.get("cluster_enabled", "0")) == "1"


def is_cluster_client(client: object) -> bool:
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


def redis_mode(settings: Settings, cluster: bool) -> RedisMode:
    """How a client of ``settings`` reaches Redis, once cluster mode is known."""
    if cluster:
        return "cluster"
    return "sentinel" if is_sentinel_url(settings.redis_url) else "standalone"
