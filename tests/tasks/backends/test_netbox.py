"""NetBox IPAM and inventory drivers against a real NetBox, checked with pynetbox.

The IPAM driver runs the shared contract (ipam_contract.IpamContract), the same
class the Infoblox driver's tests run.
"""

from typing import List

import pynetbox
import pytest

from novahooks.event import Address
from tests.servers.base import free_port
from tests.servers.stack import Stack
from novahooks.settings import Settings, load_settings
from tasks.backends.inventory.netbox import NetBoxInventory
from tasks.backends.ipam.netbox import NetBoxIpam
from tasks.backends.netbox.client import UUID_FIELD
from tasks.errors import BackendUnavailable, Conflict
from tests.conftest import mac, make_event, unique_v4, unique_v6
from tests.tasks.backends.ipam_contract import IpamContract, IpamReader


@pytest.fixture(scope="module")
def api(stack: Stack) -> pynetbox.api:
    return pynetbox.api(stack.netbox.url, token=stack.netbox.token)


@pytest.fixture
def ipam(settings: Settings) -> NetBoxIpam:
    return NetBoxIpam(settings.ipam)


@pytest.fixture
def inventory(settings: Settings) -> NetBoxInventory:
    return NetBoxInventory(settings.inventory)


class NetBoxReader(IpamReader):
    def __init__(self, api: pynetbox.api) -> None:
        self.api = api

    def held(self, instance_uuid: str) -> List[str]:
        return sorted(str(ip.address).split("/")[0] for ip in
                      self.api.ipam.ip_addresses.filter(**{"cf_" + UUID_FIELD: instance_uuid}))

    def name_of(self, address: str) -> str:
        return str(self.api.ipam.ip_addresses.get(address=address).dns_name)


class TestNetBoxIpam(IpamContract):
    @pytest.fixture
    def ipam_reader(self, api: pynetbox.api) -> NetBoxReader:
        return NetBoxReader(api)

    @pytest.fixture
    def ipam_bad_credentials(self, stack: Stack) -> NetBoxIpam:
        settings = load_settings(str(stack.config_path), {"NOVAHOOKS_IPAM_TOKEN": "0" * 40})
        return NetBoxIpam(settings.ipam)

    @pytest.fixture
    def ipam_unreachable(self, stack: Stack) -> NetBoxIpam:
        settings = load_settings(str(stack.config_path), {
            "NOVAHOOKS_IPAM_URL": "http://127.0.0.1:%d" % free_port(),
            "NOVAHOOKS_IPAM_TIMEOUT": "2"})
        return NetBoxIpam(settings.ipam)

    def test_addresses_carry_the_prefix_length_and_are_active(
            self, api: pynetbox.api, ipam: NetBoxIpam) -> None:
        v4, v6 = unique_v4(), unique_v6()
        ev = make_event(addresses=[Address(v4, 4, mac()), Address(v6, 6, mac())])
        ipam.ensure(ev.uuid, "nb-a.cloud.example.test", ev.addresses)
        assert sorted(str(ip.address) for ip in api.ipam.ip_addresses.filter(
            **{"cf_" + UUID_FIELD: ev.uuid})) == sorted([v4 + "/16", v6 + "/64"])
        assert api.ipam.ip_addresses.get(address=v4).status.value == "active"
        ipam.release(ev.uuid)


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


def test_unreachable_netbox_is_transient(stack: Stack) -> None:
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
