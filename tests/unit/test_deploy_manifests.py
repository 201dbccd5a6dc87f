"""infra/deploy/ (compose.yaml, the Kubernetes manifests of kustomization.yaml) and the Dockerfile stay consistent with
the code and with each other. They cannot be run here (no container runtime); what can be checked without one is:

- every variable a container sets is read by the settings of the command it runs, and the settings built from that
  environment pass their own validation (secrets stand in as valid values);
- every command exists (``shipskip`` subcommands parse; the granian application factories import), and the image's
  entry point is ``shipskip``;
- the ports (containers, Services, probes, health checks, the nginx front) are the settings' ports, and the probed
  paths are routes of the service probed;
- compose and Kubernetes run the same containers (commands, replicas, settings) against the same servers: three NATS
  nodes that the services list, the stream replicated on all three, Postgres and Redis as the URLs name them;
- one projector per partition, the partitions disjoint and covering all of them;
- nats.conf passes ``nats-server -t``, and the Dockerfile copies what the build needs;
- every Kubernetes object (those kustomization.yaml lists, and the ConfigMap it generates) is valid for
  ``KUBERNETES_VERSION`` by its schema (kubernetes-validate, strict: an unknown field is an error);
- every container has resource requests and a memory limit, the services liveness and readiness probes on
  /healthz and /readyz, the votes and read Deployments a PodDisruptionBudget that lets a drain proceed one pod at
  a time; Prometheus is pointed at each process's ops port (/metrics), which no Service, Ingress or published
  port exposes; and the read API's admin API (/admin) is routed nowhere public (the Ingress, nginx).
"""

import importlib
import re
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from litestar.handlers import HTTPRouteHandler

from contracts.catalog import decode_catalog
from infra.stack.servers import nats_server_path
from services.cli import build_parser
from services.serve import FACTORIES, ServiceName, check_settings
from services.shared.config import Env, ServerSettings
from services.shared.http_server_settings import HttpServerSettings
from services.shared.ops_port import ops_port_of
from services.tally.read.settings import LiveSettings
from services.tally.settings import TallySettings
from services.votes.body_deadline import BODY_TIMEOUT_S
from services.votes.settings import VotesSettings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "infra" / "deploy"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = f"shipskip:{PROJECT['version']}"

SECRETS = {
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "SHIPSKIP_TOKEN_KEYS": "deploy-test-signing-key-0123456789",
    "SHIPSKIP_HASH_KEY": "deploy-test-hash-key-0123456789",
}
"""The secrets the manifests take from the operator (compose: ``${NAME:?}``, Kubernetes: Secret shipskip-secrets),
with stand-ins of a valid shape."""

PLATFORM_SPECIFIC = {
    # compose serves plain http on localhost, where a Secure cookie cannot be set; Kubernetes serves https.
    "SHIPSKIP_COOKIE_SECURE",
    # The public addresses differ: localhost behind compose's nginx, the Ingress's hosts in Kubernetes.
    "SHIPSKIP_PUBLIC_READ_API",
    "SHIPSKIP_CORS_ORIGINS",
}
"""Settings that may differ between compose and Kubernetes (both still checked against the settings)."""

NATS_NODES = 3
PARTITIONS = 2
KUBERNETES_VERSION = "1.31"
"""The Kubernetes release the manifests are checked against (its schemas ship with kubernetes-validate)."""


def pending_partition_variables() -> set[str]:
    """The partition variables while partitioned projectors are not built yet (the manifests already set them):
    tolerated as unread until the settings read them, then checked like every other."""
    if "partitions" in TallySettings.__struct_fields__:
        return set()
    return {"SHIPSKIP_PARTITIONS", "SHIPSKIP_PROJECTOR_PARTITIONS"}


# -- reading the manifests -----------------------------------------------------------------------------------------


