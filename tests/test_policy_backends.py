"""Naming and opt-in policy on the real servers: hook call -> outbox -> relay -> workers.

The session stack's BIND, slapd and NetBox, under a configuration of this module's
own (Stack.clone) with a project FQDN template, reverse zones chosen only by
``[naming prefix]`` rules ([dns] reverse_zones leaves them out, so a PTR in them
proves the rule was used) and the default opt-out metadata key. Its broker is a
Redis database of its own, so the session's workers never take its messages.
Assertions ask BIND through dnspython, NetBox through pynetbox, slapd through the
directory driver, and read the audit file.
"""

import uuid
from typing import Any, Dict, Iterator, List

import dns.message
import dns.query
import dns.rdatatype
import dns.rcode
import dns.reversename
import dns.tsigkeyring
import dns.update
import pytest

from tasks import simulate
from novahooks.nova import hooks
from tests.servers.stack import FORWARD_ZONE, Stack
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, pipeline, unique_v4, unique_v6
from tests.helpers import audit_lines, fire_into, until

PROJECT = "9e0d7c6b5a4f43e2b1a0c9d8e7f6a5b4"


@pytest.fixture(scope="module")
def named(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with pipeline(stack, tmp_path_factory.mktemp("policy"), 7, **{
        "dns": {"reverse_zones": "168.192.in-addr.arpa"},
        "naming project %s" % PROJECT: {"fqdn": "{hostname}.{project}.%s" % FORWARD_ZONE},
        "naming prefix 10.20.0.0/16": {"reverse_zone": "10.in-addr.arpa"},
        "naming prefix 2001:db8:20::/64": {"reverse_zone": "8.b.d.0.1.0.0.2.ip6.arpa"},
    }) as clone:
        yield clone


fire = fire_into("named")


def ask(stack: Stack, name: str, rdtype: str) -> List[str]:
    """What BIND itself answers (TSIG-signed query, as the driver's key)."""
    query = dns.message.make_query(name, rdtype)
    query.use_tsig(dns.tsigkeyring.from_text({stack.bind.key_name: stack.bind.key_secret}),
                   keyname=stack.bind.key_name, algorithm="hmac-sha256")
    response = dns.query.tcp(query, "127.0.0.1", port=stack.bind.port, timeout=5)
    assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    return sorted(rdata.to_text() for rrset in response.answer
                  if rrset.rdtype == dns.rdatatype.from_text(rdtype) for rdata in rrset)


def ptr(address: str) -> str:
    return dns.reversename.from_address(address).to_text()


def finished(stack: Stack, instance_uuid: str, kind: str) -> List[Dict[str, Any]]:
    return [r for r in audit_lines(stack.audit_path, instance_uuid)
            if r["kind"] == kind and r["stage"] == "done"]


def delete_with_addresses(vm: Vm) -> None:
    """Nova's delete through one hook object, as Nova's cached HookManager calls it: pre
    captures the addresses and post sends them (simulate.delete builds a new manager per
    call, so its delete events carry none)."""
    hook = hooks.DeleteInstanceHook()
    inst = simulate.instance(vm, "active", "deleting", nw=simulate.network_info(vm))
    hook.pre(object(), object(), inst, [])
    hook.post(None, object(), object(), inst, [])


def netbox_dns_names(stack: Stack, address: str) -> List[str]:
    import pynetbox
    api = pynetbox.api(stack.netbox.url, token=stack.netbox.token)
    return [ip.dns_name for ip in api.ipam.ip_addresses.filter(address=address)]


@pytest.mark.usefixtures("fire")
def test_a_project_template_names_the_vm_in_bind_netbox_and_the_audit(named: Stack) -> None:
    v4, v6 = unique_v4(), unique_v6()
    vm = with_uuid(Vm("pol-" + uuid.uuid4().hex[:8], ((v4, mac()), (v6, mac())),
                      project_id=PROJECT))
    fqdn = "%s.%s.%s." % (vm.hostname, PROJECT, FORWARD_ZONE)
    create(vm)
    record = until(lambda: finished(named, vm.uuid, "build"), 90, "audit of the build")[0]
    assert record["policy"] == {"register": True, "rule": "[register] default = true",
                                "fqdn": fqdn.rstrip(".")}
    assert ask(named, fqdn, "A") == [v4] and ask(named, fqdn, "AAAA") == [v6]
    # Both PTRs went to zones only a [naming prefix] rule names.
    assert ask(named, ptr(v4), "PTR") == [fqdn] and ask(named, ptr(v6), "PTR") == [fqdn]
    assert ask(named, "%s.%s." % (vm.hostname, FORWARD_ZONE), "A") == []
    assert netbox_dns_names(named, v4) == [fqdn.rstrip(".")]
    delete(vm)
    until(lambda: finished(named, vm.uuid, "delete"), 90, "audit of the delete")
    assert ask(named, fqdn, "A") == [] and ask(named, fqdn, "AAAA") == []
    assert ask(named, ptr(v4), "PTR") == [] and ask(named, ptr(v6), "PTR") == []
    assert netbox_dns_names(named, v4) == []


@pytest.mark.usefixtures("fire")
def test_an_opted_out_vm_leaves_nothing_but_its_audit_and_its_delete_removes_nothing(
        named: Stack) -> None:
    from tests.demo import gone, holdings
    v4 = unique_v4()
    vm = with_uuid(Vm("pol-out-" + uuid.uuid4().hex[:8], ((v4, mac()),),
                      metadata=(("novahooks:register", "false"),)))
    name = "%s.%s." % (vm.hostname, FORWARD_ZONE)
    # Someone else's PTR at the name this VM would have had: its delete must not take it.
    keyring = dns.tsigkeyring.from_text({named.bind.key_name: named.bind.key_secret})
    theirs = dns.update.UpdateMessage("10.in-addr.arpa", keyring=keyring,
                                      keyname=named.bind.key_name, keyalgorithm="hmac-sha256")
    theirs.add(ptr(v4), 300, "PTR", name)
    assert dns.query.tcp(theirs, "127.0.0.1", port=named.bind.port, timeout=5).rcode() == 0
    try:
        create(vm)
        for kind in ("create", "build"):
            record = until(lambda kind=kind: finished(named, vm.uuid, kind), 90,
                           "audit of the %s" % kind)[0]
            assert record["policy"] == {"register": False,
                                        "rule": "metadata novahooks:register=false"}
        held = holdings(vm)
        held["dns"]["PTR"] = {}  # the PTR is the other owner's, checked below
        assert gone(vm, held), held
        assert ask(named, name, "TXT") == [] and ask(named, name, "A") == []
        assert netbox_dns_names(named, v4) == []
        delete_with_addresses(vm)
        record = until(lambda: finished(named, vm.uuid, "delete"), 90, "audit of the delete")
        assert record[0]["addresses"] == [v4]
        assert ask(named, ptr(v4), "PTR") == [name]
        steps = [r for r in audit_lines(named.audit_path, vm.uuid) if r["stage"] == "failed"]
        assert steps == []
    finally:
        cleanup = dns.update.UpdateMessage("10.in-addr.arpa", keyring=keyring,
                                           keyname=named.bind.key_name,
                                           keyalgorithm="hmac-sha256")
        cleanup.delete(ptr(v4), "PTR")
        dns.query.tcp(cleanup, "127.0.0.1", port=named.bind.port, timeout=5)
