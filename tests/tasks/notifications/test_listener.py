"""``novahooks listen`` end to end: oslo.messaging Notifier -> RabbitMQ -> listener process
-> outbox -> relay -> Celery chains -> real BIND, slapd and NetBox.

Nova's documented samples (varied: uuid, hostname, addresses) are published the way
Nova publishes them (oslo.messaging's Notifier, messagingv2 driver, exchange ``nova``),
Neutron's floating IPs on exchange ``neutron``, all in a private vhost of the machine's
RabbitMQ. The listener runs as its own process on the session stack's configuration (its
outbox is drained by the session relay; its state lives in the session ledger database).
"""

import json
import os
import signal
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.servers.listener import ListenerProcess, listener_config
from tests.servers.rabbitmq import RabbitVhost, private_vhost
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm
from tests.conftest import ROOT, mac, unique_v4, unique_v6
from tests.helpers import audit_lines, until
from tests.novahooks.notifications import samples

POOL = "novahooks-listener-test"
#: Chatter in the kill-and-restart burst: a few seconds of the listener's work (it handles
#: some 400-1000 a second here), so the kill after 100 surely lands mid-burst.
NOISE = 1500


class Bus(ListenerProcess):
    """The vhost, the listener process and one oslo.messaging Notifier per exchange."""

    def __init__(self, vhost: RabbitVhost, config: Path, logs: Path) -> None:
        super().__init__(vhost, config, logs, POOL)
        self.url = "rabbit://guest:guest@127.0.0.1:5672/%s" % vhost.name
        self._notifier = None  # type: Optional[subprocess.Popen]

    def _notify(self, exchange: str, topic: str, publisher: str, body: Dict[str, Any]) -> None:
        """Publish through oslo.messaging's Notifier, run in its own process (notify.py)."""
        if self._notifier is None or self._notifier.poll() is not None:
            self._notifier = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "novahooks" / "notifications" / "notify.py"),
                 self.url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self._notifier.stdin is not None and self._notifier.stdout is not None
        self._notifier.stdin.write(json.dumps({
            "exchange": exchange, "topic": topic, "publisher": publisher,
            "priority": body.get("priority", "INFO"), "event_type": body["event_type"],
            "payload": body["payload"]}) + "\n")
        self._notifier.stdin.flush()
        assert self._notifier.stdout.readline().strip() == "ok", "notifier process failed"

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.stdin.close()
            self._notifier.wait(30)

    def nova(self, body: Dict[str, Any]) -> None:
        """Publish as Nova does: versioned to versioned_notifications, legacy to notifications."""
        legacy = body["event_type"].startswith("compute.")
        self._notify("nova", "notifications" if legacy else "versioned_notifications",
                     body.get("publisher_id", "nova-compute:test"), body)

    def neutron(self, body: Dict[str, Any]) -> None:
        self._notify("neutron", "notifications", "network.controller", body)

    def raw(self, *bodies: str) -> None:
        """Bodies as given, straight onto Nova's exchange (garbage no Notifier would send,
        or a burst faster than the Notifier sends)."""
        from kombu import Connection, Exchange
        exchange = Exchange("nova", type="topic", durable=False)
        with Connection(self.url.replace("rabbit://", "amqp://")) as conn:
            producer = conn.Producer()
            for body in bodies:
                producer.publish(body, exchange=exchange,
                                 routing_key="versioned_notifications.info",
                                 content_type="application/json", content_encoding="utf-8",
                                 declare=[])



