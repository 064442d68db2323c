"""The container deployment agrees with the code it deploys; checked without Docker.

docker-compose.yml, the Dockerfile, .dockerignore and deploy/ are parsed and compared
with celeryconfig.STEPS, tests.servers.stack (POOLS, Processes.start_worker) and
novahooks.settings. deploy/healthcheck.py, the image's HEALTHCHECK, runs against a real
socket, a real outbox and a real HTTP server. Nothing here needs the session's servers.
"""

import ast
import base64
import configparser
import http.server
import importlib.util
import ipaddress
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

import pytest
import yaml

import celeryconfig
from novahooks.nova.outbox import Outbox
from tests.servers import stack
from novahooks.settings import SECRET_KEYS, SECTIONS, Secret, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONF = DEPLOY / "novahooks.conf"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]  # type: Dict[str, Dict[str, Any]]
DEMO_BACKENDS = ("ldap", "bind", "netbox", "netbox-postgres", "netbox-redis")
#: Environment names that carry credentials (a *_FILE variant names a path instead).
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|SECRET_KEY|PEPPER(_\d+)?|BASIC_AUTH|"
                         r"API_KEY|PRIVATE_KEY|TSIG_SECRET)$")
LOOPBACK = ("127.0.0.1", "::1", "[::1]")
DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "pyamqp": 5672, "amqps": 5671,
                 "http": 80, "https": 443, "ldap": 389, "ldaps": 636, "postgresql": 5432}


