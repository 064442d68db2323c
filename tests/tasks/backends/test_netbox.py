"""NetBox IPAM and inventory drivers against a real NetBox, checked with pynetbox."""

import pynetbox
import pytest

from novahooks.nova.event import Address
from novahooks.servers.stack import Stack
from novahooks.settings import Settings, load_settings
from tasks.backends.inventory.netbox import NetBoxInventory
from tasks.backends.ipam.netbox import NetBoxIpam
from tasks.backends.netbox.client import UUID_FIELD
from tasks.errors import AuthFailed, BackendUnavailable, Conflict, OutOfScope
from tests.conftest import mac, make_event, unique_v4, unique_v6


@pytest.fixture(scope="module")
def api(stack: Stack) -> pynetbox.api:
    return pynetbox.api(stack.netbox.url, token=stack.netbox.token)


@pytest.fixture
def ipam(settings: Settings) -> NetBoxIpam:
    return NetBoxIpam(settings.ipam)


@pytest.fixture
def inventory(settings: Settings) -> NetBoxInventory:
    return NetBoxInventory(settings.inventory)


def owned(api: pynetbox.api, instance_uuid: str) -> list:
    return sorted(str(ip.address) for ip in
                  api.ipam.ip_addresses.filter(**{"cf_" + UUID_FIELD: instance_uuid}))


def test_ensure_records_each_address_with_prefix_length_and_dns_name(
        api: pynetbox.api, ipam: NetBoxIpam) -> None:
    v4, v6 = unique_v4(), unique_v6()
    ev = make_event(addresses=[Address(v4, 4, mac()), Address(v6, 6, mac())])
    ipam.ensure(ev.uuid, "nb-a.cloud.example.test", ev.addresses)
    ipam.ensure(ev.uuid, "nb-a.cloud.example.test", ev.addresses)
    assert owned(api, ev.uuid) == sorted([v4 + "/16", v6 + "/64"])
    record = api.ipam.ip_addresses.get(address=v4)
    assert record.dns_name == "nb-a.cloud.example.test" and record.status.value == "active"


def test_ensure_releases_addresses_the_instance_no_longer_has(
        api: pynetbox.api, ipam: NetBoxIpam) -> None:
    first, second = unique_v4(), unique_v4()
    ev = make_event(addresses=[Address(first, 4), Address(second, 4)])
    ipam.ensure(ev.uuid, "nb-b.cloud.example.test", ev.addresses)
    result = ipam.ensure(ev.uuid, "nb-b.cloud.example.test", [Address(second, 4)])
    assert result["released"] == [first]
    assert owned(api, ev.uuid) == [second + "/16"]
    assert ipam.release(ev.uuid)["released"] == [second]
    assert owned(api, ev.uuid) == []
    assert ipam.release(ev.uuid)["released"] == []


def test_address_outside_every_prefix_writes_nothing(api: pynetbox.api, ipam: NetBoxIpam) -> None:
    ev = make_event(addresses=[Address(unique_v4(), 4), Address("172.30.1.1", 4)])
    with pytest.raises(OutOfScope, match="172.30.1.1"):
        ipam.ensure(ev.uuid, "nb-c.cloud.example.test", ev.addresses)
    assert owned(api, ev.uuid) == []


def test_address_held_by_another_instance_is_conflict(api: pynetbox.api,
                                                      ipam: NetBoxIpam) -> None:
    shared = unique_v4()
    first, second = make_event(), make_event()
    ipam.ensure(first.uuid, "nb-d.cloud.example.test", [Address(shared, 4)])
    with pytest.raises(Conflict, match=first.uuid):
        ipam.ensure(second.uuid, "nb-e.cloud.example.test", [Address(unique_v4(), 4),
                                                             Address(shared, 4)])
    assert owned(api, second.uuid) == []