@pytest.fixture(scope="module")
def bus(stack: Stack, processes: Processes,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    workdir = tmp_path_factory.mktemp("listener")
    vhost = private_vhost("novahooks-notify")
    config = listener_config(stack.config_path, workdir, vhost, POOL)
    running = Bus(vhost, config, workdir)
    try:
        running.start()
        yield running
    finally:
        running.close()
        if running.proc is not None:
            running.proc.stop(signal.SIGTERM)
        vhost.stop()


def new_vm(name: str, v6: bool = True) -> Tuple[Vm, str]:
    """A VM with one port: an IPv4 (and IPv6) address on it; returns it and its port id."""
    m = mac()
    addresses = [(unique_v4(), m)] + ([(unique_v6(), m)] if v6 else [])
    vm = Vm("%s-%s" % (name, uuidlib.uuid4().hex[:6]), tuple(addresses),
            uuid=str(uuidlib.uuid4()))
    return vm, str(uuidlib.uuid4())


def versioned(name: str, vm: Vm, port: str, hostname: Optional[str] = None,
              **data: Any) -> Dict[str, Any]:
    return samples.vary(name, vm.uuid, hostname or vm.hostname,
                        [(a, m, port) for a, m in vm.addresses], **data)


def finished(stack: Stack, vm: Vm, kind: str, count: int = 1) -> bool:
    """``count`` chains of ``kind`` closed for the VM (its audit record): cheaper to poll
    than asking NetBox, which then answers the workers faster."""
    return sum(1 for r in audit_lines(stack.audit_path, vm.uuid)
               if r.get("kind") == kind and r.get("stage") == "done") >= count


def healthcheck() -> Any:
    """deploy/healthcheck.py, the container image's HEALTHCHECK (not a package module)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("novahooks_healthcheck",
                                                  ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def held(vm: Vm) -> Dict[str, Any]:
    from tests.demo import holdings
    return holdings(vm)


def registered(vm: Vm) -> bool:
    from tests.demo import registered as complete
    return complete(vm, held(vm))


def gone(vm: Vm) -> bool:
    from tests.demo import gone as absent
    return absent(vm, held(vm))


def test_register_rename_floating_ip_and_delete(bus: Bus, stack: Stack) -> None:
    a, port_a = new_vm("ntf-a")
    b, port_b = new_vm("ntf-b", v6=False)
    floating = "192.168.1.%d" % (201 + int(a.uuid[:2], 16) % 20)
    fip = str(uuidlib.uuid4())
    bus.nova(versioned("instance-create-start", a, port_a, ip_addresses=[]))
    bus.nova(versioned("instance-create-end", a, port_a))
    # B arrives in the legacy format (Nova's default notification_format before Train).
    bus.nova(samples.legacy_create_end(b.uuid, b.hostname, list(b.addresses)))
    bus.neutron(samples.floatingip("floatingip.create.end", fip, floating, port_a,
                                   a.addresses[0][0]))
    # Malformed ones among them: each logged with its reason, acknowledged, no effect.
    bad_uuid = str(uuidlib.uuid4())
    bus.raw("{this is not json")
    bus.raw(json.dumps({"oslo.version": "9.0", "oslo.message": "{}"}))
    unknown = versioned("instance-create-end", a, port_a)
    unknown["payload"]["nova_object.version"] = "7.0"
    unknown["payload"]["nova_object.data"]["uuid"] = bad_uuid
    bus.nova(unknown)
    missing = versioned("instance-create-end", a, port_a)
    del missing["payload"]["nova_object.data"]["uuid"]
    bus.nova(missing)
    bus.nova(samples.load("instance-create-error") | {"priority": "ERROR"})

    a_full = a._replace(addresses=tuple(a.addresses) + ((floating, a.addresses[0][1]),))
    until(lambda: finished(stack, b, "build") and finished(stack, a, "build"), 120,
          "both VMs' chains")
    until(lambda: registered(a_full) and registered(b), 60, "both VMs registered", interval=1)
    assert sorted(held(a_full)["dns"]["A"]) == sorted([a.addresses[0][0], floating])

    # Rename B (instance.update with old_display_name and a new hostname).
    renamed = b._replace(hostname=b.hostname + "-r")
    update = samples.vary("instance-update", b.uuid, renamed.hostname,
                          [(x, m, port_b) for x, m in b.addresses], task_state=None,
                          old_display_name=b.hostname)
    bus.nova(update)
    until(lambda: finished(stack, b, "network"), 60, "rename chain")
    assert held(renamed)["dns"]["A"] == [b.addresses[0][0]] and not held(b)["dns"]["A"]
    from tasks import drivers
    assert [e.split(",")[0] for e in drivers.directory().describe(b.uuid)["entries"]] == \
        ["cn=%s" % renamed.hostname]

    # Deletes: delete.end has no addresses; delete.start (versioned) or the ledger supply them.
    bus.nova(versioned("instance-delete-start", a, port_a))
    bus.nova(versioned("instance-delete-end", a, port_a, ip_addresses=[]))
    legacy_delete = samples.legacy_create_end(b.uuid, renamed.hostname, [])
    legacy_delete["event_type"] = "compute.instance.delete.end"
    del legacy_delete["payload"]["fixed_ips"]
    bus.nova(legacy_delete)
    until(lambda: finished(stack, a, "delete") and finished(stack, b, "delete"), 120,
          "delete chains")
    assert gone(a_full) and gone(renamed)

    until(lambda: bus.queued() == (0, 0), 30, "every notification acknowledged")
    assert bus.proc is not None and bus.proc.proc.poll() is None, "listener died"
    ok, why = healthcheck().check_listener(bus.proc.proc.pid, bus.url)
    assert ok, why
    rows = bus.lines()
    malformed = [r for r in rows if r.get("outcome") == "malformed"]
    assert any("major version 7 is unknown" in r["error"] for r in malformed), malformed
    assert any("payload.uuid: missing" in r["error"] for r in malformed), malformed
    text = bus.text()
    assert text.count("Failed to process message ... skipping it.") >= 2  # oslo.messaging's
    assert "JSONDecodeError" in text or "Expecting" in text
    assert "UnsupportedRpcEnvelopeVersion" in text
    assert not [r for r in rows if r.get("instance_uuid") == bad_uuid]
    ignored = {r["event_type"]: r["reason"] for r in rows if r.get("outcome") == "ignored"}
    assert "instance.create.end" in ignored["instance.create.start"]
    assert "build failed" in ignored["instance.create.error"]
    enqueued = [(r["event_type"], r["kind"]) for r in rows if r.get("outcome") == "enqueued"]
    # The floating IP travels another exchange: if it overtook A's create.end, create.end's
    # build event carries it instead of a network event of its own.
    assert [e for e in enqueued if e[0] != "floatingip.create.end"] == [
        ("instance.create.end", "build"), ("compute.instance.create.end", "build"),
        ("instance.update", "network"), ("instance.delete.end", "delete"),
        ("compute.instance.delete.end", "delete")]


def test_listener_killed_mid_burst_loses_and_duplicates_nothing(bus: Bus,
                                                                stack: Stack) -> None:
    """SIGKILL while notifications are in flight, then a restart: every VM registered once.

    The burst is published while the listener is down (its queue keeps it), so the kill
    lands while most of it is unacknowledged. The VMs are left registered (the first test
    covers deletes; these names and addresses are unique to this run).
    """
    bus.kill()
    vms = [new_vm("burst-%d" % i, v6=(i == 0)) for i in range(2)]
    # Nova's chatter: state-change instance.update of other VMs (each one read against the
    # listener's state), enveloped as messagingv2 does, around the four create.end.
    chatter = samples.vary("instance-update", str(uuidlib.uuid4()), "chatter")
    noise = []
    for _ in range(NOISE):
        chatter["payload"]["nova_object.data"]["uuid"] = str(uuidlib.uuid4())
        chatter["message_id"] = str(uuidlib.uuid4())
        noise.append(json.dumps(samples.envelope(chatter)))
    step = NOISE // len(vms)
    for i, (vm, port) in enumerate(vms):
        bus.raw(*noise[i * step:(i + 1) * step])
        bus.nova(versioned("instance-create-end", vm, port))
    total = NOISE + len(vms)
    until(lambda: bus.queued()[0] == total, 30, "burst queued while the listener is down")
    bus.start()
    first = bus.runs
    until(lambda: sum(1 for r in bus.lines(first) if r.get("outcome")) >= 100, 60,
          "listener part-way through the burst", interval=0.01)
    bus.kill()
    handled_before_kill = sum(1 for r in bus.lines(first) if r.get("outcome"))
    assert handled_before_kill < total, "the kill came after the whole burst"
    bus.start()
    for vm, _ in vms:
        until(lambda vm=vm: finished(stack, vm, "build"), 120,
              "%s's chain after the restart" % vm.hostname)
    until(lambda: bus.queued() == (0, 0), 30, "burst acknowledged")
    handled = sum(1 for run in (first, bus.runs) for r in bus.lines(run) if r.get("outcome"))
    assert handled >= total  # redelivered ones are handled twice, none skipped
    from tasks import drivers
    for vm, _ in vms:
        state = held(vm)
        assert registered(vm), state
        assert sorted(state["dns"]["A"] + state["dns"]["AAAA"]) == sorted(
            a for a, _ in vm.addresses)
        assert len(state["ldap"]) == 1
        assert sorted(x.split("/")[0] for x in state["ipam"]) == sorted(a for a, _ in vm.addresses)
        for address, _ in vm.addresses:
            ipam = drivers.ipam()
            assert len(list(ipam.api.ipam.ip_addresses.filter(address=address))) == 1
        inventory = drivers.inventory()
        assert len(list(inventory.api.virtualization.virtual_machines.filter(
            name=vm.hostname))) == 1
        assert chains(stack, vm) == ["build"], "a redelivered notification ran its chain again"


def chains(stack: Stack, vm: Vm) -> List[str]:
    """The kinds of the VM's chains that closed, in order (one audit record each)."""
    return [r["kind"] for r in audit_lines(stack.audit_path, vm.uuid) if r.get("stage") == "done"]


def resized_flavor(body: Dict[str, Any], vcpus: int, memory_mb: int) -> Dict[str, Any]:
    body["payload"]["nova_object.data"]["flavor"]["nova_object.data"].update(
        name="m1.resized", vcpus=vcpus, memory_mb=memory_mb)
    return body


def legacy(event_type: str, vm: Vm, hostname: str = "", **payload: Any) -> Dict[str, Any]:
    body = samples.legacy_create_end(vm.uuid, hostname or vm.hostname, list(vm.addresses))
    body["event_type"] = event_type
    body["payload"].update(payload)
    return body


def test_notification_format_both_is_one_chain_per_action(bus: Bus, stack: Stack) -> None:
    """Nova with notification_format = both sends every action twice (versioned and
    legacy, milliseconds apart): each action is one chain, whichever twin comes first."""
    vm, port = new_vm("both", v6=False)
    renamed = vm._replace(hostname=vm.hostname + "-r")
    bus.nova(legacy("compute.instance.create.end", vm))
    bus.nova(versioned("instance-create-end", vm, port))
    until(lambda: registered(vm), 120, "registered", interval=1)
    bus.nova(samples.vary("instance-update", vm.uuid, renamed.hostname,
                          [(a, m, port) for a, m in vm.addresses], task_state=None,
                          old_display_name=vm.hostname))
    bus.nova(legacy("compute.instance.update", vm, renamed.hostname,
                    old_display_name=vm.hostname))
    until(lambda: chains(stack, vm).count("network") >= 1, 60, "rename chain")
    bus.nova(legacy("compute.instance.finish_resize.end", vm, renamed.hostname, vcpus=4,
                    memory_mb=8192, instance_type="m1.resized"))
    bus.nova(resized_flavor(versioned("instance-resize_finish-end", vm, port,
                                      renamed.hostname), 4, 8192))
    until(lambda: chains(stack, vm).count("resize") >= 1, 60, "resize chain")
    state = held(renamed)
    assert state["dns"]["A"] == [vm.addresses[0][0]] and not held(vm)["dns"]["A"]
    assert (state["inventory"]["name"], state["inventory"]["vcpus"],
            state["inventory"]["memory"]) == (renamed.hostname, 4, 8192)
    bus.nova(versioned("instance-delete-start", vm, port, renamed.hostname))
    bus.nova(legacy("compute.instance.delete.start", vm, renamed.hostname))
    bus.nova(legacy("compute.instance.delete.end", vm, renamed.hostname, fixed_ips=[]))
    bus.nova(versioned("instance-delete-end", vm, port, renamed.hostname, ip_addresses=[]))
    until(lambda: "delete" in chains(stack, vm), 60, "delete chain")
    until(lambda: bus.queued() == (0, 0), 30, "every notification acknowledged")
    until(lambda: gone(renamed), 30, "everything removed", interval=1)
    assert chains(stack, vm) == ["build", "network", "resize", "delete"]
    paired = [r for r in bus.lines() if r.get("outcome") == "ignored"
              and "twin of" in str(r.get("reason"))]
    assert len(paired) == 5, paired  # create, rename, resize, delete.start, delete.end


def test_a_notification_published_twice_is_one_event(bus: Bus, stack: Stack) -> None:
    """The same message (its message_id) published again, or redelivered: one chain."""
    vm, port = new_vm("twice", v6=False)
    body = dict(versioned("instance-create-end", vm, port),
                timestamp="2026-12-01 23:08:48.523874", publisher_id="nova-compute:test")
    wire = json.dumps(samples.envelope(body))
    bus.raw(wire)
    until(lambda: registered(vm), 120, "registered", interval=1)
    bus.raw(wire)
    until(lambda: bus.queued() == (0, 0), 30, "acknowledged")
    until(lambda: any(body["message_id"] in str(r.get("reason")) for r in bus.lines()), 30,
          "the second one logged as handled already")
    follower, follower_port = new_vm("twice-next", v6=False)
    bus.nova(versioned("instance-create-end", follower, follower_port))
    until(lambda: chains(stack, follower) == ["build"], 120, "a later chain")
    assert chains(stack, vm) == ["build"]


def test_rename_without_notify_on_state_change_moves_records_at_the_next_event(
        bus: Bus, stack: Stack) -> None:
    """Nova's default sends nothing for a rename; the resize after it carries the new
    name, and every backend moves to it then."""
    vm, port = new_vm("quiet", v6=False)
    bus.nova(versioned("instance-create-end", vm, port))
    until(lambda: registered(vm), 120, "registered", interval=1)
    renamed = vm._replace(hostname=vm.hostname + "-q")
    bus.nova(resized_flavor(versioned("instance-resize_finish-end", vm, port,
                                      renamed.hostname), 2, 4096))
    until(lambda: len(chains(stack, vm)) == 2, 60, "the resize's chain")
    state = held(renamed)
    assert state["dns"]["A"] == [vm.addresses[0][0]]
    assert state["dns"]["PTR"] == {vm.addresses[0][0]: [
        "%s.cloud.example.test." % renamed.hostname]}
    assert state["ldap"] == ["cn=%s,%s" % (renamed.hostname, stack.slapd.hosts_base)]
    assert (state["inventory"]["name"], state["inventory"]["memory"]) == (renamed.hostname,
                                                                          4096)
    assert not held(vm)["dns"]["A"]


def test_check_probes_the_notification_transport(bus: Bus, stack: Stack) -> None:
    from novahooks.settings import load_settings
    from tasks.operations import check
    env = dict(os.environ, NOVAHOOKS_NOTIFICATIONS_PASSWORD="guest")
    results = {r["check"]: r for r in check(load_settings(str(bus.config), env))}
    assert results["notifications"]["ok"], results["notifications"]
    assert "127.0.0.1:5672 reachable" in results["notifications"]["detail"]
    assert "guest" not in results["notifications"]["detail"]
    wrong = dict(env, NOVAHOOKS_NOTIFICATIONS_PASSWORD="not-the-password")
    refused = {r["check"]: r for r in check(load_settings(str(bus.config), wrong))}
    assert not refused["notifications"]["ok"]
    assert "not-the-password" not in refused["notifications"]["detail"]
    hooks_only = {r["check"] for r in check(load_settings(str(stack.config_path)))}
    assert "notifications" not in hooks_only, "a hook-only configuration is not probed"


def test_the_listener_log_is_json_lines_only(bus: Bus) -> None:
    text = bus.text(1)
    assert text.strip()
    for line in text.splitlines():
        json.loads(line)
