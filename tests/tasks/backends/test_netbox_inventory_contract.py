"""The NetBox inventory driver runs the inventory contract against a real NetBox.

Read back with pynetbox as NetBox's admin. What is NetBox's own (interfaces,
MACs, primary addresses, one name per cluster) is in test_netbox.py.
"""

from typing import Any, Dict, List

import pynetbox
import pytest

from tasks.backends.inventory.netbox import NetBoxInventory
from tasks.backends.netbox.client import UUID_FIELD
from tests.servers.base import free_port
from tests.tasks.backends.driver_fixtures import driver_fixtures, env, from_stack
from tests.tasks.backends.inventory_contract import InventoryContract, InventoryReader


class NetBoxInventoryReader(InventoryReader):
    def __init__(self, api: pynetbox.api) -> None:
        self.api = api

    def _vms(self, instance_uuid: str) -> List[Any]:
        return [vm for vm in self.api.virtualization.virtual_machines.filter(
            **{"cf_" + UUID_FIELD: instance_uuid})
            if (vm.custom_fields or {}).get(UUID_FIELD) == instance_uuid]

    def held(self, instance_uuid: str) -> List[Dict[str, Any]]:
        return [{"name": vm.name, "status": vm.status.value} for vm in self._vms(instance_uuid)]

    def forget(self, instance_uuid: str) -> None:
        for vm in self._vms(instance_uuid):
            vm.delete()


def admin_reader(request: Any) -> NetBoxInventoryReader:
    stack = request.getfixturevalue("stack")
    return NetBoxInventoryReader(pynetbox.api(stack.netbox.url, token=stack.netbox.token))


BUILD = from_stack("inventory", NetBoxInventory)


class TestNetBoxInventory(driver_fixtures(
        "inventory", BUILD, lambda request: env("inventory", token="0" * 40),
        lambda request: env("inventory", url="http://127.0.0.1:%d" % free_port(), timeout="2"),
        reader=admin_reader), InventoryContract):
    @pytest.fixture
    def inventory_decommissioning(self, request: Any) -> NetBoxInventory:
        return BUILD(request, **env("inventory", on_delete="decommission"))
