"""deploy/: the Dockerfile, docker-compose.yml, Kubernetes manifests and systemd units
parse, and their cross-references agree with the code and with each other.

No Docker daemon or Kubernetes cluster is available to the tests, so the images and
manifests are never run; what can run does: the compose Redis entrypoint (with
deploy/redis.conf and users.acl, on a real redis-server), the example server against
it, ``kubectl kustomize`` and ``systemd-analyze verify`` when those tools exist.
(deploy/redis.conf and users.acl themselves: tests/test_deploy_config.py, test_acl.py.)
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import click
import pytest
import redis
import yaml

from coordinator import Coordinator, EmbeddedRedis
from coordinator import constants as C
from coordinator.cli.main import cli
from coordinator.processes import free_port
from coordinator.settings import _ENV_NAMES, Settings
from tests.helpers import NO_RETRY, acl_file_for, acl_rules, password, wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
IMAGE = f"agent-coordinator:{VERSION}"
METRICS_PORT = 9108
REDIS_PORT = 6379
POSTGRES_PORT = 5432
#: The ACL user each process logs in as.
ROLE_OF = {"worker": "coordinator-worker", "example-server": "coordinator-server"}


# --- what the code accepts ---------------------------------------------------------------


def env_names() -> set[str]:
    """Every ``COORDINATOR_*`` variable the package reads: Settings fields, CLI options,
    and direct ``os.environ`` reads."""
    names = {C.ENV_PREFIX + _ENV_NAMES.get(f, f.upper()) for f in Settings.model_fields}

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(cli)
    for source in (ROOT / "coordinator").rglob("*.py"):
        names.update(re.findall(r"environ\.get\(\"(COORDINATOR_\w+)\"", source.read_text()))
    return names


def commands(group: click.Command = cli) -> Iterator[click.Command]:
    yield group
    for sub in getattr(group, "commands", {}).values():
        yield from commands(sub)


def run_cli(argv: list[str]) -> list[str]:
    """Parse ``coordinator <argv>`` with the real click group, every callback replaced:
    unknown commands or options, and bad values, raise click's usage errors. Returns the
    names of the commands that would run."""
    ran: list[str] = []
    with contextlib.ExitStack() as stack:
        for command in commands():
            stack.enter_context(
                mock.patch.object(
                    command, "callback", lambda *a, _n=command.name, **k: ran.append(_n)
                )
            )
        with mock.patch.dict(os.environ, {"POD_NAME": "pod-0"}):
            cli.main(argv, prog_name="coordinator", standalone_mode=False)
    assert ran, argv
    return ran


def coordinator_argv(argv: list[str]) -> list[str] | None:
    """The arguments of ``coordinator`` in a command line (direct or in ``sh -c``)."""
    if argv[:2] == ["sh", "-c"] or argv[:2] == ["/bin/sh", "-c"]:
        argv = shlex.split(argv[2])
    for i, token in enumerate(argv):
        if Path(token).name == "coordinator":
            return argv[i + 1 :]
    return None


def option_value(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def acl_users() -> set[str]:
    return set(acl_rules())


def check_redis_url(url: str, role: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme == "redis", url
    assert parts.username == role, url
    assert role in acl_users()
    assert parts.port == REDIS_PORT, url
    assert parts.password, f"{url}: no password (the ACL users have no nopass)"


def check_sink_url(url: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme == "postgresql", url
    assert parts.port == POSTGRES_PORT, url
    assert parts.password, url


def test_the_cli_parser_rejects_what_does_not_exist() -> None:
    # The helper the other tests rely on tells real commands from made-up ones.
    assert run_cli(["leases", "--json"]) == ["cli", "leases"]
    with pytest.raises(click.UsageError):
        run_cli(["leases", "--no-such-option"])
    with pytest.raises(click.UsageError):
        run_cli(["no-such-command"])
    with pytest.raises(click.BadParameter):
        run_cli(["up", "--port", "not-a-port"])
    assert "COORDINATOR_REDIS_URL" in env_names()
    assert "COORDINATOR_DATA_DIR" in env_names()
    assert "COORDINATOR_NOT_A_SETTING" not in env_names()


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(pending.strip())
        pending = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


def docker_json(instruction: str) -> list[str]:
    [args] = [a for i, a in dockerfile() if i == instruction]
    value = yaml.safe_load(args)  # the exec form is a JSON array
    assert isinstance(value, list), f"{instruction} must use the exec form (signals)"
    return value


def dockerfile_uid() -> int:
    [user] = [a for i, a in dockerfile() if i == "USER"]
    return int(user.split(":")[0])


def test_dockerfile_builds_the_package_as_a_non_root_user() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert f">={steps[0][1].split(':')[1].split('-')[0]}" == PYPROJECT["project"]["requires-python"]
    # Everything copied exists and is let through the build context's ignore file.
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for instruction, args in steps:
        if instruction == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, source
    # The wheel needs these (readme, the package, the Lua scripts force-included).
    assert {"pyproject.toml", "README.md", "coordinator", "lua"} <= allowed
    [install] = [a for i, a in steps if i == "RUN" and "pip install" in a]
    extras = re.search(r'pip install "\.\[([\w,]+)\]"', install)
    assert extras is not None
    assert extras.group(1).split(",") == ["postgres", "metrics"]
    assert set(extras.group(1).split(",")) <= set(PYPROJECT["project"]["optional-dependencies"])
    assert dockerfile_uid() != 0
    assert "--uid 10001" in install
    # The entrypoint is the console script; the default command is a real one.
    assert docker_json("ENTRYPOINT") == ["coordinator"]
    assert "coordinator" in PYPROJECT["project"]["scripts"]
    cmd = docker_json("CMD")
    assert run_cli(cmd)[-1] == "worker"
    assert [a for i, a in steps if i == "EXPOSE"] == [str(METRICS_PORT)]
    assert option_value(cmd, "--metrics-port") == str(METRICS_PORT)
    for instruction, args in steps:
        if instruction == "ENV":
            for name in re.findall(r"(COORDINATOR_\w+)=", args):
                assert name in env_names(), name


# --- docker-compose.yml -----------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def env_example(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = value
    return found


def volumes(service: dict[str, Any]) -> dict[str, str]:
    """Host path (or volume name) -> container path of a service's short-form volumes."""
    return dict(tuple(v.split(":")[:2]) for v in service["volumes"])


