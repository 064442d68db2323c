"""Tenant input that used to be half-written, through the real relay-less chain and pools.

Issue 19 found registrations refused only at a later step, after earlier ones had
written: ``ns1`` (IPAM and LDAP written, DNS refused), an address in a NetBox prefix
without a reverse zone (IPAM written), a router's PTR (taken over), ``wpad`` (accepted).
Each chain below now fails at its first writing step, the audit says which check refused
it, and IPAM (NetBox), DNS (BIND), the directory (slapd) and inventory (NetBox) hold
nothing for the instance, as each server answers. The build chain's first writer is
``dns.register`` (DNS goes before NetBox), so an address IPAM would refuse is refused there.
"""

import uuid
from typing import Any, Dict, Iterator, List

import dns.name
import dns.reversename
import pytest

from novahooks.event import Address
from tests.conftest import mac, make_event, unique_v4
from tests.helpers import audit_lines, until
from tests.servers.stack import Processes, Stack


def failures(stack: Stack, instance_uuid: str) -> List[Dict[str, Any]]:
    return [r for r in audit_lines(stack.audit_path, instance_uuid) if r["stage"] == "failed"]


def nothing_held(event: Any) -> Dict[str, Any]:
    """What any backend holds for the instance (empty when nothing)."""
    from tasks import drivers
    from tasks.backends.dns.base import owner_marker
    from tasks.errors import OutOfScope
    found: Dict[str, Any] = {}
    if drivers.ipam().describe(event.uuid)["addresses"]:
        found["ipam"] = drivers.ipam().describe(event.uuid)
    if drivers.directory().describe(event.uuid)["entries"]:
        found["ldap"] = drivers.directory().describe(event.uuid)
    if drivers.inventory().describe(event.uuid):
        found["inventory"] = drivers.inventory().describe(event.uuid)
    dns_ = drivers.dns()
    name = dns.name.from_text("%s.cloud.example.test" % event.hostname)
    ours = {item.address for item in event.addresses or []}
    if owner_marker(event.uuid) in dns_._query(name, "TXT") or \
            ours & set(dns_._query(name, "A") + dns_._query(name, "AAAA")):
        found["dns"] = name.to_text()
    for item in event.addresses or []:
        try:
            reverse, _ = dns_._reverse_zone(item.address)
        except OutOfScope:
            continue  # in no zone this server serves
        if owner_marker(event.uuid) in dns_._query(reverse, "TXT") or \
                name.to_text() in dns_._query(reverse, "PTR"):
            found.setdefault("ptr", []).append(item.address)
    return found


def run_chain(stack: Stack, event: Any) -> Dict[str, Any]:
    from tasks import chains
    from tasks.app import app
    chains.build(app, event.to_dict()).apply_async()
    (record,) = until(lambda: failures(stack, event.uuid), 60, "the chain's failure audited")
    return record


@pytest.fixture
def bare_prefix(stack: Stack) -> Iterator[str]:
    """A NetBox prefix that no reverse zone covers."""
    import pynetbox
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    prefix = api.ipam.prefixes.create(prefix="172.30.%d.0/24" % (uuid.uuid4().int % 200),
                                      status="active", description="issue 19 test")
    try:
        yield str(prefix.prefix)
    finally:
        prefix.delete()


def test_the_zones_ns_name_is_refused_at_the_first_step(stack: Stack,
                                                       processes: Processes) -> None:
    event = make_event(hostname="ns1", addresses=[Address(unique_v4(), 4, mac(), "private")])
    record = run_chain(stack, event)
    assert record["step"] == "dns.register" and "Conflict" in record["error"], record
    assert "NS target" in record["error"]
    assert nothing_held(event) == {}


def test_a_reserved_name_is_refused_at_the_first_step(stack: Stack,
                                                     processes: Processes) -> None:
    event = make_event(hostname="wpad", addresses=[Address(unique_v4(), 4, mac(), "private")])
    record = run_chain(stack, event)
    assert record["step"] == "dns.register" and "reserved" in record["error"], record
    assert nothing_held(event) == {}


def test_a_reserved_name_is_refused_before_the_preboot_directory_entry(
        stack: Stack, processes: Processes) -> None:
    event = make_event(kind="create", hostname="isatap")
    record = run_chain(stack, event)
    assert record["step"] == "ldap.register" and "reserved" in record["error"], record
    assert nothing_held(event) == {}


def test_an_address_without_a_reverse_zone_is_refused_before_ipam_writes(
        stack: Stack, processes: Processes, bare_prefix: str) -> None:
    address = bare_prefix.replace(".0/24", ".9")
    event = make_event(addresses=[Address(unique_v4(), 4, mac(), "private"),
                                  Address(address, 4, mac(), "private")])
    record = run_chain(stack, event)
    assert record["step"] == "dns.register" and "OutOfScope" in record["error"], record
    assert address in record["error"] and "reverse zone" in record["error"]
    assert nothing_held(event) == {}


