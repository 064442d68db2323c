"""Steps running at once in one worker write to NetBox in shared list requests
(tasks/backends/coalesce.py, netbox/coalesce.py), against a real NetBox: each gets its own records,
a VM NetBox refuses fails alone, a lone step is not held."""

import threading
import time
from typing import Any, Callable, Dict, List

import pynetbox
import pytest

from novahooks.event import Address
from novahooks.settings import load_settings
from tasks.backends.inventory.netbox import NetBoxInventory
from tasks.backends.ipam.netbox import NetBoxIpam
from tasks.backends.netbox.client import UUID_FIELD
from tasks.errors import Conflict
from tests.conftest import mac, make_event, unique_v4
from tests.helpers import until
from tests.tasks.backends.coalescing import at_once, busy, hold_first
from tests.servers.stack import Stack

FQDN = "%s.cloud.example.test"
#: batch_wait of the tests that hold a first request: longer than the hold may last
HOLD_MS = 90000


@pytest.fixture(scope="module")
def api(stack: Stack) -> pynetbox.api:
    return pynetbox.api(stack.netbox.url, token=stack.netbox.token)


def _drivers(stack: Stack, batch_wait_ms: int) -> Any:
    settings = load_settings(str(stack.config_path), {
        "NOVAHOOKS_IPAM_BATCH_WAIT": str(batch_wait_ms),
        "NOVAHOOKS_INVENTORY_BATCH_WAIT": str(batch_wait_ms)})
    return NetBoxIpam(settings.ipam), NetBoxInventory(settings.inventory)


def _count(driver: Any) -> Dict[str, int]:
    """Requests that reached NetBox (a merged write is one), by reads and writes."""
    counted = {"reads": 0, "writes": 0}

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        counted["reads" if response.request.method == "GET" else "writes"] += 1
        return response
    driver.api.http_session.hooks["response"].append(hook)
    return counted


def _hold_first_write(driver: Any, waiting: int, reads: bool = False) -> None:
    """The driver's first write (with ``reads``: its first read) is held until ``waiting``
    others of its kind queue behind it (tests/tasks/backends/coalescing.py)."""
    hold_first(driver.api.http_session.coalescer, waiting,
               lambda method, body: (method == "GET") == reads)


def _vm_ids(api: pynetbox.api, uuid: str) -> List[int]:
    return [int(vm.id) for vm in api.virtualization.virtual_machines.filter(
        **{"cf_" + UUID_FIELD: uuid})]


def test_steps_at_once_share_list_requests_and_each_gets_its_own_records(
        stack: Stack, api: pynetbox.api) -> None:
    ipam, inventory = _drivers(stack, HOLD_MS)
    inventory._cluster()  # the one-time lookups, not what is measured
    ipam.prefix_of(unique_v4())
    writes = {"ipam": _count(ipam), "inventory": _count(inventory)}
    events = [make_event(addresses=[Address(unique_v4(), 4, mac(), "private", "p%d" % i)])
              for i in range(8)]

    def build(event: Any) -> Callable[[], Dict[str, Any]]:
        def steps() -> Dict[str, Any]:
            made = {"ipam": ipam.ensure(event.uuid, FQDN % event.hostname, event.addresses,
                                        {})}
            made["inventory"] = inventory.register(event, made)
            return made
        return steps

    _hold_first_write(ipam, 7)
    made = at_once([build(event) for event in events])
    assert all(isinstance(m, dict) for m in made), [m for m in made if not isinstance(m, dict)]
    # Alone: 1 IPAM write and 4 inventory writes per VM (VM, interface, assignment,
    # primary IP), 40 in all.
    assert writes["ipam"]["writes"] == 2, "the first alone, the 7 behind it as one list"
    assert writes["inventory"]["writes"] < 32, writes
    for event, notes in zip(events, made):
        [vm_id] = _vm_ids(api, event.uuid)
        assert notes["inventory"]["id"] == vm_id
        vm = api.virtualization.virtual_machines.get(vm_id)
        assert vm.name == event.hostname and vm.status.value == "active"
        ip = api.ipam.ip_addresses.get(address=event.addresses[0].address)
        assert int(ip.id) == notes["ipam"]["ids"][event.addresses[0].address]
        assert ip.custom_fields[UUID_FIELD] == event.uuid
        assert ip.assigned_object.virtual_machine.id == vm_id
        assert int(vm.primary_ip4.id) == int(ip.id)
        assert notes["inventory"]["netbox_request_ids"], "the merged writes' ids are kept"
    gone = at_once([lambda e=e, m=m: inventory.deregister(e, m) for e, m in zip(events, made)])
    assert all(g["action"] == "deleted" for g in gone), gone
    assert not any(_vm_ids(api, e.uuid) for e in events)


