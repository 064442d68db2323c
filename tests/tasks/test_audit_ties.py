"""An audit record names what each backend itself recorded for the write: NetBox's request
ids (its changelog files the VM's changes under them), the DNS zones' SOA serials after the
update, the LDAP entry's entryUUID. Each is checked against the server, not the driver."""

from typing import Any, Dict, List

import dns.message
import dns.query
import pytest
import requests
from ldap3 import BASE

from tasks.simulate import Vm, create, with_uuid
from tests.conftest import mac, unique_v4
from tests.helpers import assert_registered_everywhere, audit_lines, audited, until
from tests.servers.stack import Processes, Stack
from tests.tasks.backends.test_directory_ldap import admin

pytestmark = pytest.mark.usefixtures("hook_outbox")


def soa_serial(stack: Stack, zone: str) -> int:
    response = dns.query.tcp(dns.message.make_query(zone, "SOA"), "127.0.0.1",
                             port=stack.bind.port, timeout=3)
    return int(response.answer[0][0].serial)


def changelog(stack: Stack, request_id: str) -> List[Dict[str, Any]]:
    answer = requests.get("%s/api/core/object-changes/" % stack.netbox.url,
                          params={"request_id": request_id},
                          headers={"Authorization": "Token %s" % stack.netbox.token},
                          timeout=15)
    answer.raise_for_status()
    return list(answer.json()["results"])


def test_the_build_record_names_each_backends_own_record_of_the_write(
        stack: Stack, processes: Processes) -> None:
    zone = "cloud.example.test."
    before = soa_serial(stack, zone)
    vm = with_uuid(Vm("tie-1", ((unique_v4(), mac()),)))
    create(vm)
    assert_registered_everywhere(vm, stack.slapd.hosts_base)
    until(lambda: audited(stack.audit_path, vm.uuid, "build"), 60, "audit of the build")
    (record,) = [r for r in audit_lines(stack.audit_path, vm.uuid)
                 if r["stage"] == "done" and r["kind"] == "build"]
    tied = record["backends"]

    serials = tied["dns"]["soa_serials"]
    assert before < serials[zone] <= soa_serial(stack, zone)
    assert len(serials) == 2, "the forward zone and the address's reverse zone"

    conn = admin(stack)
    assert conn.search(tied["directory"]["dn"], "(objectClass=*)", BASE,
                       attributes=["entryUUID"])
    assert tied["directory"]["entry_uuid"] == str(conn.entries[0].entryUUID.value)
    conn.unbind()

    vm_id = tied["inventory"]["id"]
    request_ids = tied["inventory"]["netbox_request_ids"]
    assert request_ids, "the inventory step wrote to NetBox"
    changed = [c for rid in request_ids for c in changelog(stack, rid)]
    assert any(c["changed_object_type"] == "virtualization.virtualmachine"
               and c["changed_object_id"] == vm_id for c in changed), changed
    address_ids = set(tied["ipam"]["ids"].values())
    ipam_changes = [c for rid in tied["ipam"]["netbox_request_ids"]
                    for c in changelog(stack, rid)]
    assert address_ids <= {c["changed_object_id"] for c in ipam_changes
                           if c["changed_object_type"] == "ipam.ipaddress"}