def test_compose_services_use_the_image_commands_and_ports_of_the_code() -> None:
    doc = compose()
    services = doc["services"]
    assert {"redis", "postgres", "worker", "example-server"} <= set(services)
    ours = {name: s for name, s in services.items() if s.get("image", "").startswith("agent-")}
    assert set(ours) == {"worker", "example-server", "admin"}
    for name, service in ours.items():
        assert service["image"] == IMAGE, name
        # The image's entrypoint unless the service replaces it.
        entrypoint = service.get("entrypoint", docker_json("ENTRYPOINT"))
        argv = [*entrypoint, *service.get("command", docker_json("CMD"))]
        args = coordinator_argv(argv)
        if args is not None:
            run_cli(args)
        else:  # the example server, mounted from deploy/
            [(host, container)] = volumes(service).items()
            assert (DEPLOY / host).is_file()
            assert container in argv
        for depends in service.get("depends_on", {}):
            assert depends in services
    build = services["worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    worker_args = coordinator_argv(
        [*services["worker"]["entrypoint"], *services["worker"]["command"]]
    )
    assert worker_args is not None
    assert option_value(worker_args, "--metrics-port") == str(METRICS_PORT)
    assert option_value(worker_args, "--metrics-host") == "0.0.0.0"  # reachable in a container
    assert services["worker"]["ports"] == [f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}"]
    healthcheck = services["worker"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    check = coordinator_argv(["sh", "-c", healthcheck[1]])
    assert check is not None
    assert run_cli(check) == ["cli", "worker"]
    assert "--check" in check
    # The health check looks up the consumer name the worker runs under.
    assert option_value(check, "--consumer") == option_value(worker_args, "--consumer")
    assert option_value(worker_args, "--consumer") == "$$HOSTNAME"
    # SIGTERM and time to drain: the worker acks its batch before it exits.
    assert services["worker"]["stop_signal"] == "SIGTERM"
    # Postgres's database is the sink URL's (its superuser is not the worker's role).
    pg = services["postgres"]["environment"]
    sink = urlsplit(services["worker"]["environment"]["COORDINATOR_SINK_URL"])
    assert sink.path.lstrip("/") == pg["POSTGRES_DB"]
    assert sink.username != pg["POSTGRES_USER"]
    assert sink.hostname == "postgres"


def test_compose_environment_names_users_and_passwords_agree() -> None:
    services = compose()["services"]
    defined = env_example(DEPLOY / ".env.example")
    text = (DEPLOY / "docker-compose.yml").read_text()
    # Every ${VAR} the file interpolates is in .env.example.
    for name in re.findall(r"\$\{(\w+)", text):
        assert name in defined, name
    roles = {**ROLE_OF, "admin": "coordinator-admin"}
    for name, role in roles.items():
        env = services[name]["environment"]
        for key in env:
            assert key in env_names(), f"{name}: {key} is not read by the code"
        url = env["COORDINATOR_REDIS_URL"]
        check_redis_url(url, role)
        assert urlsplit(url).hostname == "redis"
        # The password is the one the Redis entrypoint gives that user.
        variable = "REDIS_PASSWORD_" + role.upper().replace("-", "_")
        assert urlsplit(url).password == "${" + variable + "}", url
        assert variable in services["redis"]["environment"]
        if "COORDINATOR_SINK_URL" in env:
            check_sink_url(env["COORDINATOR_SINK_URL"])
            # The sink's least-privilege role, its password the one postgres-init.sh sets.
            sink_role = SINK_ROLE_OF[name]
            sink = urlsplit(env["COORDINATOR_SINK_URL"])
            assert sink.username == sink_role, name
            variable = "POSTGRES_" + sink_role.removeprefix("coordinator_").upper() + "_PASSWORD"
            assert sink.password == "${" + variable + "}", name
            assert variable in services["postgres"]["environment"]
    # The Redis service gets a password for every user of the ACL file but default.
    assert {
        "REDIS_PASSWORD_" + user.upper().replace("-", "_") for user in acl_users() - {"default"}
    } == set(services["redis"]["environment"])
    # The port the URLs name is the one deploy/redis.conf listens on.
    [port_line] = [
        line
        for line in (DEPLOY / "redis.conf").read_text().splitlines()
        if line.startswith("port ")
    ]
    assert int(port_line.split()[1]) == REDIS_PORT
    # It runs the shipped redis.conf and users.acl through the entrypoint.
    mounts = volumes(services["redis"])
    assert mounts["./redis.conf"] == "/etc/redis/redis.conf"
    assert mounts["./users.acl"] == "/etc/redis/users.acl"
    assert services["redis"]["entrypoint"] == ["/bin/sh", mounts["./redis-entrypoint.sh"]]
    assert all((DEPLOY / host).exists() for host in mounts if host.startswith("./"))
    # PostgreSQL applies the roles file and the passwords once, at its first start.
    mounts = volumes(services["postgres"])
    assert mounts["./postgres-roles.sql"] == "/etc/coordinator/postgres-roles.sql"
    assert mounts["./postgres-init.sh"].startswith("/docker-entrypoint-initdb.d/")
    assert all((DEPLOY / host).exists() for host in mounts if host.startswith("./"))


#: The sink role each compose service logs in to PostgreSQL as.
SINK_ROLE_OF = {"worker": "coordinator_worker", "admin": "coordinator_reader"}


def test_other_deploy_files_name_the_sinks_worker_role() -> None:
    for path in (K8S / "secret.yaml", DEPLOY / "systemd" / "coordinator.env.example"):
        [url] = re.findall(r"postgresql://\S+", path.read_text().split("stringData:")[-1])
        assert urlsplit(url).username == "coordinator_worker", path


# --- Kubernetes ----------------------------------------------------------------------


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_kubernetes_manifests_parse_and_reference_each_other() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    docs = manifests()
    deployment = docs[("Deployment", "coordinator-worker")]
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    [container] = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    args = container["args"]
    assert run_cli(args)[-1] == "worker"
    # Each replica is its own consumer of the group, named after its pod.
    assert option_value(args, "--consumer") == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": METRICS_PORT}
    assert option_value(args, "--metrics-port") == str(METRICS_PORT)
    assert option_value(args, "--metrics-host") == "0.0.0.0"
    # Liveness from the worker's own liveness key; readiness from its HTTP server.
    liveness = container["livenessProbe"]["exec"]["command"]
    check = coordinator_argv(liveness)
    assert check is not None
    assert run_cli(check) == ["cli", "worker"]
    assert "--check" in check
    assert option_value(check, "--consumer") == "$POD_NAME"  # the same consumer
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"requests", "limits"} <= set(container["resources"])
    # Runs as the image's non-root user.
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == dockerfile_uid()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The environment comes from the ConfigMap and Secret of the kustomization.
    sources = container["envFrom"]
    configmap = docs[("ConfigMap", sources[0]["configMapRef"]["name"])]
    secret = docs[("Secret", sources[1]["secretRef"]["name"])]
    for key in [*configmap["data"], *secret["stringData"]]:
        assert key in env_names(), key
    assert set(secret["stringData"]) == {"COORDINATOR_REDIS_URL", "COORDINATOR_SINK_URL"}
    check_redis_url(secret["stringData"]["COORDINATOR_REDIS_URL"], "coordinator-worker")
    check_sink_url(secret["stringData"]["COORDINATOR_SINK_URL"])
    assert configmap["data"]["COORDINATOR_NAMESPACE"] == C.DEFAULT_NAMESPACE  # as users.acl
    assert int(configmap["data"]["COORDINATOR_SHARDS"]) == C.DEFAULT_SHARDS
    # The metrics Service selects the worker pods and targets the named port.
    service = docs[("Service", "coordinator-worker-metrics")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [port] = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (METRICS_PORT, "metrics")
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT)
    namespaces = [name for kind, name in docs if kind == "Namespace"]
    assert namespaces == [kustomization["namespace"]]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True
    )
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built.stdout)]
    assert sorted(kinds) == sorted(kind for kind, _ in manifests())