@dataclass
class Component:
    """One shipskip container as a platform runs it."""

    name: str
    image: str
    args: list[str]
    env: dict[str, str]
    """Variables as set, a secret written ``<secret:NAME>`` and references to other variables resolved."""
    replicas: int
    ports: set[int] = field(default_factory=set)
    """Ports the platform talks to: container ports (Kubernetes) and health-check URLs (compose)."""
    probes: set[tuple[str, int]] = field(default_factory=set)
    """(path, port) of every HTTP probe or health check."""
    scrape: dict[str, str] = field(default_factory=dict)
    """The pod's prometheus.io/* annotations (Kubernetes)."""

    @property
    def command(self) -> str:
        """What it runs: ``serve votes``, ``serve read``, ``projector``, ``migrate``, ``catalog load``."""
        return " ".join(self.args[:2]) if self.args[0] in ("serve", "catalog") else self.args[0]

    def environment(self) -> dict[str, str]:
        """The environment with the stand-ins for the secrets, as the process would see it."""
        return {k: re.sub(r"<secret:(\w+)>", lambda m: SECRETS[m[1]], v) for k, v in self.env.items()}

    def settings_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k.startswith(("SHIPSKIP_", "GRANIAN_"))}


def load_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def kubernetes_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((DEPLOY / resource).read_text()) if doc]
    return objects


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


_COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def compose_components() -> dict[str, Component]:
    components: dict[str, Component] = {}
    for name, service in load_compose()["services"].items():
        if not str(service.get("image", "")).startswith("shipskip:"):
            continue
        env = {
            k: _COMPOSE_VARIABLE.sub(lambda m: f"<secret:{m[1]}>", str(v)) for k, v in service["environment"].items()
        }
        probes: set[tuple[str, int]] = set()
        for part in service.get("healthcheck", {}).get("test", []):
            for url in re.findall(r"https?://[^'\" ]+", part):
                parts = urlsplit(url)
                assert parts.port is not None, url
                probes.add((parts.path, parts.port))
        components[name] = Component(
            name=name,
            image=service["image"],
            args=[str(arg) for arg in service["command"]],
            env=env,
            replicas=int(service.get("deploy", {}).get("replicas", 1)),
            ports={port for _, port in probes},
            probes=probes,
        )
    return components


def _k8s_env(entries: list[dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in entries:
        if "valueFrom" in entry:
            secret = entry["valueFrom"]["secretKeyRef"]
            assert secret["name"] == "shipskip-secrets", entry
            env[entry["name"]] = f"<secret:{secret['key']}>"
        else:
            # $(NAME) is the value of a variable set earlier in the list (Kubernetes' dependent variables).
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], str(entry["value"]))
    return env


def k8s_components() -> dict[str, Component]:
    components: dict[str, Component] = {}
    for obj in kubernetes_objects():
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if not container["image"].startswith("shipskip:"):
                continue
            probes = {
                (probe["httpGet"]["path"], int(probe["httpGet"]["port"]))
                for key in ("readinessProbe", "livenessProbe", "startupProbe")
                if "httpGet" in (probe := container.get(key, {}))
            }
            components[obj["metadata"]["name"]] = Component(
                name=obj["metadata"]["name"],
                image=container["image"],
                args=[str(arg) for arg in container["args"]],
                env=_k8s_env(container.get("env", [])),
                replicas=int(obj["spec"].get("replicas", 1)),
                ports={int(port["containerPort"]) for port in container.get("ports", [])},
                probes=probes,
                scrape={
                    key.removeprefix("prometheus.io/"): str(value)
                    for key, value in obj["spec"]["template"]["metadata"].get("annotations", {}).items()
                    if key.startswith("prometheus.io/")
                },
            )
    return components


PLATFORMS: dict[str, Callable[[], dict[str, Component]]] = {"compose": compose_components, "k8s": k8s_components}


def all_components() -> list[tuple[str, Component]]:
    return [(platform, c) for platform, read in PLATFORMS.items() for c in read().values()]


COMPONENT_IDS = [f"{platform}-{c.name}" for platform, c in all_components()]


# -- what the code reads -------------------------------------------------------------------------------------------


class RecordingEnv(Env):
    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(environ, fallback={})
        self.asked: set[str] = set()

    def raw(self, name: str) -> str | None:
        self.asked.add(name)
        return super().raw(name)