def test_a_routers_ptr_is_refused_before_ipam_writes(stack: Stack,
                                                    processes: Processes) -> None:
    from tasks import drivers
    address = unique_v4()
    reverse = dns.reversename.from_address(address)
    dns_ = drivers.dns()
    update = dns_._update(dns.name.from_text("10.in-addr.arpa"))
    update.replace(reverse, 300, "PTR", "core-router.example.net.")
    dns_._send(update, "plant a router's PTR")
    try:
        event = make_event(addresses=[Address(address, 4, mac(), "private")])
        record = run_chain(stack, event)
        assert record["step"] == "dns.register" and "reverse name" in record["error"], record
        assert nothing_held(event) == {}
        assert dns_._query(reverse, "PTR") == ["core-router.example.net."]
    finally:
        update = dns_._update(dns.name.from_text("10.in-addr.arpa"))
        update.delete(reverse)
        dns_._send(update, "remove the router's PTR")


@pytest.mark.parametrize("address,word", [("192.168.1.0", "network address of 192.168.1.0/24"),
                                          ("192.168.1.255",
                                           "broadcast address of 192.168.1.0/24")])
def test_a_network_or_broadcast_address_is_refused_before_ipam_writes(
        stack: Stack, processes: Processes, address: str, word: str) -> None:
    """192.168.1.0/24 is a NetBox prefix of the stack (tests/servers/stack.py PREFIXES)."""
    event = make_event(addresses=[Address(unique_v4(), 4, mac(), "private"),
                                  Address(address, 4, mac(), "private")])
    record = run_chain(stack, event)
    assert record["step"] == "dns.register" and word in record["error"], record
    assert "addresses[1].address" in record["error"]
    assert nothing_held(event) == {}


@pytest.mark.parametrize("holder", ["instance", "by hand"])
def test_an_address_netbox_holds_for_another_is_refused_before_dns_writes(
        stack: Stack, processes: Processes, holder: str) -> None:
    """ipam.reserve runs third: its "held by another" refusal is asked by dns.register."""
    import pynetbox
    from tasks import drivers
    from tasks.backends.netbox.client import UUID_FIELD
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    taken, fresh = unique_v4(), unique_v4()
    other = make_event(addresses=[Address(taken, 4, mac(), "private")])
    if holder == "instance":
        drivers.ipam().ensure(other.uuid, "holder-%s.cloud.example.test" % other.uuid[:6],
                              other.addresses)
    else:
        api.ipam.ip_addresses.create(address=taken + "/16", status="active",
                                     description="a person's")
    try:
        event = make_event(addresses=[Address(fresh, 4, mac(), "private"),
                                      Address(taken, 4, mac(), "private")])
        record = run_chain(stack, event)
        assert record["step"] == "dns.register" and "Conflict" in record["error"], record
        assert taken in record["error"] and (other.uuid if holder == "instance" else
                                             "not managed by novahooks") in record["error"]
        assert nothing_held(event) == {}
        (kept,) = api.ipam.ip_addresses.filter(address=taken)
        assert (kept.custom_fields or {}).get(UUID_FIELD) == (
            other.uuid if holder == "instance" else None)
        assert list(api.ipam.ip_addresses.filter(address=fresh)) == []
        assert list(api.virtualization.virtual_machines.filter(name=event.hostname)) == []
    finally:
        for ip in api.ipam.ip_addresses.filter(address=taken):
            ip.delete()


def test_an_oversized_event_is_audited_by_the_relay_and_never_published(
        stack: Stack, processes: Processes) -> None:
    """Issue 19: a 20 MB metadata event was accepted and stored; its chain message (the
    event five times over) would be refused unread by every worker, unaudited."""
    from novahooks.nova.outbox import Outbox
    event = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")],
                       metadata={"blob": "y" * 200000})
    Outbox(str(stack.outbox_path)).append(event.uuid, event.kind, event.to_json())
    (record,) = until(lambda: failures(stack, event.uuid), 60, "the relay's audit record")
    assert record["step"] == "relay" and "max_event_bytes" in record["error"], record
    assert nothing_held(event) == {}
    gone = make_event(kind="delete", metadata={"blob": "y" * 200000})
    Outbox(str(stack.outbox_path)).append(gone.uuid, gone.kind, gone.to_json())
    until(lambda: any(r["stage"] == "done" and r["kind"] == "delete"
                      for r in audit_lines(stack.audit_path, gone.uuid)), 60,
          "the delete, sent without its metadata, audited as done")