def test_inventory_planned_then_active_with_interfaces_and_primary_ips(
        api: pynetbox.api, ipam: NetBoxIpam, inventory: NetBoxInventory) -> None:
    m = mac()
    created = make_event("create", addresses=None, vm_state="building")
    inventory.register(created)
    vm = api.virtualization.virtual_machines.get(**{"cf_" + UUID_FIELD: created.uuid})
    assert vm.status.value == "planned" and vm.vcpus == 1 and vm.memory == 2048
    v4, v6 = unique_v4(), unique_v6()
    built = created._replace(kind="build", vm_state="active",
                             addresses=[Address(v4, 4, m, "private"), Address(v6, 6, m, "private")])
    ipam.ensure(built.uuid, built.hostname + ".cloud.example.test", built.addresses)
    inventory.register(built)
    inventory.register(built)
    inventory.register(created)
    vm = api.virtualization.virtual_machines.get(**{"cf_" + UUID_FIELD: created.uuid})
    assert vm.status.value == "active", "a late pre-boot event must not downgrade the VM"
    (iface,) = api.virtualization.interfaces.filter(virtual_machine_id=vm.id)
    assert iface.name == "private"
    assert str(iface.primary_mac_address.mac_address).lower() == m
    assert str(vm.primary_ip4.address) == v4 + "/16"
    assert str(vm.primary_ip6.address) == v6 + "/64"
    assert vm.custom_fields["nova_project_id"] == created.project_id
    inventory.deregister(built)
    assert api.virtualization.virtual_machines.get(**{"cf_" + UUID_FIELD: created.uuid}) is None
    assert inventory.deregister(built) == {"vm": None}
    ipam.release(built.uuid)


def test_same_name_in_cluster_for_other_instance_is_conflict(
        api: pynetbox.api, inventory: NetBoxInventory) -> None:
    first = make_event(addresses=[])
    inventory.register(first)
    with pytest.raises(Conflict, match=first.hostname):
        inventory.register(make_event(hostname=first.hostname, addresses=[]))
    inventory.deregister(first)


def test_wrong_token_is_auth_failure(stack: Stack) -> None:
    settings = load_settings(str(stack.config_path), {"NOVAHOOKS_IPAM_TOKEN": "0" * 40})
    with pytest.raises(AuthFailed, match="token"):
        NetBoxIpam(settings.ipam).ensure(make_event().uuid, "x.cloud.example.test",
                                         [Address(unique_v4(), 4)])


def test_unreachable_netbox_is_transient(stack: Stack) -> None:
    from novahooks.servers.base import free_port
    settings = load_settings(str(stack.config_path), {
        "NOVAHOOKS_INVENTORY_URL": "http://127.0.0.1:%d" % free_port(),
        "NOVAHOOKS_INVENTORY_TOKEN": stack.netbox.token, "NOVAHOOKS_INVENTORY_TIMEOUT": "2"})
    with pytest.raises(BackendUnavailable):
        NetBoxInventory(settings.inventory).register(make_event(addresses=[]))


def test_decommission_policy_keeps_the_vm_and_frees_its_addresses(
        stack: Stack, api: pynetbox.api, ipam: NetBoxIpam) -> None:
    settings = load_settings(str(stack.config_path),
                             {"NOVAHOOKS_INVENTORY_ON_DELETE": "decommission"})
    inventory = NetBoxInventory(settings.inventory)
    ev = make_event(addresses=[Address(unique_v4(), 4, mac(), "private")])
    ipam.ensure(ev.uuid, ev.hostname + ".cloud.example.test", ev.addresses)
    inventory.register(ev)
    assert inventory.deregister(ev)["action"] == "decommissioned"
    vm = api.virtualization.virtual_machines.get(**{"cf_" + UUID_FIELD: ev.uuid})
    assert vm.status.value == "decommissioning" and vm.primary_ip4 is None
    assert ipam.release(ev.uuid)["released"] == [ev.addresses[0].address]
    vm.delete()