def telemetry_settings() -> type | None:
    """The logs-and-metrics settings every ``shipskip`` command reads (None before they existed)."""
    try:
        module = importlib.import_module("services.shared.telemetry_settings")
    except ModuleNotFoundError:
        return None
    cls: type = module.TelemetrySettings
    return cls


def read_settings(component: Component) -> tuple[set[str], dict[str, Any]]:
    """Build every settings object the component's command reads from its environment (raising ConfigError on a
    wrong value); the variables they asked for, and the settings by name."""
    env = RecordingEnv(component.environment())
    built: dict[str, Any] = {}
    telemetry = telemetry_settings()
    if telemetry is not None:
        built["telemetry"] = telemetry.from_env(env)  # type: ignore[attr-defined]
    command = component.command
    if command == "serve votes":
        built["votes"] = VotesSettings.from_env(env)
    elif command == "serve read":
        built["tally"] = TallySettings.from_env(env)
        built["live"] = LiveSettings.from_env(env)
    elif command == "projector":
        built["tally"] = TallySettings.from_env(env)
    elif command in ("migrate", "catalog load"):
        built["servers"] = ServerSettings.from_env(env)
    else:
        raise AssertionError(f"{component.name}: no settings known for {command!r}")
    return env.asked, built


def routes_of(module_names: list[str]) -> set[str]:
    """The paths of the Litestar route handlers these modules hold."""
    paths: set[str] = set()
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            handlers = value if isinstance(value, list) else [value]
            for handler in handlers:
                if isinstance(handler, HTTPRouteHandler):
                    paths |= set(handler.paths)
    return paths


def projector_paths() -> set[str]:
    """The paths the projector's monitoring endpoint serves (a small server of its own, not Litestar)."""
    source = ROOT / "services" / "tally" / "projector" / "monitor.py"
    return set(re.findall(r'"(/[a-z]+)":', source.read_text())) if source.exists() else set()


SERVICE_ROUTES = {
    "serve votes": lambda: routes_of(
        ["services.votes.routes", "services.votes.widget.pages", "services.shared.ops_routes"]
    ),
    "serve read": lambda: routes_of(["services.tally.read.app", "services.shared.ops_routes"]),
    "projector": projector_paths,
}


# -- the tests -----------------------------------------------------------------------------------------------------


def test_compose_and_kubernetes_run_the_same_shipskip_containers() -> None:
    compose, k8s = compose_components(), k8s_components()
    assert set(compose) == set(k8s)
    assert set(compose) == {"migrate", "catalog-load", "votes", "read"} | {f"projector-{i}" for i in range(PARTITIONS)}
    for name in compose:
        assert compose[name].image == k8s[name].image == IMAGE, name
        assert compose[name].args == k8s[name].args, name
        assert compose[name].replicas == k8s[name].replicas, name
        shared = {k: v for k, v in compose[name].settings_env().items() if k not in PLATFORM_SPECIFIC}
        assert shared == {k: v for k, v in k8s[name].settings_env().items() if k not in PLATFORM_SPECIFIC}, name
        # compose has one health check (readiness); Kubernetes also probes liveness.
        assert compose[name].probes <= k8s[name].probes, name


def test_several_votes_and_read_replicas_one_process_per_partition() -> None:
    for platform, read in PLATFORMS.items():
        components = read()
        assert components["votes"].replicas >= 2, platform
        assert components["read"].replicas >= 2, platform
        for index in range(PARTITIONS):
            assert components[f"projector-{index}"].replicas == 1, platform


@pytest.mark.parametrize(("platform", "component"), all_components(), ids=COMPONENT_IDS)
def test_the_command_exists(platform: str, component: Component) -> None:
    try:
        args = build_parser().parse_args(component.args)
    except SystemExit as exc:
        raise AssertionError(
            f"{platform} {component.name}: `shipskip {' '.join(component.args)}` does not parse"
        ) from exc
    if args.command == "serve":
        # What `shipskip serve` becomes: granian with the service's application factory.
        module_name, _, factory = FACTORIES[args.service].partition(":")
        assert callable(getattr(importlib.import_module(module_name), factory))
        assert args.host == "0.0.0.0", "in a container the service must listen beyond loopback"  # noqa: S104
        assert args.port is None, "the port comes from the settings (SHIPSKIP_VOTES_PORT / SHIPSKIP_TALLY_PORT)"
    if args.command == "catalog":
        image_path = Path(args.file)
        assert image_path in dockerfile_copies(), f"{image_path} is not in the image"
        decode_catalog((ROOT / dockerfile_copies()[image_path]).read_bytes())