def _load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("novahooks_healthcheck",
                                                  DEPLOY / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


healthcheck = _load_healthcheck()


# ---- helpers ----------------------------------------------------------------------------

def argv_of(value: Any) -> List[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def env_of(service: Dict[str, Any]) -> Dict[str, Optional[str]]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {k: (None if v is None else str(v)) for k, v in env.items()}
    pairs = [item.split("=", 1) for item in env]
    return {p[0]: (p[1] if len(p) > 1 else None) for p in pairs}


def env_files(service: Dict[str, Any]) -> List[str]:
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str) else files
    return [f["path"] if isinstance(f, dict) else f for f in files]


def read_env(path: Path) -> Dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def example_env(env_file: str) -> Dict[str, str]:
    return read_env(ROOT / (env_file + ".example"))


def mounts(service: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(source, target) of every volume of a service, short or long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            parts = volume.split(":")
            found.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return found


def ports_of(service: Dict[str, Any]) -> List[Tuple[Optional[str], Optional[str], str]]:
    """(host_ip, published, target) of every published port."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            found.append((port.get("host_ip"), str(port.get("published") or "") or None,
                          str(port["target"])))
            continue
        spec = str(port).split("/")[0]
        host_ip = None
        if spec.startswith("["):
            host_ip, spec = spec[:spec.index("]") + 1], spec[spec.index("]") + 2:]
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip = parts[0]
        published = parts[-2] if len(parts) >= 2 else None
        found.append((host_ip, published, parts[-1]))
    return found


def listening_ports(service: Dict[str, Any]) -> Set[int]:
    exposed = {int(str(p).split("/")[0]) for p in service.get("expose") or []}
    return exposed | {int(target) for _, _, target in ports_of(service)}


def project_image() -> str:
    images = {s["image"] for s in SERVICES.values() if "build" in s}
    assert len(images) == 1, "services built from the project name different images: %s" % images
    return images.pop()


def project_services() -> Dict[str, Dict[str, Any]]:
    image = project_image()
    return {n: s for n, s in SERVICES.items() if s.get("image") == image or "build" in s}


def worker_services() -> Dict[str, Dict[str, Any]]:
    return {n: s for n, s in SERVICES.items()
            if argv_of(s.get("command"))[:1] == ["celery"] and "worker" in argv_of(s["command"])}


def flower_service() -> Tuple[str, Dict[str, Any]]:
    found = [(n, s) for n, s in SERVICES.items()
             if argv_of(s.get("command"))[:1] == ["celery"] and "flower" in argv_of(s["command"])]
    assert len(found) == 1, "expected one Flower service, found %s" % [n for n, _ in found]
    return found[0]


def option(argv: List[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def settings_name(name: str) -> Optional[Tuple[str, str]]:
    """(section, key) a NOVAHOOKS_* variable sets, or None if it sets nothing."""
    if name == "NOVAHOOKS_CONFIG":
        return ("", "config")
    for cls in SECTIONS:
        prefix = "NOVAHOOKS_%s_" % cls.NAME.upper()
        if not name.startswith(prefix):
            continue
        key = name[len(prefix):].lower()
        if key in cls.FIELDS:
            return cls.NAME, key
        if key.endswith("_file") and key[:-5] in SECRET_KEYS and key[:-5] in cls.FIELDS:
            return cls.NAME, key
    return None


def conf_settings() -> Any:
    return load_settings(str(CONF), environ={})


def endpoint(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme.lower()]


def dockerfile() -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    candidates = [path] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex += "/?"
                    i += 1
                continue
            char = pattern[i]
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            if char == "[":
                end = pattern.index("]", i)
                regex = regex[:-2] + pattern[i:end + 1]
                i = end
            i += 1
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# ---- workers ----------------------------------------------------------------------------

def reference_worker_argv(queue: str, tmp_path: Path, monkeypatch: Any) -> List[str]:
    """What Processes.start_worker runs for `queue`, as ``celery ...``."""
    recorded = {}  # type: Dict[str, List[str]]

    class RecordingProcess(object):
        def __init__(self, name: str, argv: List[str], log: Path, **_: Any) -> None:
            recorded["argv"] = argv

    class FakeStack(object):
        workdir = tmp_path

        def env(self) -> Dict[str, str]:
            return {}

    monkeypatch.setattr(stack, "Process", RecordingProcess)
    stack.Processes(FakeStack(), progress=lambda _: None).start_worker(queue)  # type: ignore
    argv = recorded["argv"]
    assert argv[1:3] == ["-m", "celery"], argv
    return ["celery"] + argv[3:]


def test_pools_cover_every_step() -> None:
    assert set(stack.POOLS) == set(celeryconfig.STEPS)


def test_every_queue_has_exactly_one_worker_service() -> None:
    queues = Counter(option(argv_of(s["command"]), "-Q") for s in worker_services().values())
    assert set(queues) == set(celeryconfig.STEPS), queues
    assert all(count == 1 for count in queues.values()), queues


@pytest.mark.parametrize("queue", celeryconfig.STEPS)
def test_worker_command_is_the_one_the_stack_runs(queue: str, tmp_path: Path,
                                                  monkeypatch: Any) -> None:
    (name, service), = [(n, s) for n, s in worker_services().items()
                        if option(argv_of(s["command"]), "-Q") == queue]
    argv = argv_of(service["command"])
    assert argv[:4] == ["celery", "-A", "tasks.app", "worker"], name
    assert option(argv, "-c") == str(stack.POOLS[queue]), name
    assert option(argv, "-n") == "%s@%%h" % queue, name
    assert "-E" in argv, "%s: workers must send task events (Flower, status)" % name

    # Processes.start_worker's arguments up to -E, but for the host part of the node name
    # (%h: the container's hostname, so scaled replicas get distinct names).
    reference = reference_worker_argv(queue, tmp_path, monkeypatch)
    cut = reference.index("-E") + 1
    node = reference.index("-n") + 1
    assert argv[:node] + argv[node + 1:cut] == reference[:node] + reference[node + 1:cut]
    assert argv[node].split("@")[0] == reference[node].split("@")[0]
    extra = argv[cut:]
    assert all(arg.startswith("--") for arg in extra), extra
    assert not [a for a in extra if a.split("=")[0] in ("--concurrency", "--queues",
                                                         "--hostname", "--pool")], extra
    # Flower shows a worker offline when it sends no heartbeats.
    assert "--without-heartbeat" not in extra


def test_workers_get_config_data_and_secrets() -> None:
    target = env_of(SERVICES["worker-ipam"])["NOVAHOOKS_CONFIG"]
    for name, service in worker_services().items():
        assert env_of(service).get("NOVAHOOKS_CONFIG") == target, name
        assert ("./deploy/novahooks.conf", target) in mounts(service), name
        assert "deploy/secrets.env" in env_files(service), name
        data = [m for m in mounts(service) if m[1] == "/var/lib/novahooks/data"]
        assert data, "%s: no shared volume for the ledger and the audit file" % name
    settings = conf_settings()
    assert settings.ledger.url.startswith("sqlite:////var/lib/novahooks/data/")
    assert settings.audit.path.startswith("/var/lib/novahooks/data/")


# ---- image --------------------------------------------------------------------------------

def test_project_services_share_one_image_and_build() -> None:
    image = project_image()
    builds = [s["build"] for s in SERVICES.values() if "build" in s]
    assert all(b == builds[0] for b in builds), builds
    build = builds[0]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile",
                                                                            "Dockerfile")
    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile_name).is_file()
    services = project_services()
    for name in list(worker_services()) + [flower_service()[0], "relay", "cli"]:
        assert name in services, "%s does not run the project image %s" % (name, image)
        assert SERVICES[name].get("build") == build, name


def test_dockerfile_runs_as_non_root_and_installs_both_distributions() -> None:
    instructions = dockerfile()
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert froms and froms[0].split()[0] == "python:3.11-slim"
    users = [args for kw, args in instructions if kw == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    runs = [args for kw, args in instructions if kw == "RUN"]
    assert any("pip install" in r and re.search(r"\s\.\s", r + " ") and "./worker" in r
               for r in runs), runs
    assert any(kw == "HEALTHCHECK" for kw, _ in instructions)
    assert any(kw in ("CMD", "ENTRYPOINT") for kw, _ in instructions)


def test_dockerfile_bakes_in_no_secrets() -> None:
    for keyword, args in dockerfile():
        if keyword == "ENV":
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args) if "=" in args \
                else args.split()[:1]
        elif keyword == "ARG":
            names = [a.split("=")[0] for a in args.split()]
        else:
            names = []
        for name in names:
            assert not SECRET_NAME.search(name.upper()), "%s %s" % (keyword, args)
            # Configuration is given at run time, never baked into the image.
            assert settings_name(name) is None, name
        if keyword in ("COPY", "ADD"):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert not source.endswith(".env") and "secret" not in source.lower(), args
                assert not dockerignore_excludes(source), "%s is not in the build context" % source
                assert (ROOT / source).exists(), source


def test_dockerignore_keeps_secrets_out_and_the_package_in() -> None:
    for path in ("deploy/secrets.env", "deploy/flower.env", "deploy/demo.env", ".git/config",
                 ".venv/bin/python", "tests/test_compose.py", "novahooks/__pycache__/cli.pyc",
                 "deploy/novahooks.conf"):
        assert dockerignore_excludes(path), path
    for package in ("novahooks", "tasks"):
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert not dockerignore_excludes(str(path.relative_to(ROOT))), path
    for path in ("pyproject.toml", "worker/pyproject.toml", "README.md", "celeryconfig.py",
                 "deploy/healthcheck.py"):
        assert not dockerignore_excludes(path), path


# ---- Flower, ports, secrets ---------------------------------------------------------------

def test_flower_credentials_come_from_an_env_file() -> None:
    name, service = flower_service()
    assert "FLOWER_BASIC_AUTH" not in env_of(service), "inline credentials in %s" % name
    assert not [a for a in argv_of(service["command"]) if a.startswith("--basic-auth")]
    files = [f for f in env_files(service) if "FLOWER_BASIC_AUTH" in example_env(f)]
    assert files, "no env_file of %s provides FLOWER_BASIC_AUTH" % name
    for env_file in files:
        assert re.fullmatch(r"[^:,]+:[^,]+(,[^:,]+:[^,]+)*",
                            example_env(env_file)["FLOWER_BASIC_AUTH"])
        readers = [n for n, s in SERVICES.items() if env_file in env_files(s)]
        assert readers == [name], "%s is read by %s too" % (env_file, readers)


def test_flower_gets_the_signing_key_from_the_workers_env_file() -> None:
    """Flower's inspect/control pages broadcast through tasks.signing:Control, which sends
    nothing unsigned: without the workers' key those pages stay empty."""
    name, service = flower_service()
    assert "NOVAHOOKS_BROKER_SIGNING_KEY" not in env_of(service), "inline key in %s" % name
    keyed = [f for f in env_files(service) if "NOVAHOOKS_BROKER_SIGNING_KEY" in example_env(f)]
    assert keyed, "no env_file of %s provides NOVAHOOKS_BROKER_SIGNING_KEY" % name
    for worker, spec in worker_services().items():
        assert set(keyed) <= set(env_files(spec)), "%s signs with another key than %s" % (
            name, worker)


def test_flower_binds_only_to_loopback() -> None:
    name, service = flower_service()
    published = ports_of(service)
    assert published, "%s publishes no port" % name
    port = str(healthcheck.flower_port(argv_of(service["command"])))
    for host_ip, _, target in published:
        assert host_ip in LOOPBACK, "%s published on %s" % (name, host_ip or "every address")
        assert target == port


def test_every_published_port_is_on_loopback() -> None:
    for name, service in SERVICES.items():
        for host_ip, _, _ in ports_of(service):
            assert host_ip in LOOPBACK, "%s publishes on %s" % (name, host_ip or "all addresses")


def test_no_secret_values_inline() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    for name, service in SERVICES.items():
        for key in env_of(service):
            if SECRET_NAME.search(key):
                pytest.fail("%s: %s is set inline; put it in an env_file" % (name, key))
        build = service.get("build")
        if isinstance(build, dict):
            for key in (build.get("args") or {}):
                assert not SECRET_NAME.search(key), "%s: build arg %s" % (name, key)
        commands = [argv_of(service.get(k)) for k in ("command", "entrypoint")]
        commands.append(argv_of((service.get("healthcheck") or {}).get("test")))
        for argv in commands:
            line = " ".join(argv)
            for match in re.finditer(r"\b(\w*(?:PASS\w*|TOKEN|SECRET\w*|AUTH))=(\S+)", line):
                assert match.group(2).strip("\"'").startswith("$"), "%s: %s" % (name, line)
            for match in re.finditer(r"(?:^|\s)(--requirepass|--pass|-a|-w)\s+(\S+)", line):
                assert match.group(2).strip("\"'").startswith("$"), "%s: %s" % (name, line)


def test_env_files_have_examples_and_secrets_only_live_there() -> None:
    for name, service in SERVICES.items():
        for env_file in env_files(service):
            assert env_file.startswith("deploy/") and env_file.endswith(".env"), env_file
            assert (ROOT / (env_file + ".example")).is_file(), "%s: no %s.example" % (
                name, env_file)


def test_every_novahooks_variable_names_a_setting() -> None:
    names = {}  # type: Dict[str, str]
    for name, service in SERVICES.items():
        names.update({k: "docker-compose.yml " + name for k in env_of(service)})
    for example in DEPLOY.glob("*.env.example"):
        names.update({k: example.name for k in read_env(example)})
    novahooks = {k: where for k, where in names.items() if k.startswith("NOVAHOOKS_")}
    assert novahooks
    for variable, where in novahooks.items():
        assert settings_name(variable) is not None, "%s (%s) sets no setting" % (variable, where)


#: Secrets only one driver of a section reads: required only when that driver is selected.
DRIVER_SECRETS = {("ipam", "password"): "infoblox", ("dns", "password"): "infoblox"}
#: Secrets that are empty by design outside a special moment (a key rotation).
OPTIONAL_SECRETS = {("broker", "previous_signing_key")}
#: Sections of services the compose file does not run, and where they run instead.
NOT_COMPOSED = {"vendordata": "novahooks vendordata runs where Nova's metadata API reaches it "
                              "over TLS (README: dynamic vendordata), not in this stack"}


def test_conf_and_secrets_give_every_driver_its_credentials() -> None:
    environ = {}  # type: Dict[str, str]
    for env_file in env_files(next(iter(worker_services().values()))):
        environ.update(example_env(env_file))
    settings = load_settings(str(CONF), environ=environ)
    for cls in SECTIONS:
        if cls.NAME in NOT_COMPOSED:
            continue
        for key in SECRET_KEYS:
            if (cls.NAME, key) in OPTIONAL_SECRETS:
                continue
            driver = DRIVER_SECRETS.get((cls.NAME, key))
            if driver is not None and getattr(settings, cls.NAME).driver != driver:
                continue
            if key in cls.FIELDS:
                value = getattr(getattr(settings, cls.NAME), key)
                assert isinstance(value, Secret) and value, "[%s] %s has no value" % (
                    cls.NAME, key)


# ---- configuration file -------------------------------------------------------------------

def test_conf_parses_from_the_file_alone() -> None:
    settings = conf_settings()
    assert settings.source == str(CONF)
    raw = configparser.ConfigParser(interpolation=None)
    raw.read(CONF)
    for section in raw.sections():
        for key, value in raw.items(section):
            # ConfigParser keeps "; comment" after a value as part of the value.
            assert not re.search(r"\s[;#]", value), "[%s] %s = %r" % (section, key, value)
            secret = key in SECRET_KEYS or (key.endswith("_file") and key[:-5] in SECRET_KEYS)
            assert not secret, "[%s] %s: secrets belong in deploy/secrets.env" % (section, key)


def test_services_mount_the_conf_where_novahooks_config_points() -> None:
    for name, service in project_services().items():
        target = env_of(service).get("NOVAHOOKS_CONFIG")
        if name == "demo-tls":
            continue
        assert target, "%s has no NOVAHOOKS_CONFIG" % name
        assert ("./deploy/novahooks.conf", target) in mounts(service), name


def _static_address_owner(address: str) -> Tuple[str, str]:
    for name, service in SERVICES.items():
        networks = service.get("networks") or {}
        if isinstance(networks, dict):
            for network, options in networks.items():
                if options and options.get("ipv4_address") == address:
                    return name, network
    raise AssertionError("no service has the fixed address %s" % address)


def test_conf_hosts_are_services_listening_on_those_ports() -> None:
    settings = conf_settings()
    targets = [("[broker] url", endpoint(settings.broker.url)),
               ("[ipam] url", endpoint(settings.ipam.url)),
               ("[inventory] url", endpoint(settings.inventory.url)),
               ("[directory] url", endpoint(settings.directory.url)),
               ("[dns] server", (settings.dns.server, settings.dns.port))]
    if "syslog" in settings.audit.drivers:
        targets.append(("[audit] syslog_host", (settings.audit.syslog_host,
                                                settings.audit.syslog_port)))
    if settings.ledger.url.startswith("postgresql"):
        targets.append(("[ledger] url", endpoint(settings.ledger.url)))
    for what, (host, port) in targets:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            assert host in SERVICES, "%s: %s is not a compose service" % (what, host)
            service_name = host
        else:
            service_name, network = _static_address_owner(str(address))
            config = COMPOSE["networks"][network]["ipam"]["config"][0]
            assert address in ipaddress.ip_network(config["subnet"]), what
            if "ip_range" in config:
                assert address not in ipaddress.ip_network(config["ip_range"]), (
                    "%s: %s could be handed to another container" % (what, address))
        service = SERVICES[service_name]
        assert port in listening_ports(service), "%s: %s does not listen on %d" % (
            what, service_name, port)
        configured = env_of(service).get("LDAP_PORT_NUMBER")
        assert configured is None or int(configured) == port, what


def test_demo_directory_matches_the_conf() -> None:
    settings = conf_settings()
    ldap = SERVICES[urlsplit(settings.directory.url).hostname or ""]
    root = env_of(ldap)["LDAP_ROOT"]
    assert settings.directory.bind_dn == "cn=novahooks,ou=services," + root
    assert settings.directory.base_dn == "ou=hosts," + root
    script = (DEPLOY / "demo" / "openldap" / "novahooks.sh").read_text()
    assert "dn: cn=novahooks,ou=services,${LDAP_ROOT}" in script
    assert "dn: ou=hosts,${LDAP_ROOT}" in script
    assert ("./deploy/demo/openldap", "/docker-entrypoint-initdb.d") in mounts(ldap)
    # The certificate names the host the workers connect to, and its CA is what they trust.
    tls = SERVICES["demo-tls"]
    command = " ".join(argv_of(tls["command"]))
    assert 'hostname="%s"' % urlsplit(settings.directory.url).hostname in command
    ca_dir = os.path.dirname(settings.directory.ca_file)
    (volume, written), = [m for m in mounts(tls)]
    assert 'Path("%s")' % written in command
    for name in ("worker-ldap", "cli"):
        assert (volume, ca_dir) in [(s, t) for s, t in mounts(SERVICES[name])], name
    assert (volume, written) in mounts(ldap)
    assert env_of(ldap)["LDAP_TLS_CA_FILE"] == written + "/ca.crt"
    assert settings.directory.ca_file == ca_dir + "/ca.crt"


def _named_zones(text: str) -> Dict[str, str]:
    return {m.group(1).lower().rstrip("."): m.group(2)
            for m in re.finditer(r'zone\s+"([^"]+)"\s*\{(.*?)\n\};', text, re.S)}


def test_demo_dns_matches_the_conf(tmp_path: Path) -> None:
    settings = conf_settings()
    bind_dir = DEPLOY / "demo" / "bind"
    named = (bind_dir / "named.conf").read_text()
    zones = _named_zones(named)
    wanted = {z.lower().rstrip(".") for z in [settings.dns.zone] + settings.dns.reverse_zones}
    assert set(zones) == wanted
    for zone, body in zones.items():
        assert (bind_dir / ("db." + zone)).is_file(), zone
        assert 'file "/var/lib/bind/db.%s"' % zone in body
        assert "grant %s zonesub ANY" % settings.dns.tsig_key_name in body, zone
    assert "listen-on port %d" % settings.dns.port in named
    entrypoint = (bind_dir / "entrypoint.sh").read_text()
    assert 'key "%s"' % settings.dns.tsig_key_name in entrypoint
    assert "algorithm %s;" % settings.dns.tsig_algorithm in entrypoint
    bind = SERVICES[_static_address_owner(settings.dns.server)[0]]
    assert ("./deploy/demo/bind", "/novahooks") in mounts(bind)
    assert "deploy/secrets.env" in env_files(bind)
    # The demo NetBox's prefixes are those of the test suite, inside the reverse zones.
    init = ast.parse((DEPLOY / "demo" / "netbox" / "init.py").read_text())
    prefixes, = [ast.literal_eval(node.value) for node in init.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") ==
                 "PREFIXES"]
    assert tuple(prefixes) == tuple(stack.PREFIXES)
    for prefix in prefixes:
        reverse = ipaddress.ip_network(prefix).network_address.reverse_pointer
        assert any(reverse.endswith("." + z) for z in settings.dns.reverse_zones), prefix
    checkconf = shutil.which("named-checkconf")
    if checkconf is None:
        return
    # named's own parser, on the files as the container sees them (zones loaded too).
    (tmp_path / "run" / "named").mkdir(parents=True)
    (tmp_path / "var" / "lib" / "bind").mkdir(parents=True)
    (tmp_path / "var" / "cache" / "bind").mkdir(parents=True)
    shutil.copytree(bind_dir, tmp_path / "novahooks")
    for zone in zones:
        shutil.copy(bind_dir / ("db." + zone), tmp_path / "var" / "lib" / "bind")
    secret = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "run" / "named" / "novahooks.key").write_text(
        'key "%s" { algorithm %s; secret "%s"; };\n'
        % (settings.dns.tsig_key_name, settings.dns.tsig_algorithm, secret))
    result = subprocess.run([checkconf, "-t", str(tmp_path), "-z", "/novahooks/named.conf"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=30)
    assert result.returncode == 0, result.stdout


def test_scripts_find_the_variables_they_need() -> None:
    """Every variable a demo service's scripts or commands require comes from its env."""
    for name, service in SERVICES.items():
        available = set(env_of(service))
        for env_file in env_files(service):
            available |= set(example_env(env_file))
        texts = [" ".join(argv_of(service.get(k))) for k in ("command", "entrypoint")]
        texts.append(" ".join(argv_of((service.get("healthcheck") or {}).get("test"))))
        for source, _ in mounts(service):
            path = ROOT / source
            if source.startswith("./") and path.is_dir():
                texts.extend(p.read_text() for p in path.iterdir() if p.is_file())
        needed = set()  # type: Set[str]
        for text in texts:
            needed |= set(re.findall(r"\$\$\{?([A-Z][A-Z0-9_]*)", text))
            needed |= set(re.findall(r"\$\{?(NOVAHOOKS_[A-Z0-9_]+)", text))
            needed |= set(re.findall(r"os\.environ\[[\"']([A-Z0-9_]+)[\"']\]", text))
        assert needed <= available, "%s lacks %s" % (name, sorted(needed - available))


# ---- health checks, profiles, dependencies ------------------------------------------------

def test_broker_and_workers_have_health_checks() -> None:
    for name in ["broker"] + list(worker_services()):
        check = SERVICES[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), name
        assert argv_of(check["test"])[:1] != ["NONE"], name


def test_long_running_services_have_health_checks() -> None:
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            continue
        assert (service.get("healthcheck") or {}).get("test"), "%s has no health check" % name


def test_project_health_checks_match_what_runs() -> None:
    for name, service in project_services().items():
        test = argv_of((service.get("healthcheck") or {}).get("test"))
        if not test:
            continue
        assert test[:2] == ["CMD", "novahooks-healthcheck"], name
        argv = ["/usr/local/bin/python", "/usr/local/bin/" + argv_of(service["command"])[0]]
        argv += argv_of(service["command"])[1:]
        assert healthcheck.role_of(argv) == test[2], name


def test_dependencies_exist_and_are_active_with_their_dependents() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        items = depends.items() if isinstance(depends, dict) else [(d, {}) for d in depends]
        for target, options in items:
            assert target in SERVICES, "%s depends on unknown %s" % (name, target)
            mine = set(service.get("profiles") or [])
            theirs = set(SERVICES[target].get("profiles") or [])
            assert not theirs or (mine and mine <= theirs), (
                "%s (profiles %s) depends on %s (profiles %s)" % (name, mine, target, theirs))
            condition = (options or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert (SERVICES[target].get("healthcheck") or {}).get("test"), target
            if condition == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", target


def test_demo_backends_are_under_the_demo_profile() -> None:
    for name in DEMO_BACKENDS:
        assert "demo" in (SERVICES[name].get("profiles") or []), name
    for name in ["broker", flower_service()[0]] + list(worker_services()):
        assert not SERVICES[name].get("profiles"), "%s must always run" % name
    relay = SERVICES["relay"]
    assert argv_of(relay["command"]) == ["novahooks", "relay"]
    assert relay.get("profiles"), "the relay runs on Nova hosts: only labs start it here"
    assert "outbox" in [s for s, t in mounts(relay)]


def test_broker_is_durable() -> None:
    broker = SERVICES["broker"]
    assert broker["image"].split(":")[0].split("/")[-1] == "redis"
    command = argv_of(broker["command"])
    if command[:2] == ["sh", "-c"]:  # sh expands the password from the broker's env file
        command = shlex.split(command[2])[1:]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--requirepass") == "$$NOVAHOOKS_BROKER_PASSWORD"  # sh: $
    assert "deploy/broker.env" in env_files(broker)
    assert [t for _, t in mounts(broker)] == ["/data"]
    assert endpoint(conf_settings().broker.url)[0] == "broker"


# ---- deploy/gen-secrets.sh ------------------------------------------------------------------

@pytest.mark.skipif(not all(shutil.which(t) for t in ("sh", "base64", "od", "head", "tr")),
                    reason="needs a POSIX shell with base64 and od")
def test_gen_secrets_writes_every_example_key(tmp_path: Path) -> None:
    subprocess.run(["sh", str(DEPLOY / "gen-secrets.sh"), str(tmp_path)], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    examples = sorted(DEPLOY.glob("*.env.example"))
    assert examples
    for example in examples:
        written = tmp_path / example.name[:-len(".example")]
        assert written.stat().st_mode & 0o077 == 0, written
        values = read_env(written)
        assert set(values) == set(read_env(example)), written.name
        assert all(v and "change-me" not in v for v in values.values()), written.name
    secrets_env = read_env(tmp_path / "secrets.env")
    assert re.fullmatch(r"[0-9a-f]{40}", secrets_env["NOVAHOOKS_IPAM_TOKEN"])
    assert secrets_env["NOVAHOOKS_IPAM_TOKEN"] == secrets_env["NOVAHOOKS_INVENTORY_TOKEN"]
    assert len(base64.b64decode(secrets_env["NOVAHOOKS_DNS_TSIG_SECRET"], validate=True)) == 32
    demo = read_env(tmp_path / "demo.env")
    assert demo["POSTGRES_PASSWORD"] == demo["DB_PASSWORD"]
    assert demo["REDIS_PASSWORD"] == demo["REDIS_CACHE_PASSWORD"]
    assert len(demo["SECRET_KEY"]) >= 50 and len(demo["API_TOKEN_PEPPER_1"]) >= 50
    assert re.fullmatch(r"admin:[^:,]+", read_env(tmp_path / "flower.env")["FLOWER_BASIC_AUTH"])
    # The drivers accept what it wrote.
    from tasks.backends.dns.rfc2136 import Rfc2136Dns
    settings = load_settings(str(CONF), environ=secrets_env)
    Rfc2136Dns(settings.dns)
    # A second run keeps existing files.
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    subprocess.run(["sh", str(DEPLOY / "gen-secrets.sh"), str(tmp_path)], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


# ---- deploy/healthcheck.py ------------------------------------------------------------------

def test_healthcheck_recognises_each_role() -> None:
    python = "/usr/local/bin/python"
    assert healthcheck.role_of([python, "/usr/local/bin/celery", "-A", "tasks.app", "worker",
                                "-Q", "dns"]) == "worker"
    assert healthcheck.role_of([python, "-m", "celery", "-A", "tasks.app", "worker"]) == "worker"
    assert healthcheck.role_of([python, "/usr/local/bin/celery", "-A", "tasks.app", "flower",
                                "--port=5555"]) == "flower"
    assert healthcheck.role_of([python, "/usr/local/bin/novahooks", "relay"]) == "relay"
    assert healthcheck.role_of([python, "/usr/local/bin/novahooks", "status"]) is None
    assert healthcheck.role_of([python, "/usr/local/bin/novahooks-healthcheck",
                                "worker"]) is None
    assert healthcheck.role_of([python, "-m", "novahooks.cli", "relay"]) == "relay"
    # With init: true, pid 1 is docker-init running the worker: it holds no connection.
    assert healthcheck.role_of(["/sbin/docker-init", "--", "celery", "-A", "tasks.app",
                                "worker"]) is None
    assert healthcheck.flower_port(["flower", "--port", "5600"]) == 5600


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="needs Linux /proc")
def test_healthcheck_sees_the_workers_broker_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        url = "redis://127.0.0.1:%d/0" % port
        ok, why = healthcheck.check_worker(os.getpid(), url)
        assert not ok, why
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        try:
            ok, why = healthcheck.check_worker(os.getpid(), url)
            assert ok, why
            ok, why = healthcheck.check_worker(os.getpid(), "redis://127.0.0.1:%d/0" % (
                port + 1 if port < 65535 else port - 1))
            assert not ok, why
        finally:
            client.close()
            accepted.close()
        ok, why = healthcheck.check_worker(os.getpid(), url)
        assert not ok, why
    ok, why = healthcheck.check_worker(os.getpid(), "redis://no-such-host.invalid:6379/0")
    assert not ok and "resolve" in why


def test_healthcheck_reads_the_relay_heartbeat(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.sqlite")
    ok, why = healthcheck.check_relay(path)
    assert not ok and not os.path.exists(path), why
    outbox = Outbox(path)
    outbox.depth()
    ok, why = healthcheck.check_relay(path)
    assert not ok, why
    outbox.heartbeat(3)
    ok, why = healthcheck.check_relay(path)
    assert ok, why
    assert not healthcheck.check_relay(path, hostname="another-container")[0]
    assert not healthcheck.check_relay(path, now=time.time() + 2 * healthcheck.RELAY_MAX_AGE)[0]
    outbox.close()


def test_healthcheck_asks_flower() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"OK" if self.path == "/healthcheck" else b"no"
            self.send_response(200 if self.path == "/healthcheck" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        ok, why = healthcheck.check_flower(port)
        assert ok, why
    finally:
        server.shutdown()
        server.server_close()
    ok, why = healthcheck.check_flower(port, timeout=2)
    assert not ok, why
