"""Session fixtures: one real stack (Redis, slapd, BIND, NetBox) for the whole run.

Servers start once, on free loopback ports, in a private directory; each test
uses its own hostnames and instance UUIDs so tests never see each other's
records. When a test fails, the server logs are in the session directory
printed at start.
"""

import contextlib
import itertools
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from novahooks.event import Address, Flavor, InstanceEvent, new_event
from tests.servers.base import wait_for
from tests.servers.samba import SambaServer, start_samba
from tests.servers.stack import Processes, Stack
from tests.helpers import until
from novahooks.settings import Settings, load_settings


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    print("\nnovahooks test stack in %s" % workdir)
    running = Stack(workdir, progress=lambda line: print(line, flush=True)).start()
    try:
        os.environ["NOVAHOOKS_CONFIG"] = str(running.config_path)
        # Bind this process's settings and Celery app to the session stack now, before any
        # test points NOVAHOOKS_CONFIG elsewhere (both are read once per process).
        # celeryconfig may already have been imported with defaults (tests/test_compose.py
        # reads it): read it again under this configuration.
        import importlib

        import celeryconfig
        from tasks import config as task_config
        from tasks.app import app
        task_config.settings.cache_clear()
        task_config.settings()
        app.config_from_object(importlib.reload(celeryconfig), force=True)
        assert app.conf.broker_url == running.redis.url
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return load_settings(str(stack.config_path))


@pytest.fixture
def hook_outbox(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks fired in this process write to the stack's outbox, which its relay reads."""
    from novahooks.nova import hooks
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(stack.config_path))
    hooks.reset_outbox()


@pytest.fixture(scope="session")
def processes(stack: Stack) -> Iterator[Processes]:
    """Worker pools per queue and a relay, as real processes."""
    procs = Processes(stack, progress=lambda line: print(line, flush=True))
    try:
        procs.start_workers()
        procs.start_relay()
        yield procs
    finally:
        procs.stop()


@pytest.fixture
def flower(processes: Processes) -> Iterator[str]:
    """Flower with FLOWER_BASIC_AUTH, receiving events; stopped again so that a
    later test of the session can start it anew."""
    url = processes.start_flower()
    try:
        until(lambda: requests.get(url + "/api/workers", auth=processes.flower_auth,
                                   timeout=15).status_code == 200,
              30, "Flower answering its API")
        # Ask the workers for a heartbeat event until Flower shows one: then its event
        # receiver is subscribed and no task event of the chain can be missed.
        from tasks.app import app

        def receiving() -> bool:
            app.control.heartbeat()
            time.sleep(0.5)
            return 'flower_worker_online{worker="' in requests.get(url + "/metrics",
                                                                   timeout=15).text
        until(receiving, 30, "Flower receiving the workers' events")
        yield url
    finally:
        if processes.flower is not None:
            processes.flower.stop(signal.SIGINT)
        processes.flower = None
        processes.flower_url = ""


def make_event(kind: str = "build", hostname: Optional[str] = None,
               addresses: Optional[List[Address]] = None, **fields: Any) -> InstanceEvent:
    """An event as the hooks would build it, with a fresh UUID and hostname."""
    ident = str(uuid.uuid4())
    fields.setdefault("flavor", Flavor(name="m1.small", vcpus=1, memory_mb=2048, root_gb=20,
                                       ephemeral_gb=0, swap=0))
    fields.setdefault("project_id", "6f70656e737461636b20342065766572")
    fields.setdefault("vm_state", "active")
    return new_event(kind, ident, "vm-" + ident[:8] if hostname is None else hostname,
                     addresses=addresses,
                     source="test", **fields)


_serial = itertools.count(250)


def unique_v4() -> str:
    """An address no other test of this session uses (the demo keeps to 10.20.0.x)."""
    n = next(_serial)
    return "10.20.%d.%d" % (n // 250, n % 250 + 2)


def unique_v6() -> str:
    return "2001:db8:20::%x" % (0x1000 + next(_serial))


def mac() -> str:
    n = uuid.uuid4().int
    return "fa:16:3e:%02x:%02x:%02x" % (n & 0xFF, (n >> 8) & 0xFF, (n >> 16) & 0xFF)


@pytest.fixture
def event_factory() -> Any:
    return make_event


def as_dict(event: InstanceEvent) -> Dict[str, Any]:
    return event.to_dict()


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    """A Samba AD DC on a loopback address of its own, started only for the tests that
    ask for it (tests/servers/samba.py)."""
    server = start_samba(tmp_path_factory.mktemp("samba") / "dc")
    print("\nSamba AD DC on %s in %s" % (server.address, server.workdir))
    try:
        yield server
    finally:
        server.stop()


ALL_QUEUES = "ipam,dns,ldap,inventory,audit"


@contextlib.contextmanager
def pipeline(stack: Stack, workdir: Path, redis_db: int,
             **overrides: Dict[str, Optional[str]]) -> Iterator[Stack]:
    """The session's servers under a configuration of a test module's own (Stack.clone):
    its own Redis database as broker, so the session's workers never take its messages,
    one worker process for every queue (configuration, not pools, is under test) and a
    relay. This process's settings and Celery app stay bound to the session stack."""
    import tasks.app  # noqa: F401
    from tasks.config import settings
    settings()
    clone = stack.clone(workdir, stack.redis.url.rsplit("/", 1)[0] + "/%d" % redis_db,
                        **overrides)
    procs = Processes(clone, progress=lambda line: None)
    try:
        worker = procs.start_worker(ALL_QUEUES, concurrency=2)
        wait_for(lambda: "ready." in worker.log.read_text(errors="replace"), 90,
                 "worker for %s" % ALL_QUEUES, worker.proc, worker.log)
        procs.start_relay()
        yield clone
    finally:
        procs.stop()