@pytest.mark.parametrize(("platform", "component"), all_components(), ids=COMPONENT_IDS)
def test_every_variable_set_is_a_setting_the_command_reads_and_valid(platform: str, component: Component) -> None:
    asked, _ = read_settings(component)  # ConfigError here: a value the settings refuse
    unread = set(component.settings_env()) - asked - pending_partition_variables()
    assert not unread, f"{platform} {component.name} sets variables `{component.command}` does not read: {unread}"
    if component.command.startswith("serve"):
        service: ServiceName = "votes" if component.args[1] == "votes" else "read"
        check_settings(service, component.environment())  # exactly what `shipskip serve` checks


@pytest.mark.parametrize(("platform", "component"), all_components(), ids=COMPONENT_IDS)
def test_ports_and_probes_are_the_settings(platform: str, component: Component) -> None:
    _, settings = read_settings(component)
    if component.command == "serve votes":
        port = settings["votes"].port
        assert settings["votes"].read_port == 8081 == settings_of("read")["tally"].port, "the demo pages' read port"
    elif component.command == "serve read":
        port = settings["tally"].port
    elif component.command == "projector":
        if "telemetry" not in settings:
            pytest.skip("the projector serves no HTTP before SHIPSKIP_PROJECTOR_PORT exists")
        port = settings["telemetry"].projector_port
        assert settings["telemetry"].projector_host == "0.0.0.0"  # noqa: S104 - reachable by the probes
    else:
        assert not component.ports, f"{component.name} runs to completion and listens on nothing"
        return
    # Kubernetes names the ops port too (the scraper's); compose only health-checks the public one.
    ops_port = ops_port_of(component.args[1] if component.args[0] == "serve" else "projector", settings["telemetry"])
    expected = {port, ops_port} if platform == "k8s" else {port}
    assert component.ports == expected, (platform, component.name, component.ports, expected)
    if ops_port != port:
        assert settings["telemetry"].metrics_host == "0.0.0.0"  # noqa: S104 - reachable by the scraper
    assert component.probes, f"{platform} {component.name} is never probed"
    routes = SERVICE_ROUTES[component.command]()
    for path, probe_port in component.probes:
        assert probe_port == port, (platform, component.name, path)
        assert path in routes, f"{platform} {component.name} probes {path}, which it does not serve ({routes})"


def settings_of(name: str) -> dict[str, Any]:
    return read_settings(k8s_components()[name])[1]


