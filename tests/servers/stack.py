"""The whole product on one machine: real backends, worker pools, relay, Flower.

Used by the demo (``./run demo``) and by the test suite, so both run what
an operator runs. Configuration is written the way an operator would write it:
an INI file without secrets, secrets in files of their own (mode 0600).
"""

import copy
import functools
import hashlib
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from tests.servers.base import Process, ServerError, free_port, port_open, tail, wait_for
from tests.servers.bind import start_bind
from tests.servers.redis import start_redis
from tests.servers.slapd import start_slapd

Progress = Callable[[str], None]

FORWARD_ZONE = "cloud.example.test"
REVERSE_ZONES = ("10.in-addr.arpa", "168.192.in-addr.arpa", "8.b.d.0.1.0.0.2.ip6.arpa")
PREFIXES = ("10.20.0.0/16", "192.168.1.0/24", "2001:db8:20::/64")
#: queue -> worker concurrency; the slow, chatty backends get more processes.
POOLS = {"ipam": 2, "dns": 1, "ldap": 1, "inventory": 2, "audit": 1}


class Stack(object):
    """Backends plus the configuration file that points novahooks at them."""

    def __init__(self, workdir: Path, with_netbox: bool = True,
                 progress: Progress = print, broker_url: Optional[str] = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.with_netbox = with_netbox
        self.progress = progress
        #: Celery broker for [broker] url (e.g. a RabbitMQ vhost's amqp:// url);
        #: None means the private Redis, which starts either way (NetBox needs it).
        self.broker_url = broker_url
        self.config_path = self.workdir / "novahooks.conf"
        self.audit_path = self.workdir / "audit.jsonl"
        self.outbox_path = self.workdir / "outbox.sqlite"
        #: the HMAC key task messages are signed with ([broker] signing_key_file)
        self.signing_key = secrets.token_urlsafe(32)
        self._stoppers: List[Callable[[], None]] = []
        # The servers' handles (redis.Redis, slapd.Slapd, ...): None until started.
        self.redis: Any = None
        self.slapd: Any = None
        self.bind: Any = None
        self.netbox: Any = None

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.progress("starting redis, slapd and BIND on loopback ...")
            # requirepass, as a broker must have: whoever reaches it runs the pipeline
            self.redis = self._keep(start_redis(self.workdir / "redis",
                                                password=secrets.token_urlsafe(24)))
            self.slapd = self._keep(start_slapd(self.workdir / "slapd"))
            self.bind = self._keep(start_bind(self.workdir / "bind", FORWARD_ZONE,
                                              REVERSE_ZONES))
            if self.with_netbox:
                from tests.servers import netbox
                self.progress("starting NetBox (first run on a machine: a one-time setup of "
                              "several minutes) ...")
                self.netbox = self._keep(netbox.start(self.workdir / "netbox",
                                                      redis_port=self.redis.port,
                                                      progress=self.progress,
                                                      redis_password=self.redis.password))
                self._seed_netbox()
            self.write_config()
        except BaseException:
            self.stop()
            raise
        return self

    def _keep(self, server: object) -> object:
        self._stoppers.append(server.stop)  # type: ignore[attr-defined]
        return server

    def _seed_netbox(self) -> None:
        """The prefixes an operator would already have in NetBox."""
        import pynetbox
        api = pynetbox.api(self.netbox.url, token=self.netbox.token)
        for prefix in PREFIXES:
            if api.ipam.prefixes.get(prefix=prefix) is None:
                api.ipam.prefixes.create(prefix=prefix, status="active",
                                         description="novahooks demo")

    def _secret(self, name: str, value: str) -> str:
        path = self.workdir / "secrets" / name
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(value)
        path.chmod(0o600)
        return str(path)

    def _broker(self) -> Dict[str, Optional[str]]:
        """[broker] url without its password, which goes to a secret file, as an operator
        writes it; the message signing key likewise."""
        url = self.broker_url or self.redis.url
        scheme, rest = url.split("://", 1)
        userinfo, _, host = rest.rpartition("@")
        user, _, password = userinfo.partition(":")
        section: Dict[str, Optional[str]] = {
            "url": "%s://%s%s" % (scheme, user + "@" if user else "", host),
            "signing_key_file": self._secret("signing-key", self.signing_key)}
        if password:
            section["password_file"] = self._secret(
                "broker-%s" % hashlib.sha256(url.encode()).hexdigest()[:8],
                urllib.parse.unquote(password))
        return section

    def write_config(self, **overrides: Dict[str, Optional[str]]) -> Path:
        sections: Dict[str, Dict[str, Optional[str]]] = {
            "outbox": {"path": str(self.outbox_path)},
            "ledger": {"url": "sqlite:///%s" % (self.workdir / "ledger.sqlite"),
                       "stalled_after": "60"},
            "broker": dict(self._broker(), connect_timeout="3", visibility_timeout="120"),
            "relay": {"poll_interval": "0.05"},
            # a message whose worker died [retry] max_deliveries times is delivered again
            # alone after poison_cooldown seconds: short here, as for the backoff
            "retry": {"max_retries": "5", "backoff_max": "30", "poison_cooldown": "2"},
            "dns": {"server": "127.0.0.1", "port": str(self.bind.port), "zone": FORWARD_ZONE,
                    "reverse_zones": ",".join(REVERSE_ZONES),
                    "tsig_key_name": self.bind.key_name,
                    "tsig_secret_file": self._secret("tsig", self.bind.key_secret),
                    "ttl": "300"},
            "directory": {"url": self.slapd.url, "bind_dn": self.slapd.bind_dn,
                          "password_file": self._secret("ldap", self.slapd.bind_password),
                          "base_dn": self.slapd.hosts_base, "starttls": "true",
                          "ca_file": str(self.slapd.ca_file)},
            "audit": {"drivers": "jsonl", "path": str(self.audit_path)},
        }
        if self.netbox is not None:
            token = self._secret("netbox", self.netbox.token)
            sections["ipam"] = {"url": self.netbox.url, "token_file": token}
            sections["inventory"] = {"url": self.netbox.url, "token_file": token,
                                     "cluster": "nova-demo"}
        for name, values in overrides.items():
            section = sections.setdefault(name, {})
            for key, value in values.items():
                if value is None:  # an override can also take a key away
                    section.pop(key, None)
                else:
                    section[key] = value
        lines = []
        for name, values in sections.items():
            lines.append("[%s]" % name)
            lines.extend("%s = %s" % item for item in values.items())
            lines.append("")
        self.config_path.write_text("\n".join(lines))
        return self.config_path

    def clone(self, workdir: Path, broker_url: str,
              **overrides: Dict[str, Optional[str]]) -> "Stack":
        """These servers under a configuration of its own, pointing at ``broker_url``.

        A shallow copy: servers are shared and stay owned (and stopped) by this stack;
        the copy's config file, outbox, audit file, secrets and logs are its own.
        """
        clone = copy.copy(self)
        clone._stoppers = []
        clone.workdir = Path(workdir)
        clone.config_path = clone.workdir / "novahooks.conf"
        clone.audit_path = clone.workdir / "audit.jsonl"
        clone.outbox_path = clone.workdir / "outbox.sqlite"
        clone.broker_url = broker_url
        clone.write_config(**overrides)
        return clone

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["NOVAHOOKS_CONFIG"] = str(self.config_path)
        return env

    def stop(self) -> None:
        while self._stoppers:
            try:
                self._stoppers.pop()()
            except Exception as exc:  # noqa: BLE001 - stop the rest regardless
                self.progress("warning: stopping a server failed: %s" % exc)


def _ready(proc: Process) -> bool:
    """A Celery worker logs "ready." once it consumes."""
    return "ready." in proc.log.read_text(errors="replace")


class Processes(object):
    """Worker pools (one per queue), the relay and Flower, as real processes."""

    def __init__(self, stack: Stack, progress: Progress = print) -> None:
        self.stack = stack
        self.progress = progress
        self.logs = stack.workdir / "logs"
        self.workers: Dict[str, Process] = {}
        self.relay: Optional[Process] = None
        self.flower: Optional[Process] = None
        self.flower_url = ""
        self.metrics_ports: Dict[str, int] = {}
        self.relay_metrics_port = 0
        self.flower_auth = ("admin", secrets.token_urlsafe(12))

    def _python(self, *args: str) -> List[str]:
        return [sys.executable] + list(args)

    def start_worker(self, queue: str, concurrency: Optional[int] = None,
                     pool: Optional[str] = None) -> Process:
        """``pool``: Celery's (``threads``: the NetBox steps' batching); prefork if None."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / ("worker-%s.log" % queue)
        env = self.stack.env()
        self.metrics_ports[queue] = free_port()
        env["NOVAHOOKS_METRICS_WORKER_PORT"] = str(self.metrics_ports[queue])
        env["NOVAHOOKS_METRICS_MULTIPROC_DIR"] = str(self.stack.workdir / "metrics")
        proc = Process("worker-%s" % queue, self._python(
            "-m", "celery", "-A", "tasks.app", "worker", "-Q", queue,
            "-c", str(concurrency or POOLS[queue]), "-n", "%s@novahooks" % queue, "-E",
            "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat")
            + (["-P", pool] if pool else []), log, env=env, cwd=self.stack.workdir)
        self.workers[queue] = proc
        return proc

    def start_workers(self) -> None:
        for queue in POOLS:
            self.start_worker(queue)
        for queue, proc in self.workers.items():
            wait_for(functools.partial(_ready, proc), 60, "worker %s" % queue, proc.proc,
                     proc.log)
        self.progress("workers ready: %s" % ", ".join(
            "%s x%d" % (q, POOLS[q]) for q in POOLS))

    def start_relay(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = self.stack.env()
        self.relay_metrics_port = free_port()
        env["NOVAHOOKS_METRICS_RELAY_PORT"] = str(self.relay_metrics_port)
        self.relay = Process("relay", self._python("-m", "novahooks.cli", "relay"),
                             self.logs / "relay.log", env=env, cwd=self.stack.workdir)

    def start_flower(self) -> str:
        port = free_port()
        env = self.stack.env()
        env["FLOWER_BASIC_AUTH"] = "%s:%s" % self.flower_auth
        self.flower = Process("flower", self._python(
            "-m", "celery", "-A", "tasks.app", "flower", "--address=127.0.0.1",
            "--port=%d" % port), self.logs / "flower.log", env=env, cwd=self.stack.workdir)
        wait_for(lambda: port_open(port), 30, "flower", self.flower.proc, self.flower.log)
        self.flower_url = "http://127.0.0.1:%d" % port
        return self.flower_url

    def stop(self) -> None:
        import signal
        if self.flower is not None:
            self.flower.stop(signal.SIGINT)
        if self.relay is not None:
            self.relay.stop(signal.SIGINT)
        for proc in self.workers.values():
            proc.stop(signal.SIGTERM, timeout=20)


def run_checked(argv: List[str], env: Dict[str, str]) -> str:
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    if result.returncode != 0:
        raise ServerError("%s failed:\n%s" % (" ".join(argv), result.stdout[-3000:]))
    return result.stdout


__all__ = ["Stack", "Processes", "POOLS", "tail", "time"]