# --- systemd ---------------------------------------------------------------------------


def unit(name: str) -> configparser.RawConfigParser:
    # systemd allows repeated keys; the last one is enough for these checks.
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("coordinator-worker.service", "worker"),
        ("coordinator-up.service", "up"),
    ],
)
def test_systemd_units_run_real_commands_hardened(name: str, command: str) -> None:
    parsed = unit(name)
    assert set(parsed.sections()) == {"Unit", "Service", "Install"}
    service = parsed["Service"]
    argv = shlex.split(service["ExecStart"])
    args = coordinator_argv(argv)
    assert args is not None
    assert run_cli(args)[-1] == command
    assert option_value(args, "--metrics-port") == str(METRICS_PORT)
    if command == "up":
        assert option_value(args, "--port") == str(REDIS_PORT)
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] != "root"
    # The state directory is where the data directory points.
    assert service["Environment"] == f"COORDINATOR_DATA_DIR=/var/lib/{service['StateDirectory']}"
    # The EnvironmentFile has a shipped example whose variables the code reads.
    env_file = Path(service["EnvironmentFile"].lstrip("-"))
    example = SYSTEMD / f"{env_file.stem}.env.example"
    assert example.is_file(), example
    for key, value in env_example(example).items():
        assert key in env_names(), key
        if key == "COORDINATOR_REDIS_URL":
            check_redis_url(value, "coordinator-worker")
        if key == "COORDINATOR_SINK_URL":
            check_sink_url(value)
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", ["coordinator-worker.service", "coordinator-up.service"])
def test_systemd_analyze_accepts_the_units(name: str, tmp_path: Path) -> None:
    # The installed path of the console script is replaced by this environment's, and
    # the EnvironmentFile made optional (it is not installed here).
    text = (SYSTEMD / name).read_text()
    text = text.replace("/opt/agent-coordinator/bin/coordinator", str(console_script()))
    text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")
    (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr
    assert "nvalid" not in result.stderr, result.stderr


def console_script() -> Path:
    script = Path(sys.executable).parent / "coordinator"
    assert script.is_file()
    return script


# --- the compose Redis entrypoint and the example server, for real ----------------------


@pytest.fixture
def compose_redis(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[int]:
    """redis-server started by deploy/redis-entrypoint.sh as docker-compose.yml does:
    redis.conf, users.acl with the passwords from the environment."""
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    path = f"{Path(redis_server.binary).parent}{os.pathsep}{os.environ['PATH']}"
    # The entrypoint runs whatever redis-server is on PATH (Valkey's folder has none).
    binary = Path(shutil.which("redis-server", path=path) or redis_server.binary)
    env = {
        "PATH": path,
        "REDIS_CONF": str(DEPLOY / "redis.conf"),
        "ACL_SOURCE": str(acl_file_for(binary)),
        "ACL_TARGET": str(data / "users.acl"),
        "REDIS_DATA_DIR": str(data),
        **{
            "REDIS_PASSWORD_" + user.upper().replace("-", "_"): password(user)
            for user in acl_users() - {"default", "coordinator-admin"}
        },
    }
    process = subprocess.Popen(
        ["sh", str(DEPLOY / "redis-entrypoint.sh"), "--port", str(port), "--bind", "127.0.0.1",
         "--daemonize", "no", "--logfile", str(data / "redis.log"), "--pidfile", str(data / "pid")],
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        probe = redis.Redis(port=port, retry=NO_RETRY, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(probe.ping())
            except redis.AuthenticationError:
                return True  # up, and the default user is off
            except redis.ConnectionError:
                assert process.poll() is None, (data / "redis.log").read_text()
                return False

        wait_until(answers)
        probe.close()
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_the_compose_redis_entrypoint_sets_the_passwords(
    compose_redis: int, tmp_path: Path
) -> None:
    written = (tmp_path / "data" / "users.acl").read_text()
    for user in ("coordinator-server", "coordinator-worker", "ops"):
        assert password(user) not in written  # stored as SHA-256 only
        with contextlib.closing(
            redis.Redis(port=compose_redis, username=user, password=password(user))
        ) as r:
            assert r.ping()
    # No variable, no password: nobody logs in as that user (nor as default).
    for user, secret in (("coordinator-admin", password("coordinator-admin")), ("default", "")):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=compose_redis, username=user, password=secret, retry=NO_RETRY).ping()
    # The file's directives are in effect, the container-only ones as the entrypoint set.
    with contextlib.closing(
        redis.Redis(port=compose_redis, username="ops", password=password("ops"))
    ) as ops:
        config = ops.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["dir"] == str(tmp_path / "data")
        assert config["aclfile"] == str(tmp_path / "data" / "users.acl")


def test_the_example_server_runs_as_the_server_user(compose_redis: int) -> None:
    url = f"redis://coordinator-server:{password('coordinator-server')}@127.0.0.1:{compose_redis}/0"
    env = {**os.environ, "COORDINATOR_REDIS_URL": url, "COORDINATOR_NAMESPACE": "coord"}
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "example_server.py"), "--agent", "agent-x",
         "--rounds", "4", "--interval", "0", "--projects", "a,b"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert password("coordinator-server") not in done.stderr + done.stdout
    with Coordinator.from_url(url, namespace="coord") as c:
        assert c.get_current_project("agent-x").version == 4
        assert c.list_leases() == []  # ended on the way out
        types = [e.event_type for e in reversed(c.get_agent_events("agent-x"))]
    assert types == [
        "session_started", "project_set", "project_switched", "project_switched",
        "project_switched", "session_ended",
    ]  # fmt: skip


def test_the_example_server_stops_cleanly_on_sigterm(compose_redis: int) -> None:
    url = f"redis://coordinator-server:{password('coordinator-server')}@127.0.0.1:{compose_redis}/0"
    env = {**os.environ, "COORDINATOR_REDIS_URL": url, "COORDINATOR_NAMESPACE": "coord"}
    server = subprocess.Popen(
        [sys.executable, str(DEPLOY / "example_server.py"), "--agent", "agent-y",
         "--interval", "60"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with Coordinator.from_url(url, namespace="coord") as c:
        wait_until(lambda: c.get_current_project("agent-y"))
        server.terminate()
        assert server.wait(30) == 0, server.stderr.read() if server.stderr else ""
        assert c.list_leases() == []
        assert c.get_agent_events("agent-y", limit=1)[0].event_type == "session_ended"
    if server.stderr is not None:
        server.stderr.close()


def test_the_example_server_reports_bad_credentials_in_one_line(compose_redis: int) -> None:
    url = f"redis://coordinator-server:wrong-secret-1@127.0.0.1:{compose_redis}/0"
    env = {**os.environ, "COORDINATOR_REDIS_URL": url, "COORDINATOR_RETRY_ATTEMPTS": "1"}
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "example_server.py"), "--rounds", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "wrong-secret-1" not in done.stderr