def test_services_and_front_doors_point_at_the_settings_ports() -> None:
    votes_port = settings_of("votes")["votes"].port
    read_port = settings_of("read")["tally"].port
    for name, port in (("votes", votes_port), ("read", read_port)):
        service = k8s_object("Service", name)
        assert service["spec"]["selector"] == k8s_object("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, port)]
    backends = [
        path["backend"]["service"]
        for rule in k8s_object("Ingress", "shipskip")["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert {(b["name"], b["port"]["number"]) for b in backends} == {("votes", votes_port), ("read", read_port)}
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert set(re.findall(r"server (\w+):(\d+)", nginx)) == {("votes", str(votes_port)), ("read", str(read_port))}
    assert load_compose()["services"]["edge"]["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]


def test_the_servers_are_those_the_settings_name() -> None:
    compose = load_compose()["services"]
    settings = settings_of("migrate")["servers"]
    node_hosts = [f"nats-{i}.nats" for i in range(NATS_NODES)]
    nats_urls = [urlsplit(url) for url in settings.nats.urls]
    assert [(u.hostname, u.port) for u in nats_urls] == [(host, 4222) for host in node_hosts]
    # The stream and the catalogue bucket replicated on every node.
    assert settings.stream_replicas == NATS_NODES

    # compose: a service per node, known by the same name; Kubernetes: the StatefulSet's pods under its Service.
    for i, host in enumerate(node_hosts):
        node = compose[f"nats-{i}"]
        assert node["networks"]["shipskip"]["aliases"] == [host]
        assert node["environment"]["NATS_SERVER_NAME"] == f"nats-{i}"
        assert "./nats.conf:/etc/nats/nats.conf:ro" in node["volumes"]
    nats = k8s_object("StatefulSet", "nats")
    assert nats["spec"]["replicas"] == NATS_NODES
    assert nats["spec"]["serviceName"] == "nats"
    assert k8s_object("Service", "nats")["spec"]["clusterIP"] == "None"
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "NATS_SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    assert container["image"] == compose["nats-0"]["image"] == compose["nats-1"]["image"] == compose["nats-2"]["image"]
    assert container["args"] == compose["nats-0"]["command"] == ["-c", "/etc/nats/nats.conf"]
    generated = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["configMapGenerator"]
    assert generated == [{"name": "nats-config", "files": ["nats.conf"]}]
    conf = (DEPLOY / "nats.conf").read_text()
    assert re.findall(r"nats://([\w.-]+):6222", conf) == node_hosts

    database = urlsplit(settings.database_url)
    compose_postgres = {
        k: _COMPOSE_VARIABLE.sub(lambda m: f"<secret:{m[1]}>", v) for k, v in compose["postgres"]["environment"].items()
    }
    for env in (compose_postgres, _k8s_env(k8s_postgres_env())):
        assert database.username == env["POSTGRES_USER"]
        assert database.path == "/" + env["POSTGRES_DB"]
        assert env["POSTGRES_PASSWORD"] == "<secret:POSTGRES_PASSWORD>"
        assert database.password == SECRETS["POSTGRES_PASSWORD"]
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert k8s_object("Service", "postgres")["spec"]["ports"][0]["port"] == 5432
    redis = urlsplit(settings.redis_url)
    assert (redis.hostname, redis.port) == ("redis", 6379)
    assert k8s_object("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    for name in ("postgres", "redis"):
        k8s_image = k8s_object("StatefulSet" if name == "postgres" else "Deployment", name)["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        assert compose[name]["image"] == k8s_image


def k8s_postgres_env() -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = k8s_object("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    return env


def test_nats_image_is_the_server_version_the_tests_run() -> None:
    tested = subprocess.run([str(nats_server_path()), "--version"], capture_output=True, text=True, check=True)
    version = re.search(r"v(\d+\.\d+\.\d+)", tested.stdout)
    assert version is not None, tested.stdout
    assert k8s_object("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        f"nats:{version[1]}"
    )


def test_nats_conf_is_valid_for_each_node() -> None:
    for i in range(NATS_NODES):
        checked = subprocess.run(
            [str(nats_server_path()), "-c", str(DEPLOY / "nats.conf"), "-t"],
            env={"NATS_SERVER_NAME": f"nats-{i}"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_secrets_come_from_the_operator_only() -> None:
    compose_text = (DEPLOY / "compose.yaml").read_text()
    assert set(re.findall(r"\$\{(\w+):\?", compose_text)) == set(SECRETS)
    referenced = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for obj in kubernetes_objects()
        if obj["kind"] in ("Deployment", "Job", "StatefulSet")
        for container in obj["spec"]["template"]["spec"]["containers"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert referenced == set(SECRETS)
    assert not [o for o in kubernetes_objects() if o["kind"] == "Secret"], "no secret values in the manifests"
    readme = (DEPLOY / "README.md").read_text()
    for name in SECRETS:
        assert f"--from-literal={name}=" in readme, f"README.md does not say how to create {name}"


def test_in_compose_the_services_start_after_the_migration() -> None:
    services = load_compose()["services"]
    for name in compose_components():
        if name != "migrate":
            assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name


@pytest.mark.skipif(
    "projector_partitions" not in TallySettings.__struct_fields__, reason="SHIPSKIP_PROJECTOR_PARTITIONS not built yet"
)
def test_one_projector_per_partition_covering_all_of_them() -> None:
    for platform, read in PLATFORMS.items():
        folded: list[int] = []
        for component in read().values():
            if component.command == "projector":
                tally = read_settings(component)[1]["tally"]
                assert tally.partitions == PARTITIONS, (platform, component.name)
                folded += list(tally.projector_partitions)
        assert sorted(folded) == list(range(PARTITIONS)), (platform, folded)


def dockerfile_copies() -> dict[Path, Path]:
    """Destination in the image -> source in the repository, for the final stage's COPY lines of files."""
    stages = (ROOT / "Dockerfile").read_text().split("\nFROM ")
    copies: dict[Path, Path] = {}
    for line in stages[-1].splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            copies[Path(words[-1])] = Path(words[1])
    return copies


def test_the_dockerfile_builds_the_project_and_runs_shipskip() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["shipskip"]' in text
    assert PROJECT["scripts"]["shipskip"] == "services.cli:main"
    build_stage = text.split("\nFROM ")[1]
    copied = {word for line in build_stage.splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    # The wheel needs its metadata (README.md is the long description) and every package.
    assert {"pyproject.toml", PROJECT["readme"], *packages["packages"]} <= copied
    for source in [*copied, *map(str, dockerfile_copies().values())]:
        assert (ROOT / source).exists(), source
    assert "USER 10001" in text
    assert ".venv" in (ROOT / ".dockerignore").read_text()


# -- Kubernetes' schemas, resources, probes, disruption budgets, scraping, the admin API ------------------------------


def assembled_objects() -> list[dict[str, Any]]:
    """What ``kubectl apply -k`` sends: the listed resources and the generated ConfigMaps (their name, without the
    hash suffix kustomize adds)."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    generated = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": {Path(file).name: (DEPLOY / file).read_text() for file in generator["files"]},
        }
        for generator in kustomization.get("configMapGenerator", [])
    ]
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "configMapGenerator"}, (
        "kustomize features unchecked"
    )
    return kubernetes_objects() + generated


def test_every_object_is_valid_for_kubernetes_by_its_schema() -> None:
    objects = assembled_objects()
    assert {o["kind"] for o in objects} >= {"Deployment", "StatefulSet", "Job", "Service", "Ingress", "ConfigMap"}
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        try:
            checked = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where} is not valid for Kubernetes {KUBERNETES_VERSION}: {exc}") from None
        assert checked == KUBERNETES_VERSION, where


def test_the_schema_check_catches_a_wrong_manifest() -> None:
    votes = k8s_object("Deployment", "votes")
    votes["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"memory": "1Gi"}  # not "limits"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(votes, KUBERNETES_VERSION, strict=True)


def pods() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod template) of everything that runs containers."""
    return [
        (o, o["spec"]["template"]) for o in kubernetes_objects() if o["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def test_every_container_has_requests_and_a_memory_limit() -> None:
    for obj, template in pods():
        for container in template["spec"]["containers"]:
            resources = container.get("resources", {})
            where = f"{obj['kind']} {obj['metadata']['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where


def test_every_service_process_is_probed_for_liveness_and_readiness() -> None:
    for name, component in k8s_components().items():
        if component.command in ("migrate", "catalog load"):
            continue
        container = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name


def test_votes_and_read_have_a_disruption_budget_that_lets_a_drain_proceed() -> None:
    budgets = [o for o in kubernetes_objects() if o["kind"] == "PodDisruptionBudget"]
    for name in ("votes", "read"):
        deployment = k8s_object("Deployment", name)
        replicas = deployment["spec"]["replicas"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if b["spec"]["selector"]["matchLabels"] == labels]
        spec = budget["spec"]
        allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
        assert 1 <= allowed < replicas, f"{name}: a drain could take all of it, or none ({spec})"


def test_prometheus_scrapes_each_ops_port_which_nothing_public_exposes() -> None:
    ops_ports: dict[str, int] = {}
    for name, component in k8s_components().items():
        if component.command in ("migrate", "catalog load"):
            assert not component.scrape, name
            continue
        telemetry = read_settings(component)[1]["telemetry"]
        port = ops_port_of(component.args[1] if component.args[0] == "serve" else "projector", telemetry)
        assert component.scrape == {"scrape": "true", "port": str(port), "path": "/metrics"}, name
        assert port in component.ports, name
        ops_ports[name] = port
    services = [o for o in kubernetes_objects() if o["kind"] == "Service"]
    serving = {p.get("targetPort", p["port"]) for o in services for p in o["spec"]["ports"]}
    for name in ("votes", "read"):
        assert ops_ports[name] not in serving, f"a Service exposes the {name} API's ops port"
    compose = load_compose()["services"]
    published = {str(port).split(":")[-2] for service in compose.values() for port in service.get("ports", [])}
    assert not published & {str(port) for port in ops_ports.values()}, "compose publishes an ops port"
    # compose's Prometheus configuration scrapes the same ports.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yaml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in ("votes", "read"):
        (sd,) = jobs[name]["dns_sd_configs"]
        assert (sd["names"], sd["port"]) == ([name], ops_ports[name])
    targets = {t for c in jobs["projector"]["static_configs"] for t in c["targets"]}
    assert targets == {f"projector-{i}:{ops_ports[f'projector-{i}']}" for i in range(PARTITIONS)}


def ingress_paths(host_backend: str) -> list[tuple[str, str]]:
    return [
        (path["path"], path["pathType"])
        for rule in k8s_object("Ingress", "shipskip")["spec"]["rules"]
        for path in rule["http"]["paths"]
        if path["backend"]["service"]["name"] == host_backend
    ]


def routed(path: str, paths: list[tuple[str, str]]) -> bool:
    """Whether a request for ``path`` matches one of the Ingress's paths (Kubernetes' Prefix: by whole segments)."""
    for prefix, kind in paths:
        if kind == "Exact" and path == prefix:
            return True
        if kind == "Prefix" and (prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            return True
    return False


def test_the_admin_api_is_routed_nowhere_public() -> None:
    from services.operators.admin import admin_router

    assert admin_router().path == "/admin"
    read_paths = ingress_paths("read")
    assert not routed("/admin", read_paths)
    assert not routed("/admin/void", read_paths)
    # ... while every public route of the read API is.
    for route in routes_of(["services.tally.read.app"]) - {"/healthz", "/readyz"}:  # the probes: inside only
        assert routed(route.split("{")[0].rstrip("/") or "/", read_paths), route
    assert routed("/schema/openapi.json", read_paths)
    # nginx (compose): the read server answers /admin itself, 404.
    nginx = (DEPLOY / "nginx.conf").read_text()
    read_port = settings_of("read")["tally"].port
    server = nginx.split(f"listen {read_port};", 1)[1].split("\n  }\n", 1)[0]
    admin = re.search(r"location\s+(?:\^~\s+)?/admin\s*\{([^}]*)\}", server)
    assert admin is not None, "nginx's read server has no location for /admin"
    assert re.fullmatch(r"\s*return 404;\s*", admin.group(1)), admin.group(1)
    # nginx takes the longest matching prefix, whatever the order: /admin wins over the catch-all "/".
    assert "location / {" in server


# -- the front door: what the services expect in front of them (docs/operations.md) ---------------------------------


@dataclass
class NginxBlock:
    """A block of nginx.conf: its directives (name -> each occurrence's arguments) and its blocks, in order."""

    args: list[str]
    directives: dict[str, list[list[str]]] = field(default_factory=dict)
    blocks: list[tuple[str, "NginxBlock"]] = field(default_factory=list)

    def one(self, name: str) -> list[str]:
        found = self.directives.get(name, [])
        assert len(found) == 1, f"{name}: {found}"
        return found[0]

    def block(self, name: str, *args: str) -> "NginxBlock":
        found = [b for n, b in self.blocks if n == name and (not args or b.args == list(args))]
        assert len(found) == 1, f"{name} {args}: {len(found)} blocks"
        return found[0]

    def inherited(self, name: str, *outer: "NginxBlock") -> list[str]:
        """A directive as it applies here: this block's, else the nearest enclosing one's."""
        for block in (self, *outer):
            if name in block.directives:
                return block.one(name)
        raise AssertionError(f"{name} is set nowhere")


def parse_nginx(text: str) -> NginxBlock:
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', re.sub(r"#[^\n]*", "", text))
    root = NginxBlock([])
    stack: list[NginxBlock] = [root]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].directives.setdefault(words[0], []).append(words[1:])
            words = []
        elif token == "{":
            block = NginxBlock(words[1:])
            stack[-1].blocks.append((words[0], block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token)
    assert len(stack) == 1, "unbalanced braces in nginx.conf"
    assert not words, f"nginx.conf ends without a ';': {words}"
    return root


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


def test_nginx_limits_each_client_address_and_holds_slow_and_idle_clients_itself() -> None:
    http = parse_nginx((DEPLOY / "nginx.conf").read_text()).block("http")
    zones = {args[1].split("=")[1].split(":")[0]: args[0] for args in http.directives["limit_conn_zone"]}
    zones |= {args[1].split("=")[1].split(":")[0]: args[0] for args in http.directives["limit_req_zone"]}
    assert set(zones.values()) == {"$binary_remote_addr"}, "every limit is per client address"
    assert http.one("limit_conn_status") == http.one("limit_req_status") == ["429"]
    server_settings = HttpServerSettings.from_env(Env({}, fallback={}))
    live = settings_of("read")["live"]
    assert seconds(http.one("client_header_timeout")[0]) <= server_settings.idle_timeout_ms / 1000
    assert seconds(http.one("client_body_timeout")[0]) <= BODY_TIMEOUT_S
    for name in ("votes", "read"):
        upstream = http.block("upstream", name)
        # nginx lets its kept-alive connections to a service go before the service would close them.
        assert seconds(upstream.one("keepalive_timeout")[0]) < server_settings.idle_timeout_ms / 1000, name
        assert int(upstream.one("keepalive")[0]) > 0, name
    ports = {"votes": settings_of("votes")["votes"].port, "read": settings_of("read")["tally"].port}
    servers = {int(b.one("listen")[0]): b for n, b in http.blocks if n == "server"}
    votes, read = servers[ports["votes"]], servers[ports["read"]]
    for server in (votes, read):
        assert server.one("limit_req")[0].split("=")[1] in zones
    votes_location = votes.block("location", "/")
    assert votes_location.inherited("proxy_request_buffering", votes, http) == ["on"]
    assert votes_location.inherited("limit_conn", votes, http)[0] == "requests_per_address"
    stream = next(b for n, b in read.blocks if n == "location" and "community/stream" in " ".join(b.args))
    assert re.fullmatch(stream.args[1], "/v1/comparisons/x-vs-y/community/stream")
    assert stream.one("proxy_buffering") == ["off"]
    assert seconds(stream.one("proxy_read_timeout")[0]) > live.keepalive_s
    zone, most = stream.one("limit_conn")
    assert zone == "streams_per_address"
    assert int(most) == live.max_streams_per_address, "nginx and the read API take as many streams per address"
    assert read.block("location", "/").one("limit_conn")[0] == "requests_per_address"


def test_the_ingress_limits_each_client_address_and_buffers_bodies() -> None:
    annotations = k8s_object("Ingress", "shipskip")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    live = settings_of("read")["live"]
    assert int(annotations[prefix + "limit-connections"]) > live.max_streams_per_address, "room for the streams"
    assert int(annotations[prefix + "limit-rps"]) > 0
    assert annotations[prefix + "proxy-request-buffering"] == "on"
    assert annotations[prefix + "proxy-buffering"] == "off"  # the live streams


def test_the_services_count_per_address_behind_the_front_door() -> None:
    """Behind a proxy every connection comes from the proxy: unless the services believe its X-Forwarded-For, the
    whole public would be one address (one address's rate limits, 32 live streams in all)."""
    for platform, read in PLATFORMS.items():
        components = read()
        assert read_settings(components["votes"])[1]["votes"].trusted_proxies, platform
        assert read_settings(components["read"])[1]["live"].trusted_proxies, platform
