"""Current Nova for real: Nova 34.0.0's own notifications drive the whole pipeline.

Real Nova 34 runs in-process in its own Python 3.12 venv (``nova34_servers.py``) and publishes
what it emits through oslo.messaging onto a private vhost of the machine's RabbitMQ;
``novahooks listen`` consumes it into the session stack's outbox, the session relay and
workers carry it to the real BIND, slapd and NetBox. Each step of a server's life is followed
by what every backend really holds, in both of Nova's notification formats.
"""

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from tests.conftest import ROOT, unique_v4, unique_v6
from tests.demo import gone, holdings, registered
from tests.helpers import audit_lines, audited, until
from tests.nova.venv import NOVA_34, ensure_nova_venv, venv_python
from tests.servers.listener import ListenerProcess, listener_config
from tests.servers.rabbitmq import RabbitVhost, private_vhost
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm

POOL = "novahooks-nova34"
#: Where a test writes what Nova emitted and what the listener made of it (for the record).
REPORT = "nova34-notifications.json"


class Listener(ListenerProcess):
    """``novahooks listen`` as its own process, on this module's vhost."""

    def __init__(self, vhost: RabbitVhost, config: Path, logs: Path) -> None:
        super().__init__(vhost, config, logs, POOL)


class Nova(object):
    """Drives tests/nova/nova34_servers.py over its line protocol."""

    def __init__(self, python: Path, url: str, fmt: str, notify: str, log: Path) -> None:
        self.format = fmt
        self.published: List[Dict[str, Any]] = []
        self.seconds = 0.0      # spent in Nova's commands since the test began
        self.proc = subprocess.Popen(
            [str(python), str(ROOT / "tests/nova/nova34_servers.py"), "--transport-url", url,
             "--format", fmt, "--notify-on-state-change", notify, "--log", str(log)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=str(ROOT), text=True, bufsize=1)
        self.ready = self._read()
        assert self.ready["event"] == "ready", self.ready
        assert self.ready["nova"] == "34.0.0" and self.ready["cast_as_call"] is False
        assert self.ready["control_exchange"] == "nova"

    def _read(self) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "Nova harness exited with %s" % self.proc.poll()
        return dict(json.loads(line))

    def send(self, command: str) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        assert reply["event"] == "done", reply
        self.published += reply["notifications"]
        self.seconds += reply["seconds"]
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Bus(object):
    def __init__(self, vhost: RabbitVhost, listener: Listener, python: Path,
                 workdir: Path) -> None:
        self.vhost = vhost
        self.listener = listener
        self.python = python
        self.workdir = workdir
        self.url = "rabbit://guest:guest@127.0.0.1:5672/%s" % vhost.name
        self.novas: Dict[str, Nova] = {}
        self.nova_in_use: Optional[Nova] = None
        self.start = 0          # listener lines before the test began

    def begin(self, nova: Nova) -> Nova:
        """A test's Nova: count its notifications and the listener's lines from here."""
        self.nova_in_use = nova
        self.start = len(self.listener.all_lines())
        nova.published.clear()
        nova.seconds = 0.0
        return nova

    def settle(self, audit: Path, timeout: float = 120) -> None:
        """Wait (cheaply: log and audit files, not the backends) until the listener handled
        every notification Nova published so far and every chain it enqueued is audited."""
        nova = self.nova_in_use
        assert nova is not None
        until(lambda: len(self.listener.all_lines()) - self.start >= len(nova.published),
              timeout, "the listener handling Nova's notifications", interval=0.2)

        def audited() -> bool:
            rows = self.listener.all_lines()[self.start:]
            wanted = {r["event_id"] for r in rows if r["outcome"] == "enqueued"}
            if not wanted:
                return True
            seen = set()
            if not audit.exists():
                return False
            with open(audit) as fh:
                for line in fh:
                    if '"event_id"' in line:
                        seen.add(json.loads(line).get("event_id"))
            return wanted <= seen
        until(audited, timeout, "every enqueued chain audited", interval=0.3)

    def nova(self, fmt: str) -> Nova:
        """One Nova per notification format for the module (its start-up takes ~13 s);
        renames are sent at once (notify_on_state_change) unless a test turns that off."""
        if fmt not in self.novas:
            self.novas[fmt] = Nova(self.python, self.url, fmt, "vm_and_task_state",
                                   self.workdir / ("nova34-%s.log" % fmt))
        return self.novas[fmt]

    def close(self) -> None:
        for nova in self.novas.values():
            nova.close()


@pytest.fixture(scope="module")
def bus(stack: Stack, processes: Processes,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    python = venv_python(ensure_nova_venv(lambda line: print(line, flush=True), NOVA_34))
    workdir = tmp_path_factory.mktemp("nova34")
    vhost = private_vhost("novahooks-nova34")
    config = listener_config(stack.config_path, workdir, vhost, POOL)
    listener = Listener(vhost, config, workdir)
    running = Bus(vhost, listener, python, workdir)
    try:
        listener.start()      # its queue exists before Nova publishes anything
        yield running
    finally:
        running.close()
        listener.stop()
        vhost.stop()


def vm_of(server: Dict[str, Any]) -> Vm:
    addresses = tuple((a["addr"], a["mac"]) for entries in server["addresses"].values()
                      for a in entries)
    return Vm(server["hostname"], addresses, uuid=server["id"])


def addresses(vm: Vm) -> List[str]:
    return sorted(a for a, _ in vm.addresses)


def netbox_vm(uuid: str) -> Any:
    from tasks import drivers
    inventory = drivers.inventory()
    return inventory.find(uuid)


def directory_names(uuid: str) -> List[str]:
    from tasks import drivers
    return [e.split(",")[0] for e in drivers.directory().describe(uuid)["entries"]]


def holds_exactly(bus: Bus, stack: Stack, vm: Vm, what: str,
                  extra: Callable[[Dict[str, Any]], bool] = lambda held: True,
                  timeout: float = 60) -> Dict[str, Any]:
    """Wait until the backends hold this VM's current state, nothing more; return it."""
    started = time.monotonic()
    bus.settle(stack.audit_path)
    fqdn = "%s.cloud.example.test." % vm.hostname

    def check() -> Optional[Dict[str, Any]]:
        held = holdings(vm)
        dns = held["dns"]
        ok = (registered(vm, held)
              and sorted(dns["A"] + dns["AAAA"]) == addresses(vm)
              and all(v == [fqdn] for v in dns["PTR"].values())
              and held["ldap"] == ["cn=%s,%s" % (vm.hostname, stack.slapd.hosts_base)]
              and sorted(a.split("/")[0] for a in held["ipam"]) == addresses(vm)
              and held["inventory"].get("name") == vm.hostname
              and held["inventory"].get("macs") == sorted({m for _, m in vm.addresses})
              and extra(held))
        return held if ok else None
    held = dict(until(check, timeout, "%s: backends hold %s" % (what, vm.hostname),
                      interval=0.5))
    print("  %s %s: backends hold it %.1f s after Nova's reply" % (
        what, vm.hostname, time.monotonic() - started))
    return held


def name_gone(vm: Vm) -> bool:
    """No DNS name, directory entry or inventory record under this VM's hostname."""
    from tasks import drivers
    held = holdings(vm)
    inventory = drivers.inventory()
    return (not held["dns"]["A"] and not held["dns"]["AAAA"]
            and not any(e.startswith("cn=%s," % vm.hostname) for e in held["ldap"])
            and not list(inventory.api.virtualization.virtual_machines.filter(
                name=vm.hostname)))


def done_kinds(stack: Stack, uuid: str) -> List[str]:
    return [r["kind"] for r in audit_lines(stack.audit_path, uuid) if r.get("stage") == "done"]


def record(bus: Bus, name: str, nova: Nova) -> Dict[str, Any]:
    """What Nova emitted and what the listener made of it, kept beside the logs."""
    rows = bus.listener.all_lines()[bus.start:]
    summary = {
        "emitted": sorted({n["event_type"] for n in nova.published}),
        "emitted_count": len(nova.published),
        "ignored": sorted({"%s: %s" % (r["event_type"], r.get("reason")) for r in rows
                           if r["outcome"] == "ignored"}),
        "malformed": sorted({"%s: %s" % (r["event_type"], r.get("error")) for r in rows
                             if r["outcome"] == "malformed"}),
        "enqueued": sorted({"%s -> %s" % (r["event_type"], r.get("kind")) for r in rows
                            if r["outcome"] == "enqueued"}),
        "requeued": sum(1 for r in rows if r["outcome"] == "requeued"),
        "nova_startup_seconds": nova.ready["startup_seconds"],
        "nova_command_seconds": round(nova.seconds, 1),
    }
    path = bus.workdir / REPORT
    report = json.loads(path.read_text()) if path.exists() else {}
    report[name] = summary
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    print("\n%s: %s" % (name, json.dumps(summary, indent=1, sort_keys=True)))
    return summary


@pytest.mark.parametrize("fmt", ["versioned", "unversioned"])
def test_a_servers_whole_life_in_real_nova_34(fmt: str, bus: Bus, stack: Stack) -> None:
    nova = bus.begin(bus.nova(fmt))
    legacy = fmt == "unversioned"

    # Boot: one IPv4 server, one dual-stack server.
    v4 = nova.send("boot " + json.dumps({"name": "n34-%s-v4" % fmt[:3], "v4": unique_v4()}))
    dual = nova.send("boot " + json.dumps({"name": "n34-%s-ds" % fmt[:3], "v4": unique_v4(),
                                           "v6": unique_v6()}))
    single, vm = vm_of(v4["server"]), vm_of(dual["server"])
    assert len(single.addresses) == 1 and len(vm.addresses) == 2
    assert {a.count(":") > 0 for a in addresses(vm)} == {False, True}   # IPv4 and IPv6
    holds_exactly(bus, stack, single, "boot")
    flavor = dual["server"]["flavor"]
    held = holds_exactly(bus, stack, vm, "boot")
    assert held["dns"]["A"] and held["dns"]["AAAA"]
    assert (held["inventory"]["vcpus"], held["inventory"]["memory"]) == (
        flavor["vcpus"], flavor["ram"])

    # Rename (name and hostname): everything under the new name, the old one gone.
    renamed = nova.send("rename %s %s" % (vm.uuid, json.dumps({"name": vm.hostname + "-r"})))
    old, vm = vm, vm_of(renamed["server"])
    assert vm.hostname == old.hostname + "-r"
    holds_exactly(bus, stack, vm, "rename")
    until(lambda: name_gone(old), 30, "old name %s gone" % old.hostname)
    assert directory_names(vm.uuid) == ["cn=%s" % vm.hostname]

    # Resize to the next flavor and confirm: the inventory carries the new flavor.
    resized = nova.send("resize %s 2" % vm.uuid)
    assert resized["server"]["host"] != dual["server"]["host"]
    nova.send("confirm %s" % vm.uuid)
    new_flavor = resized["server"]["flavor"]
    assert new_flavor["ram"] != flavor["ram"]
    holds_exactly(bus, stack, vm, "resize", lambda held: (
        held["inventory"]["vcpus"], held["inventory"]["memory"],
        held["inventory"]["disk"]) == (new_flavor["vcpus"], new_flavor["ram"],
                                       (new_flavor["disk"] + new_flavor["ephemeral"]) * 1000))

    # Rebuild with another image: the inventory names it.
    rebuilt = nova.send("rebuild %s other" % vm.uuid)
    image = rebuilt["server"]["image"]
    assert image != dual["server"]["image"]
    until(lambda: image in (netbox_vm(vm.uuid).comments or ""), 60, "image in inventory")
    holds_exactly(bus, stack, vm, "rebuild")

    # Interface attach, then detach: that address's records only.
    extra = unique_v4()
    attached = nova.send("attach %s %s" % (vm.uuid, json.dumps({"v4": extra})))
    with_port = vm_of(attached["server"])
    assert addresses(with_port) == sorted(addresses(vm) + [extra])
    if legacy:
        # Nova sends no legacy notification for an interface change: nothing can follow it.
        assert attached["notifications"] == []
        holds_exactly(bus, stack, vm, "attach (not notified)")
    else:
        holds_exactly(bus, stack, with_port, "attach")
    detached = nova.send("detach %s %s" % (vm.uuid, attached["port_id"]))
    assert vm_of(detached["server"]) == vm
    if legacy:
        assert detached["notifications"] == []
    holds_exactly(bus, stack, vm, "detach")
    assert holdings(vm._replace(addresses=((extra, ""),)))["dns"]["PTR"] == {extra: []}

    # Shelve, offload, unshelve: nothing removed while the VM is offloaded.
    nova.send("shelve %s" % vm.uuid)
    offloaded = nova.send("shelve_offload %s" % vm.uuid)
    assert offloaded["server"]["host"] is None
    assert any(n["event_type"].endswith("shelve_offload.end")
               for n in offloaded["notifications"])
    bus.settle(stack.audit_path)
    held = holdings(vm)
    assert sorted(held["dns"]["A"] + held["dns"]["AAAA"]) == addresses(vm)
    assert len(held["ldap"]) == 1 and len(held["ipam"]) == len(vm.addresses)
    assert held["inventory"]["name"] == vm.hostname
    unshelved = nova.send("unshelve %s" % vm.uuid)
    assert unshelved["server"]["host"] is not None
    holds_exactly(bus, stack, vm, "unshelve")

    # Delete both: everything gone, the audit shows each step.
    for server in (single, vm):
        nova.send("delete %s" % server.uuid)
    bus.settle(stack.audit_path)
    for server in (single, vm):
        until(lambda server=server: gone(server, holdings(server)), 90,
              "%s removed" % server.hostname, interval=1)
        until(lambda server=server: "delete" in done_kinds(stack, server.uuid), 30,
              "audit of %s's delete" % server.hostname)
    assert name_gone(old) and name_gone(vm)
    kinds = done_kinds(stack, vm.uuid)
    assert kinds[0] == "build" and kinds[-1] == "delete", kinds
    assert kinds.count("network") >= (1 if legacy else 3), kinds   # rename (+ attach, detach)
    assert kinds.count("resize") >= 3, kinds                       # resize, rebuild, unshelve
    until(lambda: bus.listener.queued() == (0, 0), 30, "every notification acknowledged")
    summary = record(bus, "lifecycle-%s" % fmt, nova)
    assert summary["malformed"] == [] and summary["requeued"] == 0
    expected = "compute.instance." if legacy else "instance."
    assert all(e.startswith((expected, "scheduler.")) for e in summary["emitted"]), summary


def test_listener_killed_in_the_middle_of_real_novas_stream_loses_and_duplicates_nothing(
        bus: Bus, stack: Stack) -> None:
    """SIGKILL while Nova 34 boots, renames and deletes servers; a restart picks up the rest.

    Nova goes on publishing while the listener is dead (its queue keeps the messages); what the
    killed listener had taken but not acknowledged is delivered again after the restart.
    """
    nova = bus.begin(bus.nova("versioned"))
    listener = bus.listener
    first = listener.runs
    before = len(listener.lines(first))
    replies: List[Dict[str, Any]] = []
    failures: List[BaseException] = []

    def drive() -> None:
        try:
            specs = [{"name": "n34-kill-%d" % i, "v4": unique_v4()} for i in range(2)]
            specs[1]["v6"] = unique_v6()
            for spec in specs:
                replies.append(nova.send("boot " + json.dumps(spec)))
            keep = replies[1]["server"]
            replies.append(nova.send("rename %s %s" % (keep["id"], json.dumps(
                {"name": keep["name"] + "-r"}))))
            replies.append(nova.send("delete %s" % replies[0]["server"]["id"]))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    # Kill once the listener handled the first server's boot and Nova is booting the second.
    until(lambda: len(listener.lines(first)) - before >= 14, 60,
          "listener part-way through Nova's stream", interval=0.01)
    listener.kill()
    killed_after = len(listener.lines(first)) - before
    until(lambda: listener.ready() > 0, 30, "Nova publishing while the listener is down")
    listener.start()
    driver.join(120)
    assert not driver.is_alive() and not failures, failures
    deleted, old = vm_of(replies[0]["server"]), vm_of(replies[1]["server"])
    renamed = vm_of(replies[2]["server"])
    total = len(nova.published)
    assert killed_after < total, "the kill came after Nova's whole stream"
    holds_exactly(bus, stack, renamed, "after the restart")
    bus.settle(stack.audit_path)
    until(lambda: gone(deleted, holdings(deleted)), 90, "deleted server removed", interval=1)
    until(lambda: listener.queued() == (0, 0), 30, "stream acknowledged")
    assert name_gone(old)

    # Nothing duplicated: count what each backend holds, not what the driver says.
    from tasks import drivers
    ipam, inventory, dns = drivers.ipam(), drivers.inventory(), drivers.dns()
    for vm in (renamed,):
        for address in addresses(vm):
            assert len(list(ipam.api.ipam.ip_addresses.filter(address=address))) == 1, address
        assert len(list(inventory.api.virtualization.virtual_machines.filter(
            name=vm.hostname))) == 1
        assert len(directory_names(vm.uuid)) == 1
        fqdn = "%s.cloud.example.test" % vm.hostname
        held = dns.describe(fqdn, vm.uuid, addresses(vm))
        assert sorted(held["A"] + held["AAAA"]) == addresses(vm)
        # The killed listener may have made the build event durable without logging it as
        # enqueued (its redelivery is then ignored as a duplicate), so settle() does not
        # wait for that chain: wait for its closing record here.
        until(lambda vm=vm: audited(stack.audit_path, vm.uuid, "build"), 90,
              "the build chain of %s audited" % vm.hostname, interval=0.5)
        assert done_kinds(stack, vm.uuid).count("build") == 1
    for address in addresses(deleted):
        assert not list(ipam.api.ipam.ip_addresses.filter(address=address))
    handled = len(listener.lines(first)) - before + len(listener.lines(listener.runs))
    assert handled >= total        # redelivered ones are handled twice, none skipped
    summary = record(bus, "listener-killed", nova)
    assert summary["malformed"] == []


def test_under_novas_defaults_a_rename_and_an_attach_follow_at_the_next_notification(
        bus: Bus, stack: Stack) -> None:
    """Nova's defaults (legacy notifications only, notify_on_state_change unset): a rename
    and an interface attach send nothing; the next notification that carries the instance's
    hostname and fixed IPs (rebuild.end) brings both; a detach nobody announced is removed with
    the VM."""
    nova = bus.begin(bus.nova("unversioned"))
    nova.send("notify_on_state_change unset")
    try:
        defaults_rename(nova, bus, stack)
    finally:
        nova.send("notify_on_state_change vm_and_task_state")


def defaults_rename(nova: Nova, bus: Bus, stack: Stack) -> None:
    vm = vm_of(nova.send("boot " + json.dumps({"name": "n34-dflt", "v4": unique_v4()}))
               ["server"])
    holds_exactly(bus, stack, vm, "boot")
    renamed = nova.send("rename %s %s" % (vm.uuid, json.dumps({"name": vm.hostname + "-r"})))
    assert renamed["notifications"] == []          # Nova's default: a rename is not sent
    new = vm_of(renamed["server"])
    extra = unique_v4()
    attached = nova.send("attach %s %s" % (vm.uuid, json.dumps({"v4": extra})))
    assert attached["notifications"] == []         # nor is an interface change
    bus.settle(stack.audit_path)
    holds_exactly(bus, stack, vm, "rename and attach (not notified)")
    rebuilt = nova.send("rebuild %s other" % vm.uuid)
    assert "compute.instance.rebuild.end" in [n["event_type"] for n in rebuilt["notifications"]]
    # rebuild.end carries the hostname and the fixed IPs: both changes arrive with it.
    with_port = vm_of(rebuilt["server"])
    assert with_port.hostname == new.hostname and extra in addresses(with_port)
    holds_exactly(bus, stack, with_port, "the notification after the rename and attach")
    until(lambda: name_gone(vm), 30, "old name %s gone" % vm.hostname)
    detached = nova.send("detach %s %s" % (vm.uuid, attached["port_id"]))
    assert detached["notifications"] == []
    nova.send("delete %s" % vm.uuid)
    bus.settle(stack.audit_path)
    # The delete removes what was registered, the address detached unannounced included.
    until(lambda: gone(with_port, holdings(with_port)), 90, "%s removed" % new.hostname,
          interval=1)
    record(bus, "defaults-rename", nova)
