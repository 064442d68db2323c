"""The pipeline on RabbitMQ: quorum queues, publisher confirms, parked poison, delayed retries.

Same path as test_end_to_end (hook call -> outbox -> relay -> Celery chain on
per-step worker pools -> real BIND, slapd and NetBox), but the broker is a
private vhost on the machine's RabbitMQ instead of the private Redis. The
session stack's backends are shared; the configuration, outbox, audit file,
logs and worker processes are this module's own, and the vhost (with every
queue and message in it) is deleted at the end.
"""

import contextlib
import importlib.util
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List, NamedTuple, Tuple

import pytest

from novahooks.nova import hooks
from novahooks.event import Address
from tests.servers.base import Process, free_port
from tests.servers.rabbitmq import RabbitVhost, private_vhost
from tests.servers.stack import POOLS, Processes, Stack
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import ROOT, mac, make_event, unique_v4, unique_v6
from tests.helpers import assert_registered_everywhere, audit_lines, audited, until

STEP_QUEUES = ("ipam", "dns", "ldap", "inventory", "audit")


def load_celeryconfig(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """celeryconfig.py evaluated for another novahooks configuration (it reads it at import)."""
    with monkeypatch.context() as patch:
        patch.setenv("NOVAHOOKS_CONFIG", str(config_path))
        spec = importlib.util.spec_from_file_location("celeryconfig_under_test",
                                                      str(ROOT / "celeryconfig.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def amqp_app(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A producer-side Celery app configured exactly as the relay would be."""
    from celery import Celery
    app = Celery("novahooks-test", set_as_current=False)
    app.config_from_object(load_celeryconfig(config_path, monkeypatch))
    return app


class Rabbit(NamedTuple):
    vhost: RabbitVhost
    stack: Stack
    processes: Processes


@pytest.fixture(scope="module")
def rabbit(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    # Pin this process's own Celery app and worker settings to the session's Redis
    # configuration before anything here points NOVAHOOKS_CONFIG elsewhere.
    import tasks.app  # noqa: F401
    from tasks.config import settings
    settings()
    vhost = private_vhost("novahooks-test")
    procs = None
    try:
        on_rabbit = stack.clone(tmp_path_factory.mktemp("rabbit"), vhost.url)
        print("\nRabbitMQ vhost %s, config %s" % (vhost.name, on_rabbit.config_path))
        procs = Processes(on_rabbit, progress=lambda line: print(line, flush=True))
        procs.start_workers()
        procs.start_relay()
        yield Rabbit(vhost, on_rabbit, procs)
    finally:
        if procs is not None:
            procs.stop()
        vhost.stop()


@pytest.fixture
def hooks_to_rabbit(rabbit: Rabbit, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nova's hooks write to this module's outbox, which its relay drains into RabbitMQ."""
    monkeypatch.setenv("NOVAHOOKS_CONFIG", str(rabbit.stack.config_path))
    hooks.reset_outbox()
    yield
    hooks.reset_outbox()  # the next test's hooks must not keep writing to our outbox


def held(vm: Vm) -> Dict[str, Any]:
    from tests.demo import holdings
    return holdings(vm)


def arguments(row: Dict[str, Any]) -> Dict[str, Any]:
    """rabbitmqctl's JSON shows queue arguments as [key, type, value] triples."""
    args = row.get("arguments") or []
    return {item[0]: item[-1] for item in args} if isinstance(args, list) else dict(args)


def log_text(proc: Process) -> str:
    return proc.log.read_text(errors="replace")


def test_step_queues_are_durable_quorum_queues_with_a_dead_letter_route(rabbit: Rabbit) -> None:
    import celeryconfig
    queues = {row["name"]: row for row in rabbit.vhost.list_queues(
        "name", "type", "durable", "arguments")}
    for step in STEP_QUEUES:
        assert queues[step]["type"] == "quorum", queues[step]
        assert queues[step]["durable"] is True
        args = arguments(queues[step])
        assert args["x-queue-type"] == "quorum"
        assert args["x-delivery-limit"] == 5
        assert args["x-dead-letter-exchange"] == "novahooks.dead"
    assert queues["novahooks.dead"]["type"] == "quorum"
    # Celery's native delayed delivery: 28 delay levels, themselves quorum queues.
    delayed = [row for name, row in queues.items() if name.startswith("celery_delayed_")]
    assert len(delayed) == 28 and {row["type"] for row in delayed} == {"quorum"}
    exchanges = {row["name"]: row["type"] for row in rabbit.vhost.list_exchanges()}
    assert exchanges["novahooks"] == "topic" and exchanges["novahooks.dead"] == "fanout"
    routes = {(b["source_name"], b["destination_name"], b["routing_key"])
              for b in rabbit.vhost.list_bindings()}
    for step in STEP_QUEUES:
        assert ("novahooks", step, step) in routes
        # countdowns come back through celery_delayed_delivery -> novahooks -> step queue
        assert ("novahooks", step, "#." + step) in routes
    assert ("celery_delayed_delivery", "novahooks", "#.ipam") in routes
    # Workers saw quorum queues: per-consumer prefetch, no direct-exchange ETA trap.
    for step, proc in rabbit.processes.workers.items():
        text = log_text(proc)
        assert "Global QoS is disabled" in text, step
        assert "direct exchange" not in text, step
        assert "Failed to bind" not in text and "delayed delivery will not" not in text, step
    # The in-process app (session config) is still on Redis: the Redis path is untouched.
    assert celeryconfig.broker_url.startswith("redis://")
    assert "visibility_timeout" in celeryconfig.broker_transport_options


def test_consumers_ack_late_with_prefetch_one_per_process(rabbit: Rabbit) -> None:
    consumers = rabbit.vhost.ctl("list_consumers", "queue_name", "ack_required",
                                 "prefetch_count", "--formatter", "json")
    by_queue = {}  # type: Dict[str, List[Dict[str, Any]]]
    for row in json.loads(consumers):
        by_queue.setdefault(row["queue_name"], []).append(row)
    for step in STEP_QUEUES:
        rows = by_queue[step]
        assert len(rows) == 1, rows
        assert rows[0]["ack_required"] is True           # late acks: manual ack mode
        assert rows[0]["prefetch_count"] == POOLS[step]  # multiplier 1 x pool processes
    channels = json.loads(rabbit.vhost.ctl("list_channels", "vhost", "global_prefetch_count",
                                           "--formatter", "json"))
    assert all(c["global_prefetch_count"] == 0 for c in channels
               if c["vhost"] == rabbit.vhost.name)


def test_linux_and_windows_vms_dual_stack_register_and_go_away_over_rabbitmq(
        rabbit: Rabbit, hooks_to_rabbit: None) -> None:
    from tests.demo import gone
    audit = rabbit.stack.audit_path
    vms = [with_uuid(Vm("rmq-lin", ((unique_v4(), mac()), (unique_v6(), mac())))),
           with_uuid(Vm("rmq-win", ((unique_v4(), mac()), (unique_v6(), mac())),
                        os_type="windows"))]
    for vm in vms:
        create(vm)
    for vm in vms:
        state = assert_registered_everywhere(vm, rabbit.stack.slapd.hosts_base)
        assert len(state["dns"]["A"]) == 1 and len(state["dns"]["AAAA"]) == 1
        until(lambda vm=vm: audited(audit, vm.uuid, "build"), 30, "audit of build")
    # The relay's publishes went through RabbitMQ in confirm mode.
    channels = json.loads(rabbit.vhost.ctl("list_channels", "vhost", "confirm",
                                           "--formatter", "json"))
    assert any(c["confirm"] for c in channels if c["vhost"] == rabbit.vhost.name), channels
    for vm in vms:
        delete(vm)
    for vm in vms:
        until(lambda vm=vm: gone(vm, held(vm)), 90, "%s removed" % vm.hostname)
        until(lambda vm=vm: audited(audit, vm.uuid, "delete"), 30, "audit of delete")
    until(lambda: _outbox_empty(rabbit.stack.outbox_path), 10, "the outbox drained")
    assert "ERROR" not in log_text(rabbit.processes.relay)  # type: ignore[arg-type]
    assert dead_letters(rabbit.vhost) == 0


def _outbox_empty(path: Path) -> bool:
    """Every event left the outbox: the relay deletes one only once RabbitMQ confirmed it."""
    from novahooks.nova.outbox import Outbox
    outbox = Outbox(str(path))
    try:
        return not outbox.pending(10)
    finally:
        outbox.close()


def test_a_countdown_waits_in_rabbitmq_not_in_the_worker(
        rabbit: Rabbit, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quorum queues pin prefetch; a held ETA task would block the audit pool (one process).

    With native delayed delivery the delayed message waits in celery_delayed_* queues,
    so a message published after it is handled at once, and it arrives on time.
    """
    app = amqp_app(rabbit.stack.config_path, monkeypatch)
    audit = rabbit.stack.audit_path
    worker_log = rabbit.processes.workers["audit"].log
    later, now = make_event(kind="build"), make_event(kind="build")
    sent = time.time()
    delayed = app.send_task("audit.record", args=[later.to_dict()], countdown=6)
    app.send_task("audit.record", args=[now.to_dict()])
    until(lambda: audit_lines(audit, now.uuid), 5, "the undelayed record, at once")
    assert not audit_lines(audit, later.uuid)
    # Not held by the worker (whose one prefetch slot it would block): not even received.
    assert delayed.id not in worker_log.read_text(errors="replace")
    record = until(lambda: audit_lines(audit, later.uuid), 20, "the delayed record")[0]
    assert record["time"] - sent >= 5.5
    app.close()


class Blackhole(object):
    """A TCP server that accepts and then says nothing: a backend call that never returns."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted = 0
        self._conns = []  # type: List[socket.socket]
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            conn.close()


def pool_children(pid: int) -> List[int]:
    path = Path("/proc/%d/task/%d/children" % (pid, pid))
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def message_count(vhost: RabbitVhost, queue: str) -> int:
    """Ready messages, from the queue leader (rabbitmqctl's counts lag for quorum queues)."""
    import kombu
    with kombu.Connection(vhost.url) as conn:
        return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)


def dead_letters(vhost: RabbitVhost) -> int:
    return message_count(vhost, "novahooks.dead")


def first_dead_letter(vhost: RabbitVhost) -> Any:
    import kombu
    with kombu.Connection(vhost.url) as conn:
        return conn.default_channel.basic_get("novahooks.dead", no_ack=True)


def test_the_broker_dead_letters_a_message_returned_more_than_the_delivery_limit(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue arguments alone, whatever a worker does: requeued DELIVERY_LIMIT times,
    the next return moves the message to novahooks.dead (reason delivery_limit)."""
    import kombu
    with private_vhost("novahooks-limit") as vhost:
        conf = load_celeryconfig(stack.clone(tmp_path, vhost.url).config_path, monkeypatch)
        assert conf.AMQP and conf.DELIVERY_LIMIT == 5
        assert conf.broker_transport_options == {"confirm_publish": True, "max_retries": 3}
        with kombu.Connection(vhost.url, transport_options=conf.broker_transport_options) as conn:
            channel = conn.channel()
            queue = conf.task_queues[0].bind(channel)
            queue.declare()  # the step queue declares the whole topology
            assert {r["name"] for r in vhost.list_queues("name")} == set(STEP_QUEUES) | {
                "novahooks.dead"}
            kombu.Producer(channel, exchange=conf.TASK_EXCHANGE).publish(
                {"any": "body"}, routing_key=queue.name, headers={"id": "poison-1"})
            deliveries = 0
            while deliveries < 20:
                message = queue.get(no_ack=False)
                if message is None:
                    break
                deliveries += 1
                message.reject(requeue=True)
        assert deliveries == conf.DELIVERY_LIMIT + 1, deliveries
        until(lambda: dead_letters(vhost), 10, "the message in novahooks.dead")
        headers = first_dead_letter(vhost).headers
        assert headers["id"] == "poison-1"
        assert headers["x-first-death-reason"] == "delivery_limit", headers
        assert headers["x-first-death-queue"] == queue.name


@contextlib.contextmanager
def hung_ipam_worker(stack: Stack, tmp_path: Path, vhost_name: str,
                     monkeypatch: pytest.MonkeyPatch,
                     **retry: str) -> Iterator[Tuple["Blackhole", RabbitVhost, Processes,
                                                      Process, Any]]:
    """One ipam worker on a private vhost whose NetBox calls hang in a Blackhole, and the
    producer app: a message stays in flight for as long as a test wants to kill its worker.
    ``retry`` is the clone's [retry] section."""
    hole = Blackhole()
    vhost = private_vhost(vhost_name)
    procs = None
    try:
        clone = stack.clone(tmp_path, vhost.url, ipam={
            "url": "http://127.0.0.1:%d" % hole.port, "timeout": "300"}, retry=retry)
        procs = Processes(clone, progress=lambda line: None)
        worker = procs.start_worker("ipam", concurrency=1)
        until(lambda: "ready." in log_text(worker), 60, "ipam worker")
        yield hole, vhost, procs, worker, amqp_app(clone.config_path, monkeypatch)
    finally:
        if procs is not None:
            procs.stop()
        vhost.stop()
        hole.close()


def test_a_message_that_kills_its_worker_every_time_ends_in_the_dead_letter_queue(
        stack: Stack, rabbit: Rabbit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reject-on-worker-loss requeues the task each time the process running it dies;
    after [retry] max_deliveries deaths it is delivered again alone (a process forked
    for it, watched by the pool process), and when that process dies too the message
    is parked: it lands in novahooks.dead, and the worker goes on serving."""
    with hung_ipam_worker(stack, tmp_path, "novahooks-poison", monkeypatch,
                          poison_cooldown="1") as (hole, vhost, _, worker, app):
        ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
        result = app.send_task("ipam.reserve", args=[ev.to_dict()])
        kills = 0
        while kills < 12:
            seen = hole.accepted
            try:  # the next delivery hangs in its NetBox call, or there is none
                until(lambda seen=seen: hole.accepted > seen or dead_letters(vhost), 30,
                      "a delivery")
            except AssertionError:
                break
            if hole.accepted == seen:
                break
            for child in pool_children(worker.proc.pid):
                # the process that runs the message: a probe's own, else the pool's
                for victim in pool_children(child) or [child]:
                    os.kill(victim, signal.SIGKILL)
            kills += 1
        until(lambda: dead_letters(vhost), 30, "the message in novahooks.dead")
        assert kills == 4, kills  # 3 deaths ([retry] max_deliveries), then the probe's
        assert worker.proc.poll() is None, "the worker itself survived"
        assert "WorkerLostError" in log_text(worker)
        assert message_count(vhost, "ipam") == 0 and dead_letters(vhost) == 1
        headers = first_dead_letter(vhost).headers
        assert headers["task"] == "ipam.reserve" and headers["id"] == result.id
        # The probe came through the delayed-delivery queues (its cool-down), whose expiry
        # is a death too: the one that parked it is the step queue's rejection.
        deaths = [(d["queue"], d["reason"]) for d in headers["x-death"]]
        assert ("ipam", "rejected") in deaths, headers  # by the steps, not the broker's limit
        assert ("ipam", "delivery_limit") not in deaths, headers
        assert "killed the process that ran it alone" in log_text(worker)
        print("parked after %d kills, deaths %s" % (kills, deaths))
        # still serving: the next message is taken (and hangs in the blackhole too)
        seen = hole.accepted
        app.send_task("ipam.reserve", args=[make_event(addresses=[Address(
            unique_v4(), 4, mac(), "private")]).to_dict()])
        until(lambda: hole.accepted > seen, 30, "the worker taking new work")
        app.close()


def _netbox_vms(api: Any, uuids: List[str]) -> Dict[str, List[Any]]:
    """uuid -> NetBox VMs carrying it, for every VM of the cluster (one paged read)."""
    from tasks.backends.netbox.client import UUID_FIELD
    found: Dict[str, List[Any]] = {uuid: [] for uuid in uuids}
    for vm in api.virtualization.virtual_machines.all():
        owner = (vm.custom_fields or {}).get(UUID_FIELD)
        if owner in found:
            found[owner].append(vm)
    return found


def test_netbox_steps_in_threads_pools_write_in_batches_and_a_kill_mid_batch_loses_and_duplicates_nothing(  # noqa: E501
        rabbit: Rabbit, hooks_to_rabbit: None) -> None:
    """IPAM and inventory pools of 8 threads (README "Batching NetBox writes"): a burst
    queued for the inventory pool is taken 8 at a time; the pool is SIGKILLed twice
    while its writes are in NetBox. RabbitMQ hands the unacknowledged messages to the
    next pool, whose steps find what the killed one wrote (the drivers' duplicate and
    stale paths): every VM ends with exactly one record of each kind, none dead-lettered.
    NetBox's changelog shows VMs created several to a request."""
    import pynetbox
    stack, procs = rabbit.stack, rabbit.processes
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    vms = [with_uuid(Vm("rmq-batch-%d" % i, ((unique_v4(), mac()),))) for i in range(16)]
    uuids = [vm.uuid for vm in vms]

    def ready(proc: Process) -> bool:
        return "ready." in log_text(proc)

    def threaded(queue: str) -> Process:
        proc = procs.start_worker(queue, concurrency=8, pool="threads")
        until(lambda: ready(proc), 60, "%s pool of threads" % queue)
        return proc

    kills = 0
    try:
        for queue in ("ipam", "inventory"):
            procs.workers[queue].stop()
        threaded("ipam")
        for vm in vms:
            create(vm)
        until(lambda: message_count(rabbit.vhost, "inventory") >= len(vms), 120,
              "the burst queued for the inventory pool")
        for _ in range(2):
            made = sum(1 for held in _netbox_vms(api, uuids).values() if held)
            worker = threaded("inventory")
            until(lambda made=made: sum(1 for held in _netbox_vms(api, uuids).values()
                                        if held) > made, 120, "inventory writing")
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(30)
            kills += 1
        threaded("inventory")
        for vm in vms:
            until(lambda vm=vm: audited(stack.audit_path, vm.uuid, "build"), 240,
                  "build chain of %s" % vm.hostname)
        held = _netbox_vms(api, uuids)
        for vm in vms:
            [record] = held[vm.uuid]
            address, hw = vm.addresses[0]
            [ip] = list(api.ipam.ip_addresses.filter(address=address))
            [iface] = list(api.virtualization.interfaces.filter(virtual_machine_id=record.id))
            assert str(iface.primary_mac_address.mac_address).lower() == hw
            assert ip.assigned_object_id == iface.id
            assert record.status.value == "active" and record.primary_ip4.id == ip.id
        assert dead_letters(rabbit.vhost) == 0
        assert not [r for vm in vms for r in audit_lines(stack.audit_path, vm.uuid)
                    if r["stage"] == "failed"]
        ours = {int(h[0].id) for h in held.values()}
        per_request: Dict[Tuple[str, str], int] = {}
        for kind, action in (("virtualization.virtualmachine", "create"),
                             ("virtualization.vminterface", "create"),
                             ("virtualization.virtualmachine", "update")):
            for change in api.core.object_changes.filter(changed_object_type=kind,
                                                          action=action):
                data = change.postchange_data or {}
                vm_id = change.changed_object_id if kind.endswith("machine") else \
                    data.get("virtual_machine")
                if vm_id in ours:
                    key = ("%s %s" % (kind.split(".")[1], action), str(change.request_id))
                    per_request[key] = per_request.get(key, 0) + 1
        sizes: Dict[str, List[int]] = {}
        for (what, _), count in per_request.items():
            sizes.setdefault(what, []).append(count)
        print("%d kills; VMs per NetBox request: %s" % (
            kills, {w: sorted(c, reverse=True) for w, c in sizes.items()}))
        assert max(per_request.values()) >= 2, sizes
        for vm in vms:
            delete(vm)
        for vm in vms:
            until(lambda vm=vm: audited(stack.audit_path, vm.uuid, "delete"), 240,
                  "delete chain of %s" % vm.hostname)
        assert not any(_netbox_vms(api, uuids).values())
    finally:
        for queue in ("ipam", "inventory"):
            procs.workers[queue].stop()
            procs.start_worker(queue)
            until(lambda queue=queue: ready(procs.workers[queue]), 60, "%s pool" % queue)