def test_a_vm_netbox_refuses_fails_alone_and_the_others_get_their_records(
        stack: Stack, api: pynetbox.api) -> None:
    _, inventory = _drivers(stack, HOLD_MS)
    cluster = inventory._cluster()
    taken = make_event(addresses=[])
    theirs = api.virtualization.virtual_machines.create(name=taken.hostname, cluster=cluster)
    events = [make_event(addresses=[]) for _ in range(3)] + [taken]
    writes = _count(inventory)
    _hold_first_write(inventory, 3)
    first = inventory.register
    results: List[Any] = [None] * 4
    # one good VM's write first, the other three (the taken name among them) behind it
    lead = threading.Thread(target=lambda: results.__setitem__(0, first(events[0], {})))
    lead.start()
    until(lambda: busy(inventory.api.http_session.coalescer), 30, "the first write in flight")
    results[1:] = at_once([lambda e=e: inventory.register(e, {}) for e in events[1:]])
    lead.join(60)
    assert isinstance(results[3], Conflict) and "id %s" % theirs.id in str(results[3])
    assert not _vm_ids(api, taken.uuid), "nothing of the refused VM is left"
    for event, result in zip(events[:3], results[:3]):
        assert isinstance(result, dict), result
        assert _vm_ids(api, event.uuid) == [result["id"]]
    assert writes["writes"] == 5, "the first alone; 3 as one list, refused; each of them alone"
    for event, result in zip(events[:3], results[:3]):
        inventory.deregister(event, {"inventory": result})
    theirs.delete()


def test_a_lone_step_is_never_held_for_others(stack: Stack, api: pynetbox.api) -> None:
    """batch_wait is 5 s: a step whose writes have none ahead of them sends each at once
    (each of its five writes held would take 25 s)."""
    ipam, inventory = _drivers(stack, 5000)
    inventory._cluster()
    event = make_event(addresses=[Address(unique_v4(), 4, mac(), "private", "lone")])
    started = time.monotonic()
    made = {"ipam": ipam.ensure(event.uuid, FQDN % event.hostname, event.addresses, {})}
    made["inventory"] = inventory.register(event, made)
    assert time.monotonic() - started < 5.0
    assert _vm_ids(api, event.uuid) == [made["inventory"]["id"]]
    inventory.deregister(event, made)
    ipam.release(event.uuid, made["ipam"])


def test_address_reads_at_once_share_one_get_and_each_sees_only_its_own(
        stack: Stack, api: pynetbox.api) -> None:
    """The "held by another?" of 8 steps at once (the DNS pool's IPAM preflight, run in
    threads): the first read alone, the 7 behind it as one GET. A step whose address a
    person recorded is refused, naming it, and only that step; a step whose address is
    its own instance's passes."""
    ipam, _ = _drivers(stack, HOLD_MS)
    ipam.prefix_of(unique_v4())
    by_hand = unique_v4()
    record = api.ipam.ip_addresses.create(address=by_hand + "/16", status="active",
                                          description="a person's")
    ours = make_event(addresses=[Address(unique_v4(), 4, mac(), "private", "own")])
    held = ipam.ensure(ours.uuid, FQDN % ours.hostname, ours.addresses, {})
    try:
        events = [make_event(addresses=[Address(unique_v4(), 4, mac(), "private", "r%d" % i),
                                        Address(unique_v4(), 4, mac(), "private", "s%d" % i)])
                  for i in range(6)]
        events.append(make_event(addresses=[Address(by_hand, 4, mac(), "private", "hand")]))
        events.append(ours)
        reads = _count(ipam)
        _hold_first_write(ipam, 7, reads=True)
        results = at_once([lambda e=e: ipam.preflight(e.uuid, FQDN % e.hostname, e.addresses)
                            for e in events])
        assert reads == {"reads": 2, "writes": 0}, reads
        assert results[:6] == [None] * 6 and results[7] is None, results
        assert isinstance(results[6], Conflict), results[6]
        assert by_hand in str(results[6]) and "not managed by novahooks" in str(results[6])
    finally:
        ipam.release(ours.uuid, held)
        record.delete()
