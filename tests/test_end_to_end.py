"""Hook call -> outbox -> relay -> Celery chain on per-step worker pools -> real backends.

Every assertion asks the server itself: BIND through dnspython, slapd through
ldap3, NetBox through pynetbox, and the audit file on disk.
"""

import os
import signal
from typing import Any, Dict, List

import pytest

from novahooks.event import Address
from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.helpers import assert_registered_everywhere, audit_lines, audited, until

pytestmark = pytest.mark.usefixtures("hook_outbox")


def done(stack: Stack, instance_uuid: str, kind: str) -> bool:
    return audited(stack.audit_path, instance_uuid, kind)


def failures(stack: Stack, instance_uuid: str) -> List[Dict[str, Any]]:
    return [r for r in audit_lines(stack.audit_path, instance_uuid) if r["stage"] == "failed"]


def held(vm: Vm) -> Dict[str, Any]:
    from tests.demo import holdings
    return holdings(vm)


def test_linux_and_windows_vms_dual_stack_register_and_go_away(
        stack: Stack, processes: Processes) -> None:
    from tests.demo import gone
    vms = [with_uuid(Vm("e2e-lin", ((unique_v4(), mac()), (unique_v6(), mac())))),
           with_uuid(Vm("e2e-win", ((unique_v4(), mac()),), os_type="windows"))]
    for vm in vms:
        create(vm)
    for vm in vms:
        state = assert_registered_everywhere(vm, stack.slapd.hosts_base)
        assert state["inventory"]["vcpus"] == vm.vcpus
        until(lambda vm=vm: done(stack, vm.uuid, "build"), 30, "audit of build")
    for vm in vms:
        delete(vm)
    for vm in vms:
        until(lambda vm=vm: gone(vm, held(vm)), 90, "%s removed" % vm.hostname)
        until(lambda vm=vm: done(stack, vm.uuid, "delete"), 30, "audit of delete")


def test_running_the_chain_twice_leaves_exactly_one_record(stack: Stack,
                                                           processes: Processes) -> None:
    from tests.demo import registered
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    for _ in range(3):
        chains.build(app, ev.to_dict()).apply_async()
    until(lambda: registered(vm, held(vm)), 120, "registered")
    until(lambda: len([r for r in audit_lines(stack.audit_path, ev.uuid)
                       if r["stage"] == "done"]) == 3, 30, "three chains finished")
    state = held(vm)
    assert len(state["ipam"]) == 1 and len(state["ldap"]) == 1
    assert state["dns"]["A"] == [ev.addresses[0].address]
    import pynetbox
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    assert len(api.virtualization.virtual_machines.filter(name=ev.hostname)) == 1
    assert len(api.ipam.ip_addresses.filter(address=ev.addresses[0].address)) == 1


@pytest.mark.parametrize("hostname,field", [
    ("bad_name!", "hostname"), ("x" * 64, "hostname"), ("", "hostname"),
    ("cn=evil,ou=x", "hostname")])
def test_bad_input_is_audited_with_the_field_and_writes_nothing(
        stack: Stack, processes: Processes, hostname: str, field: str) -> None:
    from tests.demo import gone
    from tasks import chains
    from tasks.app import app
    ev = make_event(hostname=hostname, addresses=[Address(unique_v4(), 4, mac())])
    chains.build(app, ev.to_dict()).apply_async()
    record = until(lambda: failures(stack, ev.uuid), 30, "failure audit")[0]
    assert record["step"] == "dns.register"
    assert "invalid %s" % field in record["error"]
    vm = Vm("valid-name-unused", tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    assert gone(vm, held(vm))


def test_address_outside_every_prefix_fails_before_any_write(stack: Stack,
                                                             processes: Processes) -> None:
    from tests.demo import gone
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[Address(unique_v4(), 4, mac()), Address("172.31.9.9", 4, mac())])
    chains.build(app, ev.to_dict()).apply_async()
    record = until(lambda: failures(stack, ev.uuid), 30, "failure audit")[0]
    assert "172.31.9.9" in record["error"] and record["step"] == "dns.register"
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    assert gone(vm, held(vm))


def test_unknown_flavor_stops_at_inventory_with_a_clear_error(stack: Stack,
                                                              processes: Processes) -> None:
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[], flavor=None)
    chains.build(app, ev.to_dict()).apply_async()
    record = until(lambda: failures(stack, ev.uuid), 30, "failure audit")[0]
    assert record["step"] == "inventory.register" and "unknown flavor" in record["error"]


def test_directory_that_hangs_is_retried_until_it_answers(stack: Stack,
                                                          processes: Processes) -> None:
    from tests.demo import registered
    vm = with_uuid(Vm("e2e-slow-ldap", ((unique_v4(), mac()),)))
    os.kill(stack.slapd.process.proc.pid, signal.SIGSTOP)
    try:
        create(vm)
        log = processes.workers["ldap"].log
        until(lambda: vm.uuid in log.read_text() and '"outcome": "retry"' in log.read_text(),
              60, "a retry of ldap.register")
        assert not registered(vm, held_without_ldap(vm))
    finally:
        os.kill(stack.slapd.process.proc.pid, signal.SIGCONT)
    until(lambda: registered(vm, held(vm)), 120, "registered after slapd came back")
    delete(vm)


def held_without_ldap(vm: Vm) -> Dict[str, Any]:
    from tasks import drivers
    from tasks.config import settings
    fqdn = "%s.%s" % (vm.hostname, settings().dns.zone)
    return {"dns": drivers.dns().describe(fqdn, vm.uuid, [a for a, _ in vm.addresses]),
            "ldap": [], "ipam": drivers.ipam().describe(vm.uuid)["addresses"],
            "inventory": drivers.inventory().describe(vm.uuid)}


def test_resize_event_updates_the_inventory_and_audits(stack: Stack,
                                                       processes: Processes) -> None:
    from novahooks.event import Flavor
    from tasks import chains
    from tasks.app import app
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    vm = Vm(ev.hostname, tuple((a.address, a.mac) for a in ev.addresses), uuid=ev.uuid)
    chains.build(app, ev.to_dict()).apply_async()
    until(lambda: held(vm)["inventory"].get("status") == "active", 120, "registered")
    bigger = ev._replace(kind="resize", flavor=Flavor("m1.large", 8, 16384, 160, 0, 0))
    chains.build(app, bigger.to_dict()).apply_async()
    until(lambda: held(vm)["inventory"].get("vcpus") == 8, 120, "inventory resized")
    assert held(vm)["inventory"]["memory"] == 16384
    until(lambda: any(r["kind"] == "resize" and r["stage"] == "done"
                      for r in audit_lines(stack.audit_path, ev.uuid)), 30, "audit of resize")
